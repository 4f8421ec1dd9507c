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
import contextlib
import enum
import json
import math
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from sandbox import Backend, Sandbox, SandboxSpec

from .apierror import RuntimeAPIError
from .extensions import (
    INTERNAL_SHUTDOWN_MS,
    INVOKE,
    MAX_EXTENSIONS,
    RUNTIME_SHUTDOWN_MS,
    SHUTDOWN,
    SHUTDOWN_BUDGET_MS,
    Extension,
    Extensions,
    extension_error,
)
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
from .telemetry import Telemetry, parse_subscription

log = get_logger("environment")

ERROR_CAUSE_CONTENT_TYPE = "application/vnd.aws.lambda.error.cause+json"
ERROR_TYPE_TRAILER = "lambda-runtime-function-error-type"
ERROR_BODY_TRAILER = "lambda-runtime-function-error-body"
_EXIT_GRACE = 0.5  # after a response's connection drops mid-body: time for a dying runtime's exit to say why


# Why an environment ended (`Environment.end_reason`): its own failures here; the pool's decisions
# (idle, evicted, over_limit, replaced, shutdown) in `pool`.
END_REASONS = (
    "timeout", "init_timeout", "init_error", "extension_error", "oom", "exit", "start_failed",
    "idle", "evicted", "over_limit", "replaced", "shutdown",
)  # fmt: skip


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    STOPPED = "stopped"
    FAILED = "failed"


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
        log_sink: LogSink | None,  # None: lines are only kept for the invocation (its log tail)
        init_limit: float,
        log_limit: int = 1024 * 1024,
        extensions: tuple[str, ...] = (),
        extensions_enabled: bool = True,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.function = function
        self.state = State.STARTING
        self.invocations = 0
        self.idle_since = time.monotonic()
        self.init_duration_ms: float | None = None
        self.exit_status: int | None = None
        # Why it ended (the first reason given: `END_REASONS`), and the request id of the invocation
        # whose timeout, crash or out-of-memory kill ended it, if one did. For the log and the metrics.
        self.end_reason: str | None = None
        self.ended_by: str | None = None
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
        self._undrained: Invocation | None = None  # answered; what its runtime wrote is not all read yet
        self._handing: Invocation | None = None  # taken by a /next whose answer is being written
        self._started_at = 0.0  # perf_counter of the current invocation's START
        # Runtimes' /next requests waiting for work: called back (at once, in the assigning call) when an
        # invocation is assigned, the init completes or fails, or the environment ends.
        self._next_waiters: list[Callable[[], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._init_timer: asyncio.TimerHandle | None = None
        self._init_error: tuple[str, bytes] | None = None
        self._init_timed_out = False
        self._output = FunctionOutput(function, log_sink, log_limit, self._running)
        self._stop_requested = False
        self._stop_cause: str | None = None  # why a running invocation ends, when it is stopped on purpose
        self._spawned_at = 0.0
        # Extensions (`extensions` are the external ones the launcher starts) and the Telemetry API.
        self.extensions = Extensions(extensions, enabled=extensions_enabled)
        self.telemetry = Telemetry(function.name)
        self._extension_output: FunctionOutput | None = None
        if extensions:
            self._extension_output = FunctionOutput(function, log_sink, log_limit, self._running)
            self._extension_output.telemetry = self._extension_line
            self._output.telemetry = self._function_line  # the init's output, for subscribers to come
        self._runtime_ready = False  # the runtime called its first /next
        self._owed: set[Extension] = set()  # extensions given the current INVOKE that have not called next since
        self._report: tuple[Invocation, float | None, str | None] | None = None  # REPORT waiting for them
        self._fatal: str | None = None  # an extension's exit error: what a running invocation fails with
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._shutting_down = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._spawned_at = time.perf_counter()
        self.telemetry.emit("platform", "platform.initStart", self._init_record(), at=time.time())
        self._sandbox = await self._backend.start(self._spec)
        self._loop.create_task(self._watch_exit())  # from here on, cleanup belongs to _watch_exit
        if self._stop_requested:
            self._sandbox.kill()  # stopped while the sandbox was being made (e.g. at shutdown)
        self._output.attach(self._sandbox.output_fd, self._loop)
        self.telemetry.connect = self._sandbox.connect
        if self._extension_output is not None and self._sandbox.extension_output_fd is not None:
            self._extension_output.attach(self._sandbox.extension_output_fd, self._loop)
        if len(self.extensions.launched) > MAX_EXTENSIONS:
            message = f"Extension limit ({MAX_EXTENSIONS}) reached: /opt/extensions has {len(self.extensions.launched)}"
            self._fail_init("Extension.TooManyExtensions", message)
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
            self.note_end("start_failed", self._cold)
            self.stop()

    def stop(self, reason: str = "spindown", *, cause: str | None = None) -> None:
        """End the environment; `_watch_exit` finishes the bookkeeping once the sandbox is gone. Without
        extensions the sandbox is killed at once; with some, the runtime gets SIGTERM and the
        extensions their SHUTDOWN event first, within Lambda's budget (`_shut_down`). `cause` is what
        an invocation still running is told (Runtime.ExitError), instead of the bare signal."""
        self._stop_requested = True
        self._stop_cause = self._stop_cause or cause
        if self._sandbox is None or self._exited.done():
            return  # `start` kills it once it exists
        if not self.extensions or self._shutting_down:
            if not self._shutting_down:
                self._sandbox.kill()
            return
        self._shutting_down = True
        self._loop.create_task(self._shut_down(reason))

    async def _shut_down(self, reason: str) -> None:
        assert self._sandbox is not None
        external = any(ext.external for ext in self.extensions.by_id.values())
        budget = (SHUTDOWN_BUDGET_MS if external else INTERNAL_SHUTDOWN_MS) / 1000
        deadline_ms = int(time.time() * 1000 + budget * 1000)
        ends = self._loop.time() + budget
        self.telemetry.flush()
        self._sandbox.terminate_command()  # the launcher passes it on to the runtime
        if external:
            await self._until_exit(RUNTIME_SHUTDOWN_MS / 1000)  # the runtime's part of the budget
            event = {"eventType": SHUTDOWN, "deadlineMs": deadline_ms, "shutdownReason": reason}
            for extension in self.extensions.by_id.values():
                if SHUTDOWN in extension.events and extension.state not in ("InitError", "ExitError"):
                    self.extensions.deliver(extension, dict(event))
        await self._until_exit(max(0.0, ends - self._loop.time()))
        self._sandbox.kill()

    async def _until_exit(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), seconds)

    def note_end(self, reason: str, invocation: Invocation | None = None) -> None:
        """Why the environment is ending (`END_REASONS`; the first reason given counts) and, when an
        invocation's failure ends it, which one."""
        if self.end_reason is None:
            self.end_reason = reason
            self.ended_by = invocation.request_id if invocation is not None else None

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
            for output in (self._output, self._extension_output):
                if output is not None:
                    output.init_request_id = invocation.request_id  # the init's output, in its log
        else:
            self.state = State.BUSY
        self._wake_runtime()

    # -- Runtime API ----------------------------------------------------------------------------

    def take_next(self, *, waited: bool = False) -> Invocation | None:
        """A runtime's /next: the invocation it gets now, or None when it has to wait for one
        (`wait_next`; then `waited` when it looks again). Raises the Runtime API's error when /next is
        not allowed now. Once the answer is written (or failed), `handed` starts the invocation."""
        if waited:  # only whether the environment ended meanwhile: the rest was settled when it asked
            if not self.alive or self._init_error is not None:
                raise _invalid_transition("Stopped", "Ready")
        else:
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
                if self._pending is None and not self._owed:
                    self.state = State.READY
            if not self._runtime_ready:
                self._runtime_ready = True
                record = {"initializationType": "on-demand", "phase": "init", "status": "success"}
                self.telemetry.emit("platform", "platform.initRuntimeDone", record)
                self._check_init()
        if self._pending is None or self.init_duration_ms is None:
            return None
        invocation, self._pending = self._pending, None
        self._current, self._answered = invocation, False
        self.state = State.BUSY
        invocation.deadline_ms = int(time.time() * 1000) + self.function.timeout * 1000
        self._handing = invocation
        if self.extensions:  # their INVOKE goes out with the runtime's event, not after it
            self._invoke_extensions(invocation)
        return invocation

    def handed(self) -> None:
        """The runtime's /next answer with the invocation `take_next` gave it has been written: START
        and its timeout, after the write, so the event is not held up by them."""
        invocation, self._handing = self._handing, None
        if invocation is None:
            return
        self._begin(invocation)
        self._timer = self._loop.call_later(self.function.timeout, self._on_timeout, invocation)

    def wait_next(self, callback: Callable[[], None]) -> None:
        """Call `callback` once when a waiting /next should look again (`take_next`): the event is
        written in the same call that assigns it, so the runtime gets it without another loop turn."""
        self._next_waiters.append(callback)

    def forget_next(self, callback: Callable[[], None]) -> None:
        """A waiting /next went away (its connection closed)."""
        if callback in self._next_waiters:
            self._next_waiters.remove(callback)

    def _wake_runtime(self) -> None:
        waiters, self._next_waiters = self._next_waiters, []
        for callback in waiters:
            callback()

    def _check_init(self) -> None:
        """Init ends when the runtime and every extension have called next (external extensions the
        launcher started must have registered first); until then registration stays open."""
        if self.init_duration_ms is not None or self._init_error is not None or not self._runtime_ready:
            return
        if not self.extensions.all_external_registered or not self.extensions.ready:
            return
        self.init_duration_ms = (time.perf_counter() - self._spawned_at) * 1000
        if self._init_timer is not None:
            self._init_timer.cancel()
        self.extensions.open = False
        for extension in self.extensions.by_id.values():
            record = {"name": extension.name, "state": "Ready", "events": sorted(extension.events)}
            self.telemetry.emit("platform", "platform.extension", record)
        report = {**self._init_phase("success"), "metrics": {"durationMs": round(self.init_duration_ms, 3)}}
        self.telemetry.emit("platform", "platform.initReport", report)
        self.telemetry.end_backlog()
        self._route_output()
        if self._pending is None:
            self.state = State.READY
            self._available()
        self._wake_runtime()  # a runtime waiting in /next for its cold invocation

    def _fail_init(self, error_type: str, message: str) -> None:
        """The init fails for a reason of the platform's (an extension's): like /init/error."""
        if self.init_duration_ms is not None or self._init_error is not None:
            return
        self._init_error = (error_type, platform_error(error_type, message))
        self.state = State.FAILED
        record = {**self._init_phase("error"), "errorType": error_type}
        self.telemetry.emit("platform", "platform.initRuntimeDone", record)
        self.note_end("init_error", self._pending)
        self._wake_runtime()
        self._loop.call_soon(self.stop)

    def _init_record(self) -> dict[str, Any]:
        return {
            **self._init_phase(None),
            "functionName": self.function.name,
            "functionVersion": self.function.version,
            "instanceMaxMemory": self.function.memory_size * 1024 * 1024,
            "runtimeVersion": self.function.runtime,
        }

    @staticmethod
    def _init_phase(status: str | None) -> dict[str, Any]:
        record: dict[str, Any] = {"initializationType": "on-demand", "phase": "init"}
        if status is not None:
            record["status"] = status
        return record

    # -- Extensions API -------------------------------------------------------------------------

    def _invoke_extensions(self, invocation: Invocation) -> None:
        event = {
            "eventType": INVOKE,
            "deadlineMs": invocation.deadline_ms,
            "requestId": invocation.request_id,
            "invokedFunctionArn": invocation.invoked_arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id},
        }
        for extension in self.extensions.subscribed(INVOKE):
            self._owed.add(extension)
            self.extensions.deliver(extension, dict(event))

    def register_extension(self, name: str, body: bytes, accept_feature: str | None) -> tuple[str, bytes]:
        """POST /extension/register: the new extension's identifier and the answer's body."""
        self._require_extensions()
        extension = self.extensions.register(name, body)
        answer: dict[str, Any] = {
            "functionName": self.function.name,
            "functionVersion": self.function.version,
            "handler": self._spec.env.get("_HANDLER", ""),
        }
        if accept_feature and "accountId" in [part.strip() for part in accept_feature.split(",")]:
            answer["accountId"] = self.function.arn.split(":")[4]
        return extension.id, json.dumps(answer).encode()

    async def extension_next(self, identifier: str | None) -> dict[str, Any]:
        """GET /extension/event/next: the extension is done with its last event; wait for its next one."""
        self._require_extensions()
        extension = self.extensions.identify(identifier)
        was = extension.state
        event = self.extensions.take(extension)
        if was == "Registered":
            self._check_init()
        elif was == "Running" and extension in self._owed:
            self._owed.discard(extension)
            if not self._owed:
                self._invoke_phase_ended()
        if isinstance(event, asyncio.Future):
            return await event
        return event

    def extension_error(self, identifier: str | None, error_type: str | None, *, init: bool) -> None:
        """POST /extension/init/error or /extension/exit/error."""
        self._require_extensions()
        extension = self.extensions.identify(identifier, error_type_header=error_type)
        wanted = "InitError" if init else "ExitError"
        if extension.state in ("InitError", "ExitError") or (init and self.init_duration_ms is not None):
            raise extension_error(
                "Extension.InvalidExtensionState",
                f"State transition from {extension.state} to {wanted} failed for extension {extension.id}. "
                "Error: State transition is not allowed",
            )
        extension.state = wanted
        self._owed.discard(extension)
        fatal = f"Extension.{wanted}"
        if self.init_duration_ms is None:
            self._fail_init(fatal, f"Extension {extension.name} reported {fatal} ({error_type})")
        elif self._fatal is None:
            self._fatal = fatal
            self.note_end("extension_error", self._running())
            self._loop.call_soon(self.stop, "failure")

    def subscribe_telemetry(self, identifier: str | None, body: bytes) -> None:
        """PUT /2022-07-01/telemetry."""
        self._require_extensions()
        extension = self.extensions.identify(identifier)
        if not self.extensions.open:
            raise extension_error("Telemetry.SubscriptionClosed", "Telemetry API subscription is closed already")
        self.telemetry.subscribe(parse_subscription(extension.name, body))
        self._route_output()

    def _require_extensions(self) -> None:
        if not self.extensions.enabled:
            raise RuntimeAPIError(404, "NotFound", "404 page not found")

    def _route_output(self) -> None:
        """Function output goes to the Telemetry API only while somebody may want it."""
        self._output.telemetry = self._function_line if self.telemetry.wants("function") else None

    def _function_line(self, line: str) -> None:
        record: Any = line
        if self.function.log_format == "JSON" and line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
        self.telemetry.emit("function", "function", record)

    def _extension_line(self, line: str) -> None:
        self.telemetry.emit("extension", "extension", line)

    def _invoke_phase_ended(self) -> None:
        """The runtime has answered and every extension given the INVOKE has called next again."""
        if not self._answered or self._report is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write_report()
        if self._current is None and self._pending is None and self.alive:
            self.state = State.READY  # the runtime already waits in /next
        self._available()

    def _on_invoke_phase_timeout(self, invocation: Invocation) -> None:
        """Extensions still busy with an answered invocation at its deadline: the environment is reset."""
        if self._report is None or self._report[0] is not invocation:
            return
        self._owed.clear()
        self._write_report("timeout")
        self.note_end("timeout", invocation)
        self.stop("timeout")

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
        record = {**self._init_phase("error"), "errorType": self._init_error[0]}
        self.telemetry.emit("platform", "platform.initRuntimeDone", record)
        self.note_end("init_error", self._pending)
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
        """The invocation output belongs to now: one just answered until what it wrote before its answer
        has been read (`_take_answered_output`), else the current one until it has been answered."""
        if self._undrained is not None:
            return self._undrained
        return self._current if self._current is not None and not self._answered else None

    def _available(self) -> None:
        """Tell the pool this environment can take an invocation: right after it answered (its
        runtime is about to poll /next again) or when its first init completes."""
        if self._owed or self._stop_requested:
            return  # the last extension's next (or nothing, for an environment that ends) calls again
        self.idle_since = time.monotonic()
        self._hooks.on_ready(self)

    def _begin(self, invocation: Invocation) -> None:
        self._take_answered_output()  # the one before may have been answered a moment ago
        self._output.end_phase(None)  # what the init phase (or the time since the last answer) dropped
        if self._extension_output is not None:
            self._extension_output.end_phase(None)
        self._started_at = time.perf_counter()
        if invocation.started is not None:
            invocation.started.set()
        if invocation is self._cold and invocation.log is not None:
            for output in (self._output, self._extension_output):
                for line in output.init_log.tail().splitlines(keepends=True) if output is not None else ():
                    invocation.log.append(line)
        self._output.platform_line(
            invocation, f"START RequestId: {invocation.request_id} Version: {invocation.version}"
        )
        if self.telemetry.wants("platform"):
            record = {"requestId": invocation.request_id, "version": invocation.version}
            self.telemetry.emit("platform", "platform.start", {**record, "tracing": _tracing(invocation)})

    def _finish(self, invocation: Invocation, payload: bytes, error_type: str | None, *, note: str = "") -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # What the runtime wrote before it answered is this invocation's output, read by `_log_end`
        # (before its END); until then output that arrives still goes to it.
        self._take_answered_output()  # (another one's, not taken yet, would be its)
        self._undrained = invocation
        duration_ms = (time.perf_counter() - self._started_at) * 1000
        init_ms = self.init_duration_ms if invocation is self._cold else None
        # Extensions still working on this invocation: the caller gets its answer now; REPORT (and the
        # environment's next invocation) wait for them, within the invocation's deadline.
        extensions_busy = (
            bool(self._owed) and invocation is self._current and error_type != "Sandbox.Timedout" and self.alive
        )
        if not extensions_busy:
            self._owed.clear()
        self.invocations += 1
        if invocation.stream is not None:
            invocation.stream.close()
        ended = (invocation, len(payload), error_type, note, duration_ms, init_ms, extensions_busy)
        lines_first = invocation.wants_log_tail or extensions_busy  # else the answer goes out first (below)
        if lines_first:
            self._log_end(*ended)
        invocation.resolve(
            InvocationResult(
                payload=payload,
                function_error="Unhandled" if error_type else None,
                error_type=error_type,
                log_tail=invocation.log.tail() if invocation.log is not None else b"",
                duration_ms=duration_ms,
                init_duration_ms=init_ms,
            )
        )
        if not lines_first:
            # Nobody waits for the log lines: the answer goes out first (resolving has just written it,
            # or queued the caller's task), END and REPORT right after it, before the loop takes
            # anything else in.
            self._loop.call_soon(self._log_end, *ended)

    def _take_answered_output(self) -> None:
        """Read what the invocation just answered wrote before its answer (`_finish` leaves it in the
        pipe), and end its output phase: at its END, or when the next invocation begins first."""
        invocation = self._undrained
        if invocation is None:
            return
        self._output.drain()  # to that invocation: it is `_running()` until the line below
        self._undrained = None
        self._output.end_phase(invocation)

    def _log_end(
        self,
        invocation: Invocation,
        produced: int,
        error_type: str | None,
        note: str,
        duration_ms: float,
        init_ms: float | None,
        extensions_busy: bool,
    ) -> None:
        """The platform lines (and telemetry) that end an invocation, after the rest of its output: its
        note, END, then REPORT unless extensions still work on it (then their next call, or the deadline,
        writes it)."""
        if self._undrained is invocation:
            self._take_answered_output()
        self._report = (invocation, init_ms, error_type)
        if note:
            self._output.platform_line(invocation, note)
        self._output.platform_line(invocation, f"END RequestId: {invocation.request_id}")
        if self.telemetry.wants("platform"):
            record = {
                "requestId": invocation.request_id,
                "status": _status(error_type),
                "metrics": {"durationMs": round(duration_ms, 3), "producedBytes": produced},
                "tracing": _tracing(invocation),
            }
            if error_type:
                record["errorType"] = error_type
            self.telemetry.emit("platform", "platform.runtimeDone", record)
        if extensions_busy:
            remaining = max(0.0, invocation.deadline_ms / 1000 - time.time())
            self._timer = self._loop.call_later(remaining, self._on_invoke_phase_timeout, invocation)
        else:
            self._write_report(duration_ms=duration_ms)

    def _write_report(self, status: str | None = None, *, duration_ms: float | None = None) -> None:
        """REPORT for the invocation that just ended: its duration runs until the runtime answered and
        every extension that got its INVOKE called next again (Lambda bills that time)."""
        if self._report is None:
            return
        invocation, init_ms, error_type = self._report
        self._report = None
        if duration_ms is None:
            duration_ms = (time.perf_counter() - self._started_at) * 1000
        peak = self._sandbox.memory_peak_bytes() if self._sandbox is not None else None
        peak_mb = None if peak is None else -(-peak // (1024 * 1024))
        line = report_line(invocation.request_id, duration_ms, self.function.memory_size, peak_mb, init_ms)
        self._output.platform_line(invocation, line)
        if self.telemetry.wants("platform"):
            metrics: dict[str, Any] = {
                "durationMs": round(duration_ms, 3),
                "billedDurationMs": math.ceil(duration_ms + (init_ms or 0.0)),
                "memorySizeMB": self.function.memory_size,
                "maxMemoryUsedMB": peak_mb or 0,
            }
            if init_ms is not None:
                metrics["initDurationMs"] = round(init_ms, 3)
            record: dict[str, Any] = {
                "requestId": invocation.request_id,
                "status": status or _status(error_type),
                "metrics": metrics,
                "tracing": _tracing(invocation),
            }
            if error_type:
                record["errorType"] = error_type
            self.telemetry.emit("platform", "platform.report", record)

    def _on_timeout(self, invocation: Invocation) -> None:
        if invocation is not self._current or self._answered:
            return
        timeout = self.function.timeout
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        note = f"{now} {invocation.request_id} Task timed out after {timeout:.2f} seconds"
        self._owed.clear()
        self._settle(invocation, timeout_error(invocation.request_id, timeout), "Sandbox.Timedout", note=note)
        self.note_end("timeout", invocation)
        self.stop("timeout")

    def _on_init_timeout(self) -> None:
        if self.init_duration_ms is None and self.alive:
            self._init_timed_out = True
            self.note_end("init_timeout", self._pending)
            self.stop("timeout")

    async def _watch_exit(self) -> None:
        assert self._sandbox is not None
        status = await self._sandbox.wait()
        self.exit_status = status
        self._output.detach()
        if self._extension_output is not None:
            self._extension_output.detach()
        self._exited.set_result(status)
        self.extensions.close()
        self.telemetry.close()
        for timer in (self._timer, self._init_timer):
            if timer is not None:
                timer.cancel()
        for server in (self._server, self._egress_server):
            if server is not None:
                server.close()
        initialised = self.init_duration_ms is not None
        self.state = State.STOPPED if initialised and self._init_error is None else State.FAILED
        current, self._current = self._current, None
        self._owed.clear()
        if self.end_reason is None:  # it ended by itself: the invocation it was running (or its init) ended it
            running = current if current is not None and not self._answered else None
            oom = self._sandbox is not None and self._sandbox.oom_killed()
            self.note_end("oom" if oom else "exit", running or (self._pending if not initialised else None))
        if current is not None and not self._answered:
            self._settle(current, *self._exit_error(current, status))
        self._write_report()  # an answered invocation whose extensions were still at work
        undelivered, self._pending = self._pending, None
        if undelivered is not None:
            undelivered = self._settle_undelivered(undelivered, status, initialised)
        self._wake_runtime()
        self._hooks.on_stopped(self, undelivered)

    def _exit_error(self, invocation: Invocation, status: int) -> tuple[bytes, str]:
        """What a runtime's death means to the invocation it was running: OOM, or just an exit."""
        if self._sandbox is not None and self._sandbox.oom_killed():
            return out_of_memory_error(invocation.request_id), "Runtime.OutOfMemory"
        if self._stop_cause is not None:
            message = f"RequestId: {invocation.request_id} Error: {self._stop_cause}"
            return platform_error("Runtime.ExitError", message), "Runtime.ExitError"
        if self._fatal is not None:
            return platform_error(
                self._fatal, f"RequestId: {invocation.request_id} Error: an extension reported {self._fatal}"
            ), self._fatal
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


def _tracing(invocation: Invocation) -> dict[str, str]:
    return {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id}


def _status(error_type: str | None) -> str:
    """A Telemetry API status: success, timeout, failure (the platform's) or error (the function's)."""
    if not error_type:
        return "success"
    if error_type == "Sandbox.Timedout":
        return "timeout"
    return "failure" if error_type.startswith("Sandbox.") else "error"


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
    except (ValueError, AttributeError, RecursionError):
        return b'"Invalid error body"'
