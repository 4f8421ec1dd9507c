"""The optional heartbeat: with SANDBOX_HEARTBEAT_URL set, POST the service's status and capacity every
SANDBOX_HEARTBEAT_INTERVAL seconds.

It runs as a background task with a short timeout per POST, so a slow or absent receiver never holds
the service up; a failure is logged (at warning) once when the heartbeat starts failing, or fails
differently, and once (at info) when it recovers, not at every beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import httpx

from . import __version__
from .logs import get_logger

if TYPE_CHECKING:
    from .service import Service

log = get_logger("heartbeat")


def status(service: Service) -> dict[str, Any]:
    """What a beat says: like /health's summary."""
    sessions = service.sessions.describe()
    return {
        "status": "healthy",
        "version": __version__,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "address": f"http://{service.settings.host}:{service.settings.port}",
        "functions": len(service.registry),
        "environments": {"live": service.capacity.live, "limit": service.capacity.limit},
        "sessions": {"live": sessions.get("active", 0), "limit": sessions.get("limit", 0)},
        "timestamp": time.time(),
    }


class Heartbeat:
    def __init__(self, service: Service, url: str, interval: float, *, timeout: float | None = None) -> None:
        self.service = service
        self.url = url
        self.interval = interval
        self.timeout = timeout if timeout is not None else min(5.0, max(0.5, interval / 2))
        self.sent = 0
        self.failed = 0
        self._problem: str | None = None  # why the last beat failed; None while beats succeed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
            while True:
                await self.beat(client)
                await asyncio.sleep(self.interval)

    async def beat(self, client: httpx.AsyncClient) -> bool:
        try:
            response = await client.post(self.url, json=status(self.service))
            problem = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # never let the heartbeat end over an unexpected error
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            self.sent += 1
            if self._problem is not None:
                log.info("heartbeat.recovered", url=self.url)
        else:
            self.failed += 1
            if problem != self._problem:
                log.warning("heartbeat.failed", url=self.url, error=problem, detail="logged again only on a change")
        self._problem = problem
        return problem is None
