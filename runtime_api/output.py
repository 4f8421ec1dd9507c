"""A sandbox's output as its environment sees it: its runtime's merged stdout and stderr (a second
instance reads its external extensions' output, when it has some).

Output goes, line by line, to the invocation that is running (its log tail, for LogType=Tail) and to
the log sink (the service log, or stderr for a one-shot invoke), each phase (init, each invocation)
within a byte budget. Past the budget it is only counted and kept in the tail, unsplit, so a flood
costs neither memory nor log volume; the drop is reported when the phase ends. While an extension
subscribes to the Telemetry API, each logged line also goes to it (`telemetry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from .functions import FunctionSpec
from .invocation import Invocation, LogTail
from .logs import get_logger

log = get_logger("environment")

LogSink = Callable[[FunctionSpec, "str | None", str], None]

_MAX_LINE = 256 * 1024
_READ = 65536


class FunctionOutput:
    def __init__(
        self, function: FunctionSpec, sink: LogSink | None, limit: int, running: Callable[[], Invocation | None]
    ) -> None:
        self.function = function
        self.init_log = LogTail()  # what the runtime wrote outside any invocation (its init, mostly)
        self._sink = sink
        self._limit = limit
        self._running = running  # the invocation output belongs to now, if any
        # The request id output outside any invocation is logged under: the cold start's, while the init
        # it waits for runs (cleared when the phase ends, at that invocation's START).
        self.init_request_id: str | None = None
        self._budget = limit
        self._dropped = 0
        self._partial = b""
        self._sink_failed = False
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Each logged line also goes here while set (the Telemetry API's function or extension events).
        self.telemetry: Callable[[str], None] | None = None

    def attach(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd, self._loop = fd, loop
        loop.add_reader(fd, self._on_readable)

    def detach(self) -> None:
        """The sandbox is gone: take what is left in the pipe, stop watching it and close it (it is ours
        once the sandbox has started)."""
        self.drain()
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def drain(self) -> None:
        """Take everything already written (a runtime writes its output before it answers)."""
        while self._fd is not None:
            try:
                data = os.read(self._fd, _READ)
            except OSError:  # BlockingIOError: nothing more for now
                return
            if not data:
                return
            self._take(data)

    def platform_line(self, invocation: Invocation, line: str) -> None:
        """A line of ours (START, END, REPORT, notes) in an invocation's log."""
        if invocation.log is not None:
            invocation.log.append(line.encode() + b"\n")
        self.log(invocation.request_id, line)

    def end_phase(self, invocation: Invocation | None) -> None:
        """Say how much output went unlogged in the phase that ends, and give the next a fresh budget."""
        if self._dropped:
            note = (
                f"sandbox-runtime: {self._dropped} bytes of function output were not logged "
                f"(over the {self._limit}-byte limit); the log tail is kept"
            )
            request_id = invocation.request_id if invocation is not None else self.init_request_id
            if invocation is not None:
                self.platform_line(invocation, note)
            else:
                self.log(request_id, note)
            log.warning(
                "environment.output_dropped", function=self.function.name, bytes=self._dropped, request_id=request_id
            )
        self._dropped, self._budget, self._partial = 0, self._limit, b""
        self.init_request_id = None

    def log(self, request_id: str | None, line: str) -> None:
        """Hand a line to the sink; a failing sink (a closed stderr) never stops an invocation."""
        if self._sink is None:
            return  # nobody would see it (the service log's level)
        try:
            self._sink(self.function, request_id, line)
        except Exception:
            if not self._sink_failed:
                self._sink_failed = True
                log.error(
                    "environment.log_sink_failed", function=self.function.name, request_id=request_id, exc_info=True
                )

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._take(data)
            return
        if self._loop is not None:  # end of output: the runtime and everything it started are gone
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
        if self._partial:
            self._emit(self._running(), self._partial)
            self._partial = b""

    def _take(self, data: bytes) -> None:
        invocation = self._running()
        if self._budget <= 0:
            if (tail := self._tail(invocation)) is not None:
                tail.append(data)
            self._dropped += len(data)
            return
        self._budget -= len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._emit(invocation, line)
        while len(self._partial) > _MAX_LINE:
            self._emit(invocation, self._partial[:_MAX_LINE])
            self._partial = self._partial[_MAX_LINE:]

    def _tail(self, invocation: Invocation | None) -> LogTail | None:
        """Where output goes for a log tail: the invocation's (if it wants one), else the init's."""
        return invocation.log if invocation is not None else self.init_log

    def _emit(self, invocation: Invocation | None, line: bytes) -> None:
        if (tail := self._tail(invocation)) is not None:
            tail.append(line + b"\n")
        text = line.decode(errors="replace")
        self.log(invocation.request_id if invocation else self.init_request_id, text)
        if self.telemetry is not None:
            self.telemetry(text)
