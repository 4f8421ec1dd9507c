"""One invocation: what the caller asked for, what happened, and the errors the platform reports."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from random import getrandbits

from .functions import FunctionSpec

MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100  # 6291556, what the Runtime API accepts on /response
MAX_STREAMED_RESPONSE_BYTES = 200 * 1024 * 1024  # 209715200, a response to InvokeWithResponseStream (since 2025-07)
MAX_REQUEST_BYTES = 6 * 1024 * 1024  # 6291456, a synchronous Invoke's payload
MAX_EVENT_REQUEST_BYTES = 1024 * 1024  # an Event invocation's payload
TAIL_BYTES = 4096

_ERROR_TYPE = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")


def sanitize_error_type(value: str | None) -> str:
    """The error type Lambda records for a runtime-reported error (RIE's fatalerror rules)."""
    if value and _ERROR_TYPE.search(value):
        return value
    if value and value.startswith("Function."):
        return "Function.Unknown"
    return "Runtime.Unknown"


def new_trace_id() -> str:
    # Unique, not secret: the process's PRNG, no system call on the invoke path.
    return f"Root=1-{int(time.time()):08x}-{getrandbits(96):024x};Parent={getrandbits(64):016x};Sampled=0"


def new_request_id() -> str:
    """A random (version 4) UUID, as `str(uuid.uuid4())`, from the process's PRNG: request ids must be
    unique, not secret, and `uuid4` costs a `getrandom` system call on every invoke."""
    n = getrandbits(128) & _UUID_CLEAR | _UUID_V4
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)


class LogTail:
    """The last TAIL_BYTES of an invocation's log (platform lines and function output)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def append(self, line: bytes) -> None:
        self._buf += line
        if len(self._buf) > 4 * TAIL_BYTES:
            del self._buf[: len(self._buf) - TAIL_BYTES]

    def tail(self) -> bytes:
        return bytes(self._buf[-TAIL_BYTES:])


class ResponseStream:
    """A streamed response on its way from the runtime's /response body to an InvokeWithResponseStream caller.

    The Runtime API writes pieces as they arrive; the Invoke API reads them, coalesced into pieces of at most
    MAX_PIECE bytes. Once HIGH_WATER bytes wait for a slow reader, `write` answers False and the writer stops
    reading from the runtime until `when_drained` calls back, so a slow caller slows the runtime down instead
    of filling memory. A reader that goes away (the caller disconnected) is `detach`ed: the function carries on,
    as on Lambda, and what it still streams is dropped.
    """

    HIGH_WATER = 1024 * 1024
    LOW_WATER = 256 * 1024
    MAX_PIECE = 64 * 1024

    def __init__(self) -> None:
        self._pieces: deque[bytes] = deque()
        self._waiting = 0  # bytes written, not yet read
        self._closed = False
        self._detached = False
        self._reader: asyncio.Future[None] | None = None
        self._drained: Callable[[], None] | None = None

    def write(self, data: bytes) -> bool:
        """Queue a piece for the reader; False: stop writing until `when_drained` calls back."""
        if self._closed or self._detached or not data:
            return True
        self._pieces.append(data)
        self._waiting += len(data)
        self._wake_reader()
        return self._waiting < self.HIGH_WATER

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the reader has caught up (at once if it has, or if nobody reads any more)."""
        if self._closed or self._detached or self._waiting <= self.LOW_WATER:
            callback()
        else:
            self._drained = callback

    def close(self) -> None:
        """Nothing more will be written: the reader gets what is queued, then the end."""
        self._closed = True
        self._wake_reader()
        self._wake_writer()

    def detach(self) -> None:
        """The reader is gone: drop what waits and everything written from now on."""
        self._detached = True
        self._pieces.clear()
        self._waiting = 0
        self._wake_reader()
        self._wake_writer()

    async def read(self) -> bytes | None:
        """The next piece, or None once the stream is closed and everything was read."""
        while not self._pieces:
            if self._closed or self._detached:
                return None
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        parts: list[bytes] = []
        size = 0
        while self._pieces and size < self.MAX_PIECE:
            piece = self._pieces.popleft()
            if size + len(piece) > self.MAX_PIECE:
                piece, rest = piece[: self.MAX_PIECE - size], piece[self.MAX_PIECE - size :]
                self._pieces.appendleft(rest)
            parts.append(piece)
            size += len(piece)
        self._waiting -= size
        if self._waiting <= self.LOW_WATER:
            self._wake_writer()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _wake_writer(self) -> None:
        callback, self._drained = self._drained, None
        if callback is not None:
            callback()


@dataclass(frozen=True)
class InvocationResult:
    payload: bytes
    function_error: str | None = None  # "Unhandled" when the function failed
    error_type: str | None = None  # sanitised, for logs and metrics
    log_tail: bytes = b""
    duration_ms: float = 0.0
    init_duration_ms: float | None = None


@dataclass(eq=False, slots=True)
class Invocation:
    function: FunctionSpec
    payload: bytes
    version: str = "$LATEST"
    invoked_arn: str = ""
    request_id: str = field(default_factory=new_request_id)
    trace_id: str = field(default_factory=new_trace_id)
    client_context: str | None = None  # JSON text, as the runtime receives it
    cognito_identity: str | None = None
    tenant_id: str | None = None
    deadline_ms: int = 0  # epoch ms, set when the runtime fetches it
    suppressed_init: bool = False  # a second init attempt inside this invocation (after an init timeout)
    log: LogTail | None = None  # the log's tail, kept only for LogType=Tail (`wants_log_tail`)
    future: asyncio.Future[InvocationResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # InvokeWithResponseStream: the response goes to the caller as it arrives, within its own limit
    stream: ResponseStream | None = None
    # InvokeWithResponseStream's: set when the runtime has fetched it (START). None otherwise: nobody waits.
    started: asyncio.Event | None = None
    wants_log_tail: bool = False  # LogType=Tail: the answer carries the log's END and REPORT lines
    # Called in `resolve`, right after the result is set, before anything the result sets off (the
    # future's callbacks run a loop turn later): the service's HTTP protocol writes the answer from it.
    on_result: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if not self.invoked_arn:
            self.invoked_arn = self.function.arn
        if self.wants_log_tail:
            self.log = LogTail()
        if self.stream is not None:
            stream = self.stream
            self.future.add_done_callback(lambda _: stream.close())  # however it ends, the reader ends too
            self.started = asyncio.Event()

    @property
    def response_limit(self) -> int:
        return MAX_STREAMED_RESPONSE_BYTES if self.stream is not None else MAX_RESPONSE_BYTES

    @property
    def done(self) -> bool:
        return self.future.done()

    def resolve(self, result: InvocationResult) -> None:
        if not self.future.done():
            self.future.set_result(result)
            callback, self.on_result = self.on_result, None  # (it holds this invocation: no cycle left)
            if callback is not None:
                callback()


def platform_error(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def timeout_error(request_id: str, timeout: float) -> bytes:
    return platform_error(
        "Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
    )


def exit_error(request_id: str, status: int) -> bytes:
    reason = f"signal: {_signal_name(status - 128)}" if status > 128 else f"exit status {status}"
    if status == 0:
        return platform_error(
            "Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited without providing a reason"
        )
    return platform_error("Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited with error: {reason}")


def out_of_memory_error(request_id: str) -> bytes:
    return platform_error(
        "Runtime.OutOfMemory", f"RequestId: {request_id} Error: Runtime exited with error: signal: killed"
    )


def response_too_large_error(size: int | None, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """RIE's wording with the size when it is known (a Content-Length); AWS's, without it, for a chunked body
    cut off at the limit."""
    measured = f" ({size} bytes)" if size is not None else ""
    return platform_error(
        "Function.ResponseSizeTooLarge",
        f"Response payload size{measured} exceeded maximum allowed payload size ({limit} bytes).",
    )


def truncated_response_error(request_id: str) -> bytes:
    return platform_error(
        "Runtime.TruncatedResponse",
        f"RequestId: {request_id} Error: the runtime's connection closed before its response ended",
    )


def _signal_name(number: int) -> str:
    names = {
        9: "killed",
        6: "aborted",
        11: "segmentation fault",
        15: "terminated",
        2: "interrupt",
        7: "bus error",
    }
    return names.get(number, f"signal {number}")


def report_line(
    request_id: str,
    duration_ms: float,
    memory_size: int,
    max_memory_mb: int | None,
    init_duration_ms: float | None,
) -> str:
    billed = math.ceil(duration_ms + (init_duration_ms or 0.0))
    line = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {billed} ms\t"
        f"Memory Size: {memory_size} MB\tMax Memory Used: {max_memory_mb if max_memory_mb is not None else 0} MB\t"
    )
    if init_duration_ms is not None:
        line += f"Init Duration: {init_duration_ms:.2f} ms\t"
    return line
