"""The environments of one function version: warm reuse, cold starts up to a cap, queueing, throttling.

An invocation goes to, in order: an idle READY environment (warm; the most recently used first, so
the others age out), an environment still starting with nothing assigned (pre-started), a new
environment (cold) while under the concurrency cap, or a short queue; past the queue timeout it is
throttled with 429 TooManyRequestsException.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sandbox import SandboxError, UidExhausted

from .capacity import Capacity
from .environment import Environment, State
from .errors import ServiceException, TooManyRequestsException
from .functions import FunctionSpec
from .invocation import Invocation
from .logs import detached, get_logger

log = get_logger("pool")

EnvironmentFactory = Callable[["FunctionPool"], Environment]


class PoolObserver(Protocol):
    """What the metrics (`metrics.Metrics`) are told: environments that start and stop, and why."""

    def environment_started(self, function: str, kind: str) -> None: ...
    def environment_stopped(self, function: str, reason: str) -> None: ...


class FunctionPool:
    def __init__(
        self,
        function: FunctionSpec,
        new_environment: EnvironmentFactory,
        *,
        capacity: Capacity,
        max_concurrency: int,
        queue_timeout: float,
        pool_size: int,
        keep_alive: float,
        observer: PoolObserver | None = None,
    ) -> None:
        self.function = function
        self.observer = observer
        self._new_environment = new_environment
        self.capacity = capacity
        capacity.pools.append(self)
        reserved = function.reserved_concurrency
        self.reserved = reserved is not None
        self.limit = reserved if reserved is not None else max_concurrency
        self.queue_timeout = queue_timeout
        self.pool_size = min(pool_size, self.limit)
        self.keep_alive = keep_alive
        self.environments: set[Environment] = set()
        self._counted: set[Environment] = set()  # environments holding a place in `capacity`
        self._prestarting: set[Environment] = set()  # pre-started, not READY yet (paced by `capacity`)
        # Environments that can take an invocation, in order of availability (an ordered set):
        # the most recently used is reused first, so the others age out.
        self._idle: dict[Environment, None] = {}
        self._queue: deque[Invocation] = deque()
        self._closing = False
        self._retiring = False
        self._init_failing = False  # stop pre-starting while init keeps failing
        self.cold_starts = 0

    # -- invoking -------------------------------------------------------------------------------

    def dispatch(self, invocation: Invocation) -> None:
        if self._closing:
            raise ServiceException("The service is shutting down.")
        while self._idle:
            env, _ = self._idle.popitem()
            if env.alive and not env.has_work:
                env.assign(invocation)
                return
        for env in self.environments:
            if env.state is State.STARTING and not env.has_work:
                env.assign(invocation)
                self._prestarted(env)  # a cold start for this invocation now, which no pacing holds back
                return
        if len(self.environments) < self.limit and self.capacity.acquire():
            self._spawn(invocation)
            return
        if self.limit == 0 or self.queue_timeout <= 0:
            raise self._throttled()
        self._queue.append(invocation)
        asyncio.get_running_loop().call_later(self.queue_timeout, self._expire, invocation)

    def _throttled(self) -> TooManyRequestsException:
        reason = (
            "ReservedFunctionConcurrentInvocationLimitExceeded"
            if self.reserved
            else "ConcurrentInvocationLimitExceeded"
        )
        return TooManyRequestsException("Rate Exceeded.", reason=reason)

    def _expire(self, invocation: Invocation) -> None:
        if invocation in self._queue:
            self._queue.remove(invocation)
            if not invocation.future.done():
                invocation.future.set_exception(self._throttled())

    # -- environments ---------------------------------------------------------------------------

    def prestart(self) -> None:
        while (
            not self._closing
            and not self._retiring
            and not self._init_failing
            and len(self.environments) < self.pool_size
            and self.capacity.may_prestart()
        ):
            if not self.capacity.acquire(evict=False):
                return
            self._spawn(None)

    def start_queued(self) -> None:
        """Start environments for queued invocations while this function and the machine allow."""
        while self._queue and len(self.environments) < self.limit:
            if self._queue[0].future.done():
                self._queue.popleft()  # throttled while it waited
                continue
            if not self.capacity.acquire():
                return
            self._spawn(self._queue.popleft())

    def least_recently_used_idle(self) -> Environment | None:
        for env in self._idle:  # in order of availability: the first is the oldest
            if env.alive and not env.has_work:
                return env
        return None

    def evict(self, env: Environment) -> None:
        """Stop an idle environment to give its place to another function's invocation."""
        self._idle.pop(env, None)
        self._uncount(env, wake=False)  # its place goes to the environment that asked for it
        env.note_end("evicted")
        env.stop()

    def _prestarted(self, env: Environment) -> None:
        if env in self._prestarting:
            self._prestarting.discard(env)
            self.capacity.prestart_done()

    def _uncount(self, env: Environment, *, wake: bool = True) -> None:
        if env in self._counted:
            self._counted.discard(env)
            self.capacity.release(wake=wake)

    def _spawn(self, invocation: Invocation | None) -> None:
        """Start an environment; the caller has acquired its place in `capacity`."""
        env = self._new_environment(self)
        self.environments.add(env)
        self._counted.add(env)
        if self.observer is not None:
            self.observer.environment_started(self.function.name, "prestart" if invocation is None else "cold")
        if invocation is not None:
            self.cold_starts += 1
            env.assign(invocation)
        else:
            self._prestarting.add(env)
            self.capacity.prestarting += 1
        # The environment outlives the request that may have started it: its tasks and callbacks must
        # not carry that request's id into the log lines of the invocations it serves later.
        detached(self._start(env, invocation))

    async def _start(self, env: Environment, invocation: Invocation | None) -> None:
        try:
            await env.start()
        except (SandboxError, UidExhausted, OSError) as exc:
            log.error(
                "environment.start_failed", function=self.function.name, error=str(exc), **_request_of(invocation)
            )
            env.state = State.FAILED
            env.note_end("start_failed")
            if self.observer is not None:
                self.observer.environment_stopped(self.function.name, "start_failed")
            self.environments.discard(env)
            self._uncount(env)
            self._init_failing = True  # no retrying in a loop: the next READY environment resumes pre-starts
            self._prestarted(env)
            if invocation is not None and not invocation.future.done():
                error = (
                    TooManyRequestsException("Rate Exceeded.", reason="ConcurrentInvocationLimitExceeded")
                    if isinstance(exc, UidExhausted)
                    else ServiceException(f"Could not start an execution environment: {exc}")
                )
                invocation.future.set_exception(error)
            return
        log.debug("environment.started", function=self.function.name, environment=env.id, **_request_of(invocation))

    def on_ready(self, env: Environment) -> None:
        self._init_failing = False
        self._prestarted(env)
        while self._queue:
            invocation = self._queue.popleft()
            if not invocation.future.done():
                env.assign(invocation)
                return
        if self._retiring:
            env.note_end("replaced")
            env.stop()  # nothing left for this version
            return
        self._idle[env] = None

    def on_stopped(self, env: Environment, undelivered: Invocation | None) -> None:
        self.environments.discard(env)
        self._idle.pop(env, None)
        self._uncount(env)
        if env.init_duration_ms is None:
            self._init_failing = True
        self._prestarted(env)
        if self.observer is not None:
            self.observer.environment_stopped(self.function.name, env.end_reason or "exit")
        log.debug(
            "environment.stopped", function=self.function.name, environment=env.id, status=env.exit_status,
            state=env.state.value, reason=env.end_reason, **({"request_id": env.ended_by} if env.ended_by else {}),
        )  # fmt: skip
        if self._closing:
            if undelivered is not None and not undelivered.future.done():
                undelivered.future.set_exception(ServiceException("The service is shutting down."))
            return
        if undelivered is not None and not undelivered.future.done():
            try:
                self.dispatch(undelivered)
            except Exception as exc:
                undelivered.future.set_exception(exc)
        self.start_queued()
        self.prestart()

    def reap_idle(self) -> None:
        """Stop environments idle for longer than the keep-alive, keeping `pool_size` warm."""
        now = time.monotonic()
        for env in list(self._idle):
            if len(self.environments) <= self.pool_size:
                return
            if now - env.idle_since >= self.keep_alive:
                del self._idle[env]
                env.note_end("idle")
                env.stop()

    def set_limit(self, reserved: int | None, max_concurrency: int) -> None:
        """A new concurrency limit (PutFunctionConcurrency); environments above it end when idle."""
        self.reserved = reserved is not None
        self.limit = reserved if reserved is not None else max_concurrency
        self.pool_size = min(self.pool_size, self.limit)
        while len(self.environments) > self.limit and (env := self.least_recently_used_idle()) is not None:
            self._idle.pop(env, None)
            env.note_end("over_limit")
            env.stop()

    async def retire(self) -> None:
        """This version was replaced or deleted: invocations already queued or running finish here,
        idle environments stop now and busy ones once they answer; then the pool leaves the budget."""
        self._retiring = True
        for env in list(self._idle):
            del self._idle[env]
            env.note_end("replaced")
            env.stop()
        while self.environments or self._queue:
            await asyncio.sleep(0.05)
        if self in self.capacity.pools:
            self.capacity.pools.remove(self)

    async def close(self, cause: str | None = None) -> None:
        """Refuse new invocations and stop every environment; those still running end with `cause`."""
        self._closing = True
        while self._queue:
            invocation = self._queue.popleft()
            if not invocation.future.done():
                invocation.future.set_exception(ServiceException("The service is shutting down."))
        for env in list(self.environments):
            env.note_end("shutdown")
            env.stop(cause=cause)
        deadline = time.monotonic() + 5
        while self.environments and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def describe(self) -> dict[str, object]:
        states: dict[str, int] = {}
        executing = 0
        for env in self.environments:
            states[env.state.value] = states.get(env.state.value, 0) + 1
            executing += env.has_work
        return {
            "environments": states,
            "concurrent_executions": executing,
            "queued": len(self._queue),
            "concurrency_limit": self.limit,
            "cold_starts": self.cold_starts,
        }


def _request_of(invocation: Invocation | None) -> dict[str, str]:
    """The log fields naming the invocation an environment event is about, if any."""
    return {"request_id": invocation.request_id} if invocation is not None else {}
