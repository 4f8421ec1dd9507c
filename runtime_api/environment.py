"""One execution environment: a sandbox running one bootstrap for one function version.

    STARTING ──first /next──► READY ──assign──► BUSY ──/next after the answer──► READY
        │                                        │
        └── /init/error, crash, init timeout     └── timeout, crash ──► STOPPED
                      ──► FAILED

Every transition is a method here; the Runtime API routes only translate HTTP into these calls.
An invocation is *pending* once assigned and *current* once the runtime has fetched it from /next.
A /response is taken as it arrives (`open_response` when its headers are in, then a `ResponseSink`
for its body), so a streamed response reaches an InvokeWithResponseStream caller while the runtime
is still writing it; the invocation is *answered* when that body ends (or an /error arrives).
The pool is told an environment is available when its first init completes and as soon as it has
answered an invocation (its runtime is about to poll /next again), so it may be assigned the next
invocation while still BUSY with nothing left to do; the runtime then gets it on its next /next.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from sandbox import Backend, Sandbox, SandboxSpec

from .functions import FunctionSpec
from .invocation import (
    Invocation,
    InvocationResult,
    exit_error,
    out_of_memory_error,
    platform_error,
    report_line,
    response_too_large_error,
    sanitize_error_type,
    timeout_error,
    truncated_response_error,
)
from .logs import get_logger
from .output import FunctionOutput, LogSink

log = get_logger("environment")

ERROR_CAUSE_CONTENT_TYPE = "application/vnd.aws.lambda.error.cause+json"
ERROR_TYPE_TRAILER = "lambda-runtime-function-error-type"
ERROR_BODY_TRAILER = "lambda-runtime-function-error-body"
_EXIT_GRACE = 0.5  # after a response's connection drops mid-body: time for a dying runtime's exit to say why


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    STOPPED = "stopped"
    FAILED = "failed"


class RuntimeAPIError(Exception):
    """An answer of the Runtime API other than success (rendered by `runtime`)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def _invalid_request_id() -> RuntimeAPIError:
    return RuntimeAPIError(400, "InvalidRequestID", "Invalid request ID")


def _invalid_transition(current: str, wanted: str) -> RuntimeAPIError:
    return RuntimeAPIError(
        403,
        "InvalidStateTransition",
        f"State transition from {current} to {wanted} failed for runtime. Error: State transition is not allowed",
    )


class PoolHooks(Protocol):
    def on_ready(self, env: Environment) -> None: ...
    def on_stopped(self, env: Environment, undelivered: Invocation | None) -> None: ...


class Environment:
    def __init__(
        self,
        function: FunctionSpec,
        spec: SandboxSpec,
        *,
        backend: Backend,
        hooks: PoolHooks,
        serve_runtime_api: Callable[[Environment, Any], Any],
        serve_egress: Callable[[Any], Any] | None = None,
        log_sink: LogSink,
        init_limit: float,
        log_limit: int = 1024 * 1024,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.function = function
        self.state = State.STARTING
        self.invocations = 0
        self.idle_since = time.monotonic()
        self.init_duration_ms: float | None = None
        self.exit_status: int | None = None
        self._spec = spec
        self._backend = backend
        self._hooks = hooks
        self._serve = serve_runtime_api
        self._serve_egress = serve_egress
        self._egress_server: Any = None
        self._init_limit = init_limit
        self._loop = asyncio.get_running_loop()
        self._sandbox: Sandbox | None = None
        self._server: Any = None
        self._pending: Invocation | None = None
        self._current: Invocation | None = None
        self._answered = False  # the current invocation's outcome is settled (its answer ended, or it failed)
        self._responding: ResponseSink | None = None  # a /response body for it is arriving
        self._cold: Invocation | None = None  # the invocation that waited for this environment's init
        self._started_at = 0.0  # perf_counter of the current invocation's START
        self._wakeup = asyncio.Event()  # set when work is assigned or the environment ends
        self._timer: asyncio.TimerHandle | None = None
        self._init_timer: asyncio.TimerHandle | None = None
        self._init_error: tuple[str, bytes] | None = None
        self._init_timed_out = False
        self._output = FunctionOutput(function, log_sink, log_limit, self._running)
        self._stop_requested = False
        self._spawned_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._spawned_at = time.perf_counter()
        self._sandbox = await self._backend.start(self._spec)
        self._loop.create_task(self._watch_exit())  # from here on, cleanup belongs to _watch_exit
        if self._stop_requested:
            self._sandbox.kill()  # stopped while the sandbox was being made (e.g. at shutdown)
        self._output.attach(self._sandbox.output_fd, self._loop)
        limit = self._init_limit
        if self._cold is not None and self._cold.suppressed_init:
            limit = self.function.timeout  # the second init runs inside the invocation, under its timeout
        self._init_timer = self._loop.call_later(limit, self._on_init_timeout)
        try:
            self._server = await self._serve(self, self._sandbox.listener)
            if self._sandbox.proxy_listener is not None and self._serve_egress is not None:
                self._egress_server = await self._serve_egress(self._sandbox.proxy_listener)
        except OSError as exc:
            log.error("environment.runtime_api_failed", function=self.function.name, error=str(exc))
            self.stop()

    def stop(self) -> None:
        """Kill the sandbox; `_watch_exit` finishes the bookkeeping once it is gone."""
        self._stop_requested = True
        if self._sandbox is not None:
            self._sandbox.kill()

    @property
    def alive(self) -> bool:
        return self.state not in (State.STOPPED, State.FAILED)

    @property
    def has_work(self) -> bool:
        """An invocation is assigned or still running (an answered one no longer counts)."""
        return self._pending is not None or (self._current is not None and not self._answered)

    def assign(self, invocation: Invocation) -> None:
        if self.has_work or not self.alive:
            raise RuntimeError(f"environment {self.id} cannot take an invocation in state {self.state.value}")
        self._pending = invocation
        if self.state is State.STARTING:
            self._cold = invocation
        else:
            self.state = State.BUSY
        self._wakeup.set()

    # -- Runtime API ----------------------------------------------------------------------------

    async def next_invocation(self) -> Invocation:
        if self._init_error is not None or not self.alive:
            raise _invalid_transition("InitError" if self._init_error else "Stopped", "Ready")
        if self._responding is not None:
            if not self._responding.cut_off:
                raise _invalid_transition("InvocationResponse", "Ready")
            self._truncated(self._responding)  # its connection dropped mid-body and the runtime carries on
        if self._current is not None and not self._answered:
            return self._current  # /next again while running re-renders the same event, as RIE does
        if self._current is not None:
            self._current = None  # the pool was told at the answer; a new invocation may be waiting
            if self._pending is None:
                self.state = State.READY
        if self.init_duration_ms is None:
            self.init_duration_ms = (time.perf_counter() - self._spawned_at) * 1000
            if self._init_timer is not None:
                self._init_timer.cancel()
            if self._pending is None:
                self.state = State.READY
                self._available()
        while self._pending is None:
            self._wakeup.clear()
            await self._wakeup.wait()
            if not self.alive:
                raise _invalid_transition("Stopped", "Ready")
        invocation, self._pending = self._pending, None
        self._current, self._answered = invocation, False
        self.state = State.BUSY
        invocation.deadline_ms = int(time.time() * 1000) + self.function.timeout * 1000
        self._begin(invocation)
        self._timer = self._loop.call_later(self.function.timeout, self._on_timeout, invocation)
        return invocation

    def open_response(self, request_id: str, mode: str | None, declared_size: int | None = None) -> ResponseSink:
        """A /response began (its headers are in): where its body goes as it arrives. `mode` is its
        Lambda-Runtime-Function-Response-Mode; `declared_size` its Content-Length, if it has one."""
        invocation = self._answerable(request_id, "InvocationResponse")
        if mode is not None and mode != "streaming":
            self._settle(invocation, b"", "Runtime.InvalidResponseModeHeader")
            self._available()
            raise RuntimeAPIError(400, "InvalidFunctionResponseMode", "Invalid function response mode")
        sink = ResponseSink(self, invocation, streaming=mode == "streaming")
        self._responding = sink
        if declared_size is not None and declared_size > sink.limit:
            sink.overflow(declared_size)
        return sink

    def post_error(self, request_id: str, error_type: str | None, body: bytes, content_type: str | None) -> None:
        invocation = self._answerable(request_id, "InvocationErrorResponse")
        self._settle(invocation, _error_body(body, content_type), sanitize_error_type(error_type))
        self._available()

    def post_init_error(self, error_type: str | None, body: bytes, content_type: str | None) -> None:
        if self.init_duration_ms is not None or self._init_error is not None or not self.alive:
            raise _invalid_transition("Ready" if self.init_duration_ms is not None else "InitError", "InitError")
        self._init_error = (sanitize_error_type(error_type), _error_body(body, content_type))
        self.state = State.FAILED
        # The runtime should exit now; make sure it does, once this 202 is on its way.
        self._loop.call_soon(self.stop)

    def _answerable(self, request_id: str, wanted: str) -> Invocation:
        invocation = self._current
        if invocation is None or request_id != invocation.request_id:
            raise _invalid_request_id()
        if self._responding is not None:
            raise _invalid_transition("InvocationResponse", wanted)
        if self._answered:
            raise _invalid_transition("RuntimeResponseSentState", wanted)
        return invocation

    def _settle(self, invocation: Invocation, payload: bytes, error_type: str | None, *, note: str = "") -> None:
        """The current invocation's outcome is known; nothing its runtime sends for it from here on counts."""
        self._output.drain()  # what it wrote before answering is its output (read before it stops being current)
        self._answered = True
        self._responding = None
        self._finish(invocation, payload, error_type, note=note)

    def _response_cut_off(self, sink: ResponseSink) -> None:
        """A /response's connection closed before its body ended. If the runtime died, its exit says
        why (Runtime.ExitError) in a moment; otherwise (or if it calls /next first) the response was
        truncated."""
        self._loop.call_later(_EXIT_GRACE, self._truncated, sink)

    def _truncated(self, sink: ResponseSink) -> None:
        if self._responding is sink:
            self._settle(
                sink.invocation, truncated_response_error(sink.invocation.request_id), "Runtime.TruncatedResponse"
            )
            self._available()

    # -- invocations ----------------------------------------------------------------------------

    def _running(self) -> Invocation | None:
        """The invocation output belongs to now: the current one, until it has been answered."""
        return self._current if self._current is not None and not self._answered else None

    def _available(self) -> None:
        """Tell the pool this environment can take an invocation: right after it answered (its
        runtime is about to poll /next again) or when its first init completes."""
        self.idle_since = time.monotonic()
        self._hooks.on_ready(self)

    def _begin(self, invocation: Invocation) -> None:
        self._output.end_phase(None)  # what the init phase (or the time since the last answer) dropped
        self._started_at = time.perf_counter()
        invocation.started.set()
        if invocation is self._cold:
            for line in self._output.init_log.tail().splitlines(keepends=True):
                invocation.log.append(line)
        self._output.platform_line(
            invocation, f"START RequestId: {invocation.request_id} Version: {invocation.version}"
        )

    def _finish(self, invocation: Invocation, payload: bytes, error_type: str | None, *, note: str = "") -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._output.drain()
        self._output.end_phase(invocation)
        duration_ms = (time.perf_counter() - self._started_at) * 1000
        if note:
            self._output.platform_line(invocation, note)
        peak = self._sandbox.memory_peak_bytes() if self._sandbox is not None else None
        init_ms = self.init_duration_ms if invocation is self._cold else None
        self._output.platform_line(invocation, f"END RequestId: {invocation.request_id}")
        self._output.platform_line(
            invocation,
            report_line(
                invocation.request_id,
                duration_ms,
                self.function.memory_size,
                None if peak is None else -(-peak // (1024 * 1024)),
                init_ms,
            ),
        )
        self.invocations += 1
        if invocation.stream is not None:
            invocation.stream.close()
        invocation.resolve(
            InvocationResult(
                payload=payload,
                function_error="Unhandled" if error_type else None,
                error_type=error_type,
                log_tail=invocation.log.tail(),
                duration_ms=duration_ms,
                init_duration_ms=init_ms,
            )
        )

    def _on_timeout(self, invocation: Invocation) -> None:
        if invocation is not self._current or self._answered:
            return
        timeout = self.function.timeout
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        note = f"{now} {invocation.request_id} Task timed out after {timeout:.2f} seconds"
        self._settle(invocation, timeout_error(invocation.request_id, timeout), "Sandbox.Timedout", note=note)
        self.stop()

    def _on_init_timeout(self) -> None:
        if self.init_duration_ms is None and self.alive:
            self._init_timed_out = True
            self.stop()

    async def _watch_exit(self) -> None:
        assert self._sandbox is not None
        status = await self._sandbox.wait()
        self.exit_status = status
        self._output.detach()
        for timer in (self._timer, self._init_timer):
            if timer is not None:
                timer.cancel()
        for server in (self._server, self._egress_server):
            if server is not None:
                server.close()
        initialised = self.init_duration_ms is not None
        self.state = State.STOPPED if initialised and self._init_error is None else State.FAILED
        current, self._current = self._current, None
        if current is not None and not self._answered:
            self._settle(current, *self._exit_error(current, status))
        undelivered, self._pending = self._pending, None
        if undelivered is not None:
            undelivered = self._settle_undelivered(undelivered, status, initialised)
        self._wakeup.set()
        self._hooks.on_stopped(self, undelivered)

    def _exit_error(self, invocation: Invocation, status: int) -> tuple[bytes, str]:
        """What a runtime's death means to the invocation it was running: OOM, or just an exit."""
        if self._sandbox is not None and self._sandbox.oom_killed():
            return out_of_memory_error(invocation.request_id), "Runtime.OutOfMemory"
        return exit_error(invocation.request_id, status), "Runtime.ExitError"

    def _settle_undelivered(self, invocation: Invocation, status: int, initialised: bool) -> Invocation | None:
        """An assigned invocation the runtime never fetched: answer it here, or hand it back to retry."""
        if self._init_error is not None:
            error_type, body = self._init_error
            self._begin(invocation)
            self._finish(invocation, body, error_type)
        elif self._init_timed_out and invocation.suppressed_init:
            self._begin(invocation)
            self._finish(invocation, timeout_error(invocation.request_id, self.function.timeout), "Sandbox.Timedout")
        elif self._init_timed_out:
            invocation.suppressed_init = True  # one more init, inside the invocation, as Lambda does
            return invocation
        elif not initialised:
            self._begin(invocation)
            self._finish(invocation, *self._exit_error(invocation, status))
        else:
            return invocation  # died between invocations: the work never started, run it elsewhere
        return None


class ResponseSink:
    """The body of one /response, taken as it arrives: kept for a buffered invocation, passed on at once
    for a streamed one (InvokeWithResponseStream), within that invocation's limit. Past the limit the
    invocation fails at once with Function.ResponseSizeTooLarge and the rest is counted, not kept; the
    runtime gets its 413 when its body ends."""

    def __init__(self, env: Environment, invocation: Invocation, *, streaming: bool) -> None:
        self._env = env
        self.invocation = invocation
        self.streaming = streaming  # the runtime's response mode: its error trailers count only then
        self.limit = invocation.response_limit
        self.size = 0
        self.cut_off = False  # the connection closed before the body ended
        self._kept: list[bytes] = []
        self._too_large = False

    @property
    def active(self) -> bool:
        return self._env._responding is self

    def write(self, data: bytes) -> bool:
        """A piece of the body. False: stop reading until `when_drained` calls back (a slow caller)."""
        before = self.size
        self.size += len(data)
        if not self.active:
            return True
        if self.size > self.limit:
            self._pass(data[: self.limit - before])  # the caller of a stream gets everything up to the limit
            self.overflow(None)  # chunked: how long it would have been is not known
            return True
        return self._pass(data)

    def when_drained(self, callback: Callable[[], None]) -> None:
        stream = self.invocation.stream
        if stream is None:
            callback()
        else:
            stream.when_drained(callback)

    def overflow(self, size: int | None) -> None:
        self._too_large = True
        self._env._settle(self.invocation, response_too_large_error(size, self.limit), "Function.ResponseSizeTooLarge")
        self._env._available()  # a runtime that carries on after the 413 stays usable

    def finish(self, trailers: dict[str, str]) -> None:
        """The body ended; raises the Runtime API's answer when it is not 202."""
        if self._too_large:
            raise RuntimeAPIError(
                413, "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({self.limit} bytes)."
            )
        if not self.active:
            return  # the invocation ended while its answer arrived (its timeout)
        error_type = trailers.get(ERROR_TYPE_TRAILER) if self.streaming else None
        if error_type:
            body = _trailer_error_body(error_type, trailers.get(ERROR_BODY_TRAILER))
            self._env._settle(self.invocation, body, sanitize_error_type(error_type))
        else:
            payload = b"" if self.invocation.stream is not None else b"".join(self._kept)
            self._env._settle(self.invocation, payload, None)
        self._env._available()

    def abort(self) -> None:
        """The connection closed before the body ended."""
        self.cut_off = True
        if self.active:
            self._env._response_cut_off(self)

    def _pass(self, data: bytes) -> bool:
        if not data:
            return True
        if self.invocation.stream is not None:
            return self.invocation.stream.write(data)
        self._kept.append(data)
        return True


def _trailer_error_body(error_type: str, encoded: str | None) -> bytes:
    """A streamed response's error, from its trailers: the Error-Body trailer is the base64 of the
    error document ({errorType, errorMessage, ...}) a runtime would otherwise post to /error."""
    if encoded:
        try:
            body = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            body = b""
        if body:
            return body
    return platform_error(error_type, "")


def _error_body(body: bytes, content_type: str | None) -> bytes:
    """RIE passes error bodies through, except the error-cause type, which it re-marshals without errorCause."""
    if (content_type or "").split(";")[0].strip() != ERROR_CAUSE_CONTENT_TYPE:
        return body
    try:
        parsed = json.loads(body)
        return json.dumps(
            {key: parsed.get(key) for key in ("errorMessage", "errorType", "stackTrace") if key in parsed}
        ).encode()
    except (ValueError, AttributeError):
        return b'"Invalid error body"'
