"""`/mcp` on `serve`: the MCP tools (`mcp_server`) over MCP's streamable HTTP transport, inside the app.

The `mcp` SDK takes about a second to import, which a service whose clients never speak MCP should not pay
at every start. So the endpoint loads it on its first request (in a thread: invocations go on meanwhile),
and then runs the SDK's session manager in a task of its own until the app's lifespan ends: `close` stops
it (ending the MCP sessions) before the service stops its sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import Any

from starlette.types import Receive, Scope, Send

from .logs import detached, get_logger

log = get_logger("mcp")


class MCPEndpoint:
    """An ASGI app for `/mcp` (all methods: POST, GET, DELETE, as the transport uses them)."""

    def __init__(self, service: Any, *, host: str) -> None:
        self.service = service
        self.host = host
        self._starting: asyncio.Future[Any] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = await self._manager(scope)
        await manager.handle_request(scope, receive, send)

    async def _manager(self, scope: Scope) -> Any:
        if self._starting is None:
            # The manager's tasks serve every later MCP request: not in the first request's context.
            self._starting = detached(self._start(scope["app"].state))
        return await asyncio.shield(self._starting)

    async def _start(self, state: Any) -> Any:
        module = await asyncio.to_thread(importlib.import_module, "runtime_api.mcp_server")
        # The agent session manager, on the service or the app's state, once it is running: session tools.
        sessions = module.sessions_of(self.service, state)
        manager = module.http_manager(self.service, host=self.host, sessions=sessions)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._runner = asyncio.create_task(self._run(manager, started, self._stop))
        await started
        log.info("mcp.http_ready", path="/mcp")
        return manager

    @staticmethod
    async def _run(manager: Any, started: asyncio.Future[None], stop: asyncio.Event) -> None:
        # Entered and left in this one task, as the SDK's task groups require.
        try:
            async with manager.run():
                started.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    async def close(self) -> None:
        """End the MCP sessions (part of the app's shutdown, before the service closes)."""
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await self._starting
        if self._runner is not None and self._stop is not None:
            self._stop.set()
            with contextlib.suppress(Exception):
                await self._runner
