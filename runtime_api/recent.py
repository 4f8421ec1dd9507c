"""What happened lately, for the status page (`status_page`): the last invocations and the last log lines,
each in a ring of fixed size, in memory only.

Both rings are filled on the invoke path, so an entry is a plain tuple of values that already exist
(`time.time()` is the only thing computed); everything a reader sees (ISO times, outcomes, the function's
own error type) is made from them when the page asks. A log line is kept up to LINE_CHARS characters,
an error payload up to ERROR_BYTES: memory stays bounded whatever the functions write.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from time import time, time_ns
from typing import Any

from .errors import TooManyRequestsException
from .functions import FunctionSpec
from .invocation import Invocation, InvocationResult
from .output import LogSink
from .telemetry import timestamp

LINE_CHARS = 2048  # a log line's characters kept (a line may be 256 KB: `output._MAX_LINE`)
ERROR_BYTES = 4096  # an error payload kept to tell the function's own error type and message
MESSAGE_CHARS = 500  # an error message's characters shown

# An invocation: (ended, request id, function, version, duration ms, init ms, error type, detail, refused)
# where detail is an error payload (bytes) or a refusal's message (str), and refused is the outcome of an
# invocation that never ran (throttled, service_error), "" for one that ran.
# A line: (cursor, time, function, request id, text, the line's whole length).
_Invocation = tuple[
    float, str, FunctionSpec, str, "float | None", "float | None", "str | None", "bytes | str | None", str
]
_Line = tuple[int, float, FunctionSpec, "str | None", str, int]


class Recent:
    def __init__(self, invocations: int, lines: int) -> None:
        self._invocations: deque[_Invocation] = deque(maxlen=invocations)
        self._lines: deque[_Line] = deque(maxlen=lines)
        # Cursors start past every cursor an earlier run of the service gave out (microseconds since the
        # epoch at the start), so a page that kept one across a restart is told apart from a reader that
        # is behind.
        self._first_cursor = time_ns() // 1000 + 1
        self._cursor = itertools.count(self._first_cursor)
        self.recorded = 0  # invocations recorded since the start (the ring holds the last ones)

    @property
    def invocation_capacity(self) -> int:
        return self._invocations.maxlen or 0

    @property
    def line_capacity(self) -> int:
        return self._lines.maxlen or 0

    # -- filling (the invoke path) --------------------------------------------------------------

    def invoked(self, invocation: Invocation, result: InvocationResult) -> None:
        """An invocation ran and has its result (a success, the function's error, a platform error)."""
        error = result.error_type
        payload = result.payload if error and len(result.payload) <= ERROR_BYTES else None
        self._invocations.append(
            (time(), invocation.request_id, invocation.function, invocation.version, result.duration_ms,
             result.init_duration_ms, error, payload, "")
        )  # fmt: skip
        self.recorded += 1

    def refused(self, invocation: Invocation, error: BaseException, outcome: str) -> None:
        """An invocation that never ran: `outcome` throttled (a 429), or service_error."""
        reason = error.members.get("Reason") if isinstance(error, TooManyRequestsException) else None
        self._invocations.append(
            (time(), invocation.request_id, invocation.function, invocation.version, None, None,
             type(error).__name__, str(reason or error), outcome)
        )  # fmt: skip
        self.recorded += 1

    def sink(self, then: LogSink | None) -> LogSink | None:
        """A log sink that keeps each line here, then hands it to `then` (when there is one); just `then`
        when no line is kept (SANDBOX_STATUS_LOG_LINES=0)."""
        if not self.line_capacity:
            return then
        append = self._lines.append
        cursor = self._cursor

        def keep(function: FunctionSpec, request_id: str | None, line: str) -> None:
            append((next(cursor), time(), function, request_id, line[:LINE_CHARS], len(line)))
            if then is not None:
                then(function, request_id, line)

        return keep

    # -- reading (the status page) --------------------------------------------------------------

    def invocations(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` invocations, newest first."""
        newest = list(itertools.islice(reversed(self._invocations), limit))
        return [_invocation(entry) for entry in newest]

    def lines(self, after: int | None, limit: int) -> dict[str, Any]:
        """Log lines, oldest first: those after the cursor `after` (all kept, without one), at most the
        newest `limit` of them. `skipped`: lines after `after` left out (gone from the ring, or over the
        limit); `next`: the cursor to ask after next time. A cursor of another run of the service (one
        that restarted since) counts as none."""
        kept = list(self._lines)
        last = kept[-1][0] if kept else self._first_cursor - 1
        if after is None or after > last or after < self._first_cursor - 1:
            after = None
            newer = kept
        else:
            first = kept[0][0] if kept else last + 1
            newer = kept[max(0, after + 1 - first) :]
        chosen = newer[-limit:] if len(newer) > limit else newer
        if chosen:
            skipped = 0 if after is None else chosen[0][0] - after - 1
            following = chosen[-1][0]
        else:
            skipped, following = 0, last if after is None else after
        return {"lines": [_line(entry) for entry in chosen], "next": following, "skipped": skipped}


def _invocation(entry: _Invocation) -> dict[str, Any]:
    ended, request_id, function, version, duration_ms, init_ms, error_type, detail, refused = entry
    started = ended - (duration_ms or 0.0) / 1000  # one that never ran: when it was refused
    message = None
    if refused:
        outcome, message = refused, detail if isinstance(detail, str) else None
    elif not error_type:
        outcome = "success"
    elif error_type == "Sandbox.Timedout":
        outcome = "timeout"
    else:
        outcome = "error"
    if isinstance(detail, bytes):
        error_type, message = _function_error(detail, error_type)
    return {
        "request_id": request_id,
        "function": function.name,
        "version": version,
        "start_time": timestamp(started),
        "duration_ms": None if duration_ms is None else round(duration_ms, 3),
        "init_duration_ms": None if init_ms is None else round(init_ms, 3),
        "outcome": outcome,
        "error_type": error_type,
        "error_message": None if message is None else message[:MESSAGE_CHARS],
    }


def _function_error(payload: bytes, error_type: str | None) -> tuple[str | None, str | None]:
    """The error type and message a failed invocation's payload gives ({"errorType", "errorMessage"}),
    else Lambda's own error type and no message."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return error_type, None
    if not isinstance(document, dict):
        return error_type, None
    found, message = document.get("errorType"), document.get("errorMessage")
    return (
        found if isinstance(found, str) and found else error_type,
        message if isinstance(message, str) else None,
    )


def _line(entry: _Line) -> dict[str, Any]:
    cursor, at, function, request_id, text, length = entry
    return {
        "cursor": cursor,
        "time": timestamp(at),
        "function": function.name,
        "request_id": request_id,
        "text": text,
        "truncated": length - len(text),
    }
