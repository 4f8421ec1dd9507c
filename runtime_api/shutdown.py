"""Graceful shutdown on SIGTERM / SIGINT: uvicorn's server, run to the service's deadline.

1. The listener closes (new connections are refused), idle keep-alive connections close and busy
   ones close after their answer; the Event queue starts no new attempt (what waits stays stored).
2. Requests in flight (RequestResponse invokes, ...) and Event attempts already running have until
   SANDBOX_SHUTDOWN_TIMEOUT to finish; their callers get their answers.
3. At the deadline every sandbox still running is stopped: each invoke still waiting is answered
   with the function error that ends it (200, X-Amz-Function-Error: Unhandled, Runtime.ExitError
   "the service is shutting down"), not a dropped connection; a request that still has no answer a
   moment later is cancelled (uvicorn's way: the connection closes).
4. The app's own shutdown: sessions and sandboxes stopped, the event store closed. Exit status 0.

A second SIGTERM or SIGINT skips the waiting: straight to 3 and 4.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from .logs import get_logger

log = get_logger("shutdown")

ANSWER_GRACE_SECONDS = 2.0  # after the deadline, for answers of stopped invocations to go out
_POLL_SECONDS = 0.05


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, app: Any, service: Any, timeout: float) -> None:
        super().__init__(config)
        self._app = app
        self._service = service
        self._timeout = timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        forcing = self.should_exit
        super().handle_exit(sig, frame)
        if forcing and not self.force_exit:
            self.force_exit = True  # uvicorn forces on a second SIGINT only; any second signal here

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        events = getattr(self._app.state, "events", None)
        log.info("service.stopping", deadline_seconds=self._timeout, requests=len(self.server_state.tasks))
        if events is not None:
            events.stop()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()

        def busy() -> bool:
            return bool(self.server_state.tasks) or bool(events is not None and events.running)

        await self._until(deadline, lambda: not busy())
        if busy():
            log.warning(
                "service.stopping_in_flight",
                forced=self.force_exit,
                requests=len(self.server_state.tasks),
                events=events.running if events is not None else 0,
            )
            if events is not None:
                events.abort()
            cause = "the service is shutting down: the invocation was stopped before it finished"
            await self._service.stop_invocations(cause)
            await self._until(loop.time() + ANSWER_GRACE_SECONDS, lambda: not self.server_state.tasks, force=True)
            for task in self.server_state.tasks:
                task.cancel(msg="the service is shutting down")
        await self.lifespan.shutdown()

    async def _until(self, deadline: float, done: Callable[[], bool], *, force: bool = False) -> None:
        """Wait until `done()` or the deadline (or, unless `force`, a second signal)."""
        loop = asyncio.get_running_loop()
        while not done() and loop.time() < deadline and (force or not self.force_exit):
            await asyncio.sleep(_POLL_SECONDS)
