"""Asynchronous (`Event`) invocations: accepted at once, run in the background, retried as Lambda does.

A function error is retried twice (three attempts in all) after a short, configurable delay that
grows with each attempt; a throttle is retried until the event is older than its maximum age. Events
are held in memory while the service runs; on shutdown the queue is drained within the deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from .errors import LambdaServiceError, TooManyRequestsException
from .invocation import Invocation, LogTail
from .logs import get_logger

log = get_logger("events")

MAX_ATTEMPTS = 3
MAX_EVENT_AGE_SECONDS = 6 * 3600


class EventQueue:
    def __init__(self, service: Any, *, retry_delay: float) -> None:
        self._service = service
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
        attempt = 1
        while True:
            try:
                result = await self._service.invoke(invocation)
            except TooManyRequestsException:
                if time.monotonic() - accepted > MAX_EVENT_AGE_SECONDS:
                    return self._give_up(invocation, "throttled until the maximum event age")
                await asyncio.sleep(self._retry_delay)
                invocation = _fresh(invocation)
                continue
            except LambdaServiceError as exc:
                return self._give_up(invocation, exc.message)
            if result.function_error is None:
                self.delivered += 1
                log.debug("event.delivered", request_id=invocation.request_id, attempt=attempt)
                return None
            if attempt >= MAX_ATTEMPTS:
                return self._give_up(invocation, f"function error {result.error_type} on every attempt")
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


def _fresh(invocation: Invocation) -> Invocation:
    """The same event (same request id) for another attempt."""
    return dataclasses.replace(
        invocation, future=asyncio.get_running_loop().create_future(), log=LogTail(), suppressed_init=False
    )
