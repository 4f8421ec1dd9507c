"""One invocation: what the caller asked for, what happened, and the errors the platform reports."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
import uuid
from dataclasses import dataclass, field

from .functions import FunctionSpec

MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100  # 6291556, what the Runtime API accepts on /response
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
    return f"Root=1-{int(time.time()):08x}-{random.getrandbits(96):024x};Parent={random.getrandbits(64):016x};Sampled=0"


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


@dataclass(frozen=True)
class InvocationResult:
    payload: bytes
    function_error: str | None = None  # "Unhandled" when the function failed
    error_type: str | None = None  # sanitised, for logs and metrics
    log_tail: bytes = b""
    duration_ms: float = 0.0
    init_duration_ms: float | None = None


@dataclass(eq=False)
class Invocation:
    function: FunctionSpec
    payload: bytes
    version: str = "$LATEST"
    invoked_arn: str = ""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    trace_id: str = field(default_factory=new_trace_id)
    client_context: str | None = None  # JSON text, as the runtime receives it
    cognito_identity: str | None = None
    tenant_id: str | None = None
    deadline_ms: int = 0  # epoch ms, set when the runtime fetches it
    suppressed_init: bool = False  # a second init attempt inside this invocation (after an init timeout)
    log: LogTail = field(default_factory=LogTail)
    future: asyncio.Future[InvocationResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def __post_init__(self) -> None:
        if not self.invoked_arn:
            self.invoked_arn = self.function.arn

    @property
    def done(self) -> bool:
        return self.future.done()

    def resolve(self, result: InvocationResult) -> None:
        if not self.future.done():
            self.future.set_result(result)


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


def response_too_large_error(size: int) -> bytes:
    return platform_error(
        "Function.ResponseSizeTooLarge",
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
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
