"""Prometheus metrics (`GET /metrics`): one registry per service, so services in one process don't clash.

Counters and histograms move where things finish (`Service`'s invocations, the pools' and the session
manager's `observer` hooks); what is a state rather than an event (environments by state, concurrent
executions, the machine budget, live sessions, the Event queue, the backends) and the counts their
owners keep anyway (sessions, Event deliveries) are read at scrape time, so they can never drift.
(Invocations in flight, replica-wide, are the one count the invoke path keeps itself: `in_flight`.)
Every metric is listed in docs/api-reference.md#metrics.

The invoke path is kept cheap: each function's label children are made once and cached, so an
invocation costs a dict lookup, a counter increment and one or two histogram observations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import __version__
from .environment import END_REASONS

if TYPE_CHECKING:
    from .events import EventQueue
    from .invocation import InvocationResult
    from .service import Service

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "invocation_outcome"]

# Error types the platform (not the function's code) produces: a bounded set, each its own outcome.
# Any other error type is the function's (what its runtime posted: Runtime.Unknown for an exception,
# Runtime.ImportModuleError, ...) and counts as function_error, which keeps the label set bounded.
PLATFORM_ERRORS = frozenset(
    {
        "Sandbox.Timedout",
        "Runtime.ExitError",
        "Runtime.OutOfMemory",
        "Runtime.TruncatedResponse",
        "Function.ResponseSizeTooLarge",
        "Extension.Crash",
        "Extension.ExitError",
        "Extension.InitError",
    }
)

_INVOKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_INIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SESSION_BUCKETS = (1, 10, 30, 60, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
_EXECUTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


def invocation_outcome(error_type: str | None) -> str:
    """success, function_error, or the platform's error type (Sandbox.Timedout, Runtime.OutOfMemory, ...)."""
    if not error_type:
        return "success"
    if error_type in PLATFORM_ERRORS:
        return error_type
    return "function_error"


class _FunctionMetrics:
    """One function's label children, made once."""

    __slots__ = ("_invocations", "cold_starts", "duration", "init_duration", "name", "outcomes")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self._invocations = metrics.invocations
        self.outcomes: dict[str, Any] = {}
        self.duration = metrics.invocation_duration.labels(name)
        self.init_duration = metrics.init_duration.labels(name)
        self.cold_starts = metrics.cold_starts.labels(name)

    def outcome(self, outcome: str) -> Any:
        child = self.outcomes.get(outcome)
        if child is None:
            child = self.outcomes[outcome] = self._invocations.labels(self.name, outcome)
        return child


class Metrics:
    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.invocations = Counter(
            "sandbox_invocations",
            "Invocations that reached a function's pool, by outcome: success, function_error, a platform "
            "error type (Sandbox.Timedout, Runtime.ExitError, Runtime.OutOfMemory, ...), throttled, service_error.",
            ["function", "outcome"],
            registry=registry,
        )
        self.invocation_duration = Histogram(
            "sandbox_invocation_duration_seconds",
            "Invocation duration (START to the runtime's answer, as in REPORT), answered invocations only.",
            ["function"],
            buckets=_INVOKE_BUCKETS,
            registry=registry,
        )
        self.cold_starts = Counter(
            "sandbox_cold_starts",
            "Invocations that waited for a new environment's init (their REPORT has an Init Duration).",
            ["function"],
            registry=registry,
        )
        self.init_duration = Histogram(
            "sandbox_init_duration_seconds",
            "Init duration of the environments that served a cold start.",
            ["function"],
            buckets=_INIT_BUCKETS,
            registry=registry,
        )
        self.session_duration = Histogram(
            "sandbox_session_duration_seconds",
            "Lifetime of sessions that ended, by how: closed, expired, ended (their sandbox died).",
            ["reason"],
            buckets=_SESSION_BUCKETS,
            registry=registry,
        )
        self.executions = Counter(
            "sandbox_session_executions",
            "Session executions by outcome: success, exit_error (non-zero exit), timeout, limit, or the "
            "session error code in lower case.",
            ["outcome"],
            registry=registry,
        )
        self.execution_duration = Histogram(
            "sandbox_session_execution_duration_seconds",
            "Session execution duration (as the service saw it), by kind: execute_code, execute.",
            ["kind"],
            buckets=_EXECUTION_BUCKETS,
            registry=registry,
        )
        self.environment_starts = Counter(
            "sandbox_environment_starts",
            "Execution environments started, by kind: cold (for an invocation), prestart.",
            ["function", "kind"],
            registry=registry,
        )
        self.environment_stops = Counter(
            "sandbox_environment_stops",
            f"Execution environments that ended, by reason: {', '.join(END_REASONS)}.",
            ["function", "reason"],
            registry=registry,
        )
        self.events: EventQueue | None = None  # the app's Event queue, read at scrape time once it exists
        registry.register(_StateCollector(service, self))
        self._functions: dict[str, _FunctionMetrics] = {}
        # Invocations accepted and not answered yet (waiting, starting an environment, running): a plain
        # int the invoke path moves (`Service.invoke`, `begin_invoke`) and a scrape reads. What an
        # autoscaler scales on.
        self.in_flight = 0

    def _function(self, name: str) -> _FunctionMetrics:
        metrics = self._functions.get(name)
        if metrics is None:
            metrics = self._functions[name] = _FunctionMetrics(self, name)
        return metrics

    # -- invocations (the hot path) -------------------------------------------------------------

    def invoked(self, name: str, result: InvocationResult) -> None:
        metrics = self._functions.get(name) or self._function(name)
        metrics.outcome(invocation_outcome(result.error_type)).inc()
        metrics.duration.observe(result.duration_ms / 1000)
        if result.init_duration_ms is not None:
            metrics.cold_starts.inc()
            metrics.init_duration.observe(result.init_duration_ms / 1000)

    def refused(self, name: str, outcome: str) -> None:
        """An invocation the pool did not answer: throttled, or service_error."""
        (self._functions.get(name) or self._function(name)).outcome(outcome).inc()

    # -- environments (FunctionPool.observer): starts and stops, never on the warm path ------------

    def environment_started(self, function: str, kind: str) -> None:
        self.environment_starts.labels(function, kind).inc()

    def environment_stopped(self, function: str, reason: str) -> None:
        self.environment_stops.labels(function, reason).inc()

    # -- sessions (SessionManager.observer) -----------------------------------------------------

    def session_ended(self, reason: str, lifetime_s: float) -> None:
        """A session ended: closed, expired, or ended (its sandbox died)."""
        self.session_duration.labels(reason).observe(lifetime_s)

    def execution(self, kind: str, outcome: str, seconds: float) -> None:
        """A session execution finished: success, exit_error, timeout, limit, or an error code."""
        self.executions.labels(outcome).inc()
        self.execution_duration.labels(kind).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """States read at scrape time: environments by function and state, concurrent executions, the
    machine budget, the backends, sessions, the Event queue."""

    def __init__(self, service: Service, metrics: Metrics) -> None:
        self._service = service
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []  # collected only at scrape time (no auto-describe against the service)

    def collect(self) -> Iterator[Any]:
        service = self._service
        info = GaugeMetricFamily("sandbox_service_info", "The service's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        environments = GaugeMetricFamily(
            "sandbox_environments", "Execution environments by function and state.", labels=["function", "state"]
        )
        queued = GaugeMetricFamily(
            "sandbox_queued_invocations", "Invocations waiting for an environment.", labels=["function"]
        )
        executions = GaugeMetricFamily(
            "sandbox_concurrent_executions",
            "Invocations an environment has taken and not answered yet: the function's concurrency in use.",
            labels=["function"],
        )
        states: dict[tuple[str, str], int] = {}
        waiting: dict[str, int] = {}
        running: dict[str, int] = {}
        for pool in list(service.capacity.pools):  # replaced versions still draining included
            described = pool.describe()
            name = pool.function.name
            for state, count in dict(described["environments"]).items():  # type: ignore[call-overload]
                states[(name, state)] = states.get((name, state), 0) + count
            waiting[name] = waiting.get(name, 0) + int(described["queued"])  # type: ignore[call-overload]
            executing = int(described["concurrent_executions"])  # type: ignore[call-overload]
            running[name] = running.get(name, 0) + executing
        for (function, state), count in sorted(states.items()):
            environments.add_metric([function, state], count)
        for function, count in sorted(waiting.items()):
            queued.add_metric([function], count)
        for function, count in sorted(running.items()):
            executions.add_metric([function], count)
        yield environments
        yield queued
        yield executions
        yield GaugeMetricFamily(
            "sandbox_invocations_in_flight",
            "Invocations this replica has accepted and not answered yet: waiting for an environment, "
            "starting one, or running (Event attempts included).",
            value=service.metrics.in_flight,
        )
        yield GaugeMetricFamily(
            "sandbox_environments_live", "Environments holding a place in the machine budget.",
            value=service.capacity.live,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "sandbox_environments_limit", "The machine budget of environments (SANDBOX_MAX_ENVIRONMENTS).",
            value=service.capacity.limit,
        )  # fmt: skip
        yield GaugeMetricFamily("sandbox_functions", "Functions served.", value=len(service.registry))
        yield GaugeMetricFamily(
            "sandbox_functions_unavailable", "Function versions that cannot run here (/health: pools.unavailable).",
            value=len(service.unavailable),
        )  # fmt: skip
        yield from _backends(service.describe_backends())
        sessions = service.sessions.describe()
        yield GaugeMetricFamily(
            "sandbox_sessions_available", "1 when agent sessions can be created here.", value=int(sessions["available"])
        )
        yield GaugeMetricFamily("sandbox_sessions_live", "Open agent sessions.", value=sessions.get("active", 0))
        limit = sessions.get("limit", 0)
        yield GaugeMetricFamily("sandbox_sessions_limit", "At most this many open (SANDBOX_MAX_SESSIONS).", value=limit)
        spares = (sessions.get("pool") or {}).get("ready", 0)
        yield GaugeMetricFamily("sandbox_session_spares", "Warm session sandboxes ready.", value=spares)
        for name, help_text in (
            ("created", "Sessions created."),
            ("created_warm", "Sessions created from a warm spare."),
            ("closed", "Sessions closed by a client."),
            ("expired", "Sessions that expired (idle past SANDBOX_SESSION_IDLE_TIMEOUT)."),
            ("ended", "Sessions whose sandbox ended by itself (killed, out of memory)."),
        ):
            yield CounterMetricFamily(f"sandbox_sessions_{name}", help_text, value=sessions.get(name, 0))
        yield from _events(self._metrics.events)


def _backends(described: dict[str, Any]) -> Iterator[Any]:
    """The sandbox backends' availability, the cgroup limits, the generic sandboxes (`Service.describe_backends`)."""
    available = GaugeMetricFamily(
        "sandbox_backend_available", "1 when the sandbox backend can start sandboxes.", labels=["backend"]
    )
    for name, status in sorted(described["backends"].items()):
        available.add_metric([name], int(bool(status["available"])))
    yield available
    yield GaugeMetricFamily(
        "sandbox_cgroup_limits", "1 when sandboxes run under cgroup memory, pids and CPU limits.",
        value=int(bool(described["limits"]["cgroups"])),
    )  # fmt: skip
    generic = described["generic_sandboxes"]
    if not generic.get("enabled"):
        return
    ready = GaugeMetricFamily(
        "sandbox_generic_sandboxes", "Generic sandboxes kept for cold starts, by state: ready, starting.",
        labels=["state"],
    )  # fmt: skip
    ready.add_metric(["ready"], generic["ready"])
    ready.add_metric(["starting"], generic["starting"])
    yield ready
    yield CounterMetricFamily(
        "sandbox_generic_sandboxes_taken",
        "Environment starts that took a ready generic sandbox.",
        value=generic["taken"],
    )
    yield CounterMetricFamily(
        "sandbox_generic_sandboxes_missed", "Environment starts that found no generic sandbox ready.",
        value=generic["missed"],
    )  # fmt: skip


def _events(events: EventQueue | None) -> Iterator[Any]:
    """The Event (asynchronous) invocation queue: its attempts are also in sandbox_invocations_total."""
    if events is None:
        return
    yield GaugeMetricFamily(
        "sandbox_events_pending", "Event invocations accepted and not done with (waiting, running or retrying).",
        value=events.pending,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "sandbox_events_running", "Event invocations whose function runs now.", value=events.running
    )
    yield CounterMetricFamily(
        "sandbox_events_delivered", "Event invocations that succeeded (on some attempt).", value=events.delivered
    )
    yield CounterMetricFamily(
        "sandbox_events_failed",
        "Event invocations given up on: retries exhausted, too old, or refused (their OnFailure destination, if any, "
        "has the record).",
        value=events.failed,
    )
    retries = CounterMetricFamily(
        "sandbox_events_retries", "Event attempts after the first, by cause: function_error, throttled.",
        labels=["cause"],
    )  # fmt: skip
    for cause, count in sorted(events.retries.items()):
        retries.add_metric([cause], count)
    yield retries
    yield GaugeMetricFamily(
        "sandbox_events_store_ok", "1 while the Event queue's store can be written (/health: events.store_problem).",
        value=int(events.problem is None),
    )  # fmt: skip
