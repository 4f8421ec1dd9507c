"""Asynchronous (`Event`) invocations: accepted at once, run in the background, retried as Lambda does.

A function error is retried twice (three attempts in all, or MaximumRetryAttempts + 1 from the
function's event-invoke configuration) after a short, configurable delay that grows with each
attempt; a throttle is retried until the event is older than its maximum age (6 hours, or
MaximumEventAgeInSeconds, counted from when the event was first accepted, across restarts). The
outcome goes to the configured OnSuccess / OnFailure destination when that is another function, as
an invocation record in Lambda's format.

Every accepted event is in the event store (`event_store`, SQLite under SANDBOX_DATA_DIR) before its
202 is answered, and leaves it once done with. On shutdown no new attempt starts: attempts already
running get until the deadline, everything else stays stored, and `resume` picks it up at the next
start. Delivery is at least once: an attempt interrupted by a crash or by the shutdown deadline is
not counted and runs again after the restart, and a crash between a function's answer and the
delete re-delivers that event once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from typing import Any

from .errors import LambdaServiceError, ResourceConflictException, ServiceException, TooManyRequestsException
from .event_store import EventStore, EventStoreError, StoredEvent
from .invocation import Invocation, LogTail
from .logs import bind_request_id, get_logger

log = get_logger("events")

MAX_ATTEMPTS = 3
MAX_EVENT_AGE_SECONDS = 6 * 3600


class EventQueue:
    def __init__(self, service: Any, store: EventStore, *, retry_delay: float, control: Any = None) -> None:
        self._service = service
        self._store = store
        self._control = control  # the control plane: event-invoke configurations and destinations
        self._retry_delay = retry_delay
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempting: set[asyncio.Task[None]] = set()  # tasks whose function is running now
        self._stopping = False
        self._aborted = False
        self.delivered = 0
        self.failed = 0
        self.retries = {"function_error": 0, "throttled": 0}  # attempts after the first, by why

    async def submit(self, invocation: Invocation) -> None:
        """Accept an event: stored before this returns, then delivered in the background. Raises
        ServiceException when the store cannot be written (nothing is queued then: a retry is safe)."""
        stored = _stored(invocation)
        try:
            await self._store.add(stored)
        except EventStoreError as exc:
            raise ServiceException(
                "The Event invocation was not accepted: the service cannot write its event queue "
                f"({exc}). Nothing was queued; retry once the service's data folder can be written."
            ) from None
        self._start(invocation, stored)

    async def resume(self) -> None:
        """Deliver the events a previous run left in the store (the service's functions are deployed)."""
        resumed = discarded = 0
        for stored in await self._store.open():
            function = self._service.registry.version(stored.function, stored.version)
            if function is None:
                discarded += 1
                log.warning(
                    "event.discarded",
                    function=stored.function,
                    version=stored.version,
                    request_id=stored.request_id,
                    reason="the function (or this version of it) no longer exists",
                )
                await self._store.finish(stored.request_id)
                continue
            invocation = Invocation(
                function=function,
                payload=stored.payload,
                version=stored.version,
                invoked_arn=stored.invoked_arn,
                request_id=stored.request_id,
                trace_id=stored.trace_id,
                tenant_id=stored.tenant_id,
            )
            log.debug("event.resumed", function=function.name, request_id=stored.request_id, attempts=stored.attempts)
            self._start(invocation, stored)
            resumed += 1
        if resumed or discarded:
            log.info("events.resumed", count=resumed, discarded=discarded)

    def _start(self, invocation: Invocation, stored: StoredEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(invocation, stored))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    @property
    def running(self) -> int:
        """Events whose function is running right now."""
        return len(self._attempting)

    @property
    def problem(self) -> str | None:
        return self._store.problem

    async def _deliver(self, invocation: Invocation, stored: StoredEvent) -> None:
        bind_request_id(invocation.request_id)  # every attempt's log lines, in this task of its own
        config = (self._control.event_invoke_config(invocation.function) if self._control else None) or {}
        max_attempts = int(config.get("MaximumRetryAttempts", MAX_ATTEMPTS - 1)) + 1
        max_age = float(config.get("MaximumEventAgeInSeconds", MAX_EVENT_AGE_SECONDS))
        failures = stored.attempts
        result = None
        while True:
            if time.time() - stored.enqueued_at > max_age:
                follow_up = self._route(config, invocation, failures, "EventAgeExceeded", result)
                return await self._give_up(invocation, "the event is older than its maximum age", follow_up)
            try:
                result = await self._attempt(invocation)
            except (TooManyRequestsException, ResourceConflictException):
                if self._stopping:
                    return None
                await asyncio.sleep(self._retry_delay)
                self.retries["throttled"] += 1
                invocation = _fresh(invocation)
                continue
            except LambdaServiceError as exc:
                if self._stopping:
                    return None  # "the service is shutting down": kept for the next start
                return await self._give_up(invocation, exc.message, None)
            if result.function_error is None:
                self.delivered += 1
                log.debug("event.delivered", function=invocation.function.name, attempt=failures + 1)
                follow_up = self._route(config, invocation, failures + 1, "Success", result)
                return await self._store.finish(invocation.request_id, follow_up)
            if self._aborted:
                return None  # stopped by the shutdown deadline: not counted, runs again after the restart
            failures += 1
            if failures >= max_attempts:
                follow_up = self._route(config, invocation, failures, "RetriesExhausted", result)
                reason = f"function error {result.error_type} on every attempt"
                return await self._give_up(invocation, reason, follow_up)
            await self._store.attempted(invocation.request_id, failures)
            if self._stopping:
                return None
            log.info(
                "event.retry",
                function=invocation.function.name,
                attempt=failures,
                error_type=result.error_type,
            )
            await asyncio.sleep(self._retry_delay * failures)
            self.retries["function_error"] += 1
            invocation = _fresh(invocation)

    async def _attempt(self, invocation: Invocation) -> Any:
        if self._stopping:
            raise ServiceException("The service is shutting down.")
        task = asyncio.current_task()
        assert task is not None
        self._attempting.add(task)
        try:
            return await self._service.invoke(invocation)
        finally:
            self._attempting.discard(task)

    def _route(
        self, config: dict[str, Any], invocation: Invocation, attempts: int, condition: str, result: Any
    ) -> StoredEvent | None:
        """The invocation record for the OnSuccess / OnFailure destination function, if one is set,
        as the destination's own event (delivered once stored)."""
        kind = "OnSuccess" if condition == "Success" else "OnFailure"
        arn = (config.get("DestinationConfig") or {}).get(kind, {}).get("Destination")
        target = self._control.destination(arn) if arn and self._control else None
        if target is None:
            return None
        record = destination_record(invocation, attempts, condition, result)
        try:
            payload = json.dumps(record).encode()
        except RecursionError:  # a payload nested about as deep as the encoder goes: passed on as text
            payload = json.dumps(destination_record(invocation, attempts, condition, result, as_text=True)).encode()
        routed = Invocation(
            function=target,
            payload=payload,
            invoked_arn=target.arn,
            trace_id=invocation.trace_id,
        )
        stored = _stored(routed)
        self._start(routed, stored)
        return stored

    async def _give_up(self, invocation: Invocation, reason: str, follow_up: StoredEvent | None) -> None:
        self.failed += 1
        log.warning("event.failed", function=invocation.function.name, reason=reason)  # (`_deliver` bound its id)
        await self._store.finish(invocation.request_id, follow_up)

    def stop(self) -> None:
        """The service is stopping: no attempt starts from now on; events not running stay stored."""
        self._stopping = True
        for task in self._tasks - self._attempting:
            task.cancel()

    def abort(self) -> None:
        """The shutdown deadline passed: attempts still running are about to be stopped; they are not
        counted, and run again after the restart."""
        self.stop()
        self._aborted = True

    async def drain(self, timeout: float) -> None:
        """Stop; let running attempts finish within `timeout`; keep everything else for the next start."""
        self.stop()
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=timeout)
            self._aborted = True
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if kept := await self._store.count():
            log.info("event.kept_for_restart", count=kept)
        await self._store.close()


def destination_record(
    invocation: Invocation, attempts: int, condition: str, result: Any, *, as_text: bool = False
) -> dict[str, Any]:
    """The invocation record Lambda sends to a destination (`as_text`: the payloads as text, not JSON)."""
    request_payload = _payload(invocation.payload, as_text)
    response_payload: Any = None
    response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": invocation.version}
    if result is not None:
        response_payload = _payload(result.payload, as_text)
        if result.function_error:
            response_context["functionError"] = result.function_error
    return {
        "version": "1.0",
        "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "requestContext": {
            "requestId": invocation.request_id,
            "functionArn": invocation.function.qualified_arn(invocation.version),
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": request_payload,
        "responseContext": response_context,
        "responsePayload": response_payload,
    }


def _stored(invocation: Invocation) -> StoredEvent:
    return StoredEvent(
        request_id=invocation.request_id,
        function=invocation.function.name,
        version=invocation.version,
        invoked_arn=invocation.invoked_arn,
        payload=invocation.payload,
        trace_id=invocation.trace_id,
        tenant_id=invocation.tenant_id,
        enqueued_at=time.time(),
    )


def _payload(data: bytes, as_text: bool) -> Any:
    if not as_text:
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: Invoke (orjson) takes 1024 levels, the stdlib less
            pass
    return data.decode(errors="replace")


def _fresh(invocation: Invocation) -> Invocation:
    """The same event (same request id) for another attempt."""
    return dataclasses.replace(
        invocation, future=asyncio.get_running_loop().create_future(), log=LogTail(), suppressed_init=False
    )
