"""Asynchronous (`Event`) invocations: accepted at once, run in the background, retried as Lambda does.

A function error is retried twice (three attempts in all, or MaximumRetryAttempts + 1 from the
function's event-invoke configuration) after a short, configurable delay that grows with each
attempt; a throttle is retried until the event is older than its maximum age (6 hours, or
MaximumEventAgeInSeconds). The outcome goes to the configured OnSuccess / OnFailure destination
when that is another function, as an invocation record in Lambda's format. Events are held in
memory while the service runs; on shutdown the queue is drained within the deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from typing import Any

from .errors import LambdaServiceError, TooManyRequestsException
from .invocation import Invocation, LogTail
from .logs import get_logger

log = get_logger("events")

MAX_ATTEMPTS = 3
MAX_EVENT_AGE_SECONDS = 6 * 3600


class EventQueue:
    def __init__(self, service: Any, *, retry_delay: float, control: Any = None) -> None:
        self._service = service
        self._control = control  # the control plane: event-invoke configurations and destinations
        self._retry_delay = retry_delay
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0

    def submit(self, invocation: Invocation) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(invocation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def _deliver(self, invocation: Invocation) -> None:
        accepted = time.monotonic()
        config = (self._control.event_invoke_config(invocation.function) if self._control else None) or {}
        max_attempts = int(config.get("MaximumRetryAttempts", MAX_ATTEMPTS - 1)) + 1
        max_age = float(config.get("MaximumEventAgeInSeconds", MAX_EVENT_AGE_SECONDS))
        attempt = 1
        while True:
            try:
                result = await self._service.invoke(invocation)
            except TooManyRequestsException:
                if time.monotonic() - accepted > max_age:
                    self._route(config, invocation, attempt, "EventAgeExceeded", None)
                    return self._give_up(invocation, "throttled until the maximum event age")
                await asyncio.sleep(self._retry_delay)
                invocation = _fresh(invocation)
                continue
            except LambdaServiceError as exc:
                return self._give_up(invocation, exc.message)
            if result.function_error is None:
                self.delivered += 1
                log.debug("event.delivered", request_id=invocation.request_id, attempt=attempt)
                self._route(config, invocation, attempt, "Success", result)
                return None
            if attempt >= max_attempts:
                self._route(config, invocation, attempt, "RetriesExhausted", result)
                return self._give_up(invocation, f"function error {result.error_type} on every attempt")
            if time.monotonic() - accepted > max_age:
                self._route(config, invocation, attempt, "EventAgeExceeded", result)
                return self._give_up(invocation, "the event is older than its maximum age")
            log.info(
                "event.retry",
                function=invocation.function.name,
                request_id=invocation.request_id,
                attempt=attempt,
                error_type=result.error_type,
            )
            await asyncio.sleep(self._retry_delay * attempt)
            attempt += 1
            invocation = _fresh(invocation)

    def _route(
        self, config: dict[str, Any], invocation: Invocation, attempts: int, condition: str, result: Any
    ) -> None:
        """Send the invocation record to the OnSuccess / OnFailure destination function, if one is set."""
        kind = "OnSuccess" if condition == "Success" else "OnFailure"
        arn = (config.get("DestinationConfig") or {}).get(kind, {}).get("Destination")
        target = self._control.destination(arn) if arn and self._control else None
        if target is None:
            return
        record = destination_record(invocation, attempts, condition, result)
        try:
            payload = json.dumps(record).encode()
        except RecursionError:  # a payload nested about as deep as the encoder goes: passed on as text
            payload = json.dumps(destination_record(invocation, attempts, condition, result, as_text=True)).encode()
        self.submit(
            Invocation(
                function=target,
                payload=payload,
                invoked_arn=target.arn,
                trace_id=invocation.trace_id,
            )
        )

    def _give_up(self, invocation: Invocation, reason: str) -> None:
        self.failed += 1
        log.warning("event.failed", function=invocation.function.name, request_id=invocation.request_id, reason=reason)

    async def drain(self, timeout: float) -> None:
        """Let queued events finish within `timeout`; report any that could not."""
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in unfinished:
            task.cancel()
        if unfinished:
            log.error("event.lost_on_shutdown", count=len(unfinished))


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
