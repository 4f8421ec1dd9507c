"""The service's end of a session agent's connection (the agent is bootstrap/session_agent.py).

The session's sandbox gets the usual listener at 127.0.0.1:9001 inside its network namespace
(`sandbox/netns.py`); the agent connects to it when it starts, and that one connection is the
session's channel: the service sends JSON lines (`{"type": "exec", "id": N, ...}`) and the agent
answers each by its id, in any order. Only the first connection is accepted: the listener closes then.

Everything the agent sends is untrusted (the session's code runs as the same uid and may replace
it): lines are bounded, replies are matched by id and checked by the caller, and a malformed line
closes the channel, which ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import Callable
from typing import Any

import orjson

# Two outputs of 1 MiB, JSON-escaped at worst 6 bytes a byte, and a 6 MB result: a generous bound.
LINE_LIMIT = 64 * 1024 * 1024


class AgentGone(Exception):
    """The agent's connection closed (its sandbox ended, or it broke the protocol)."""


class AgentChannel:
    """One agent connection: `request` sends a message and waits for the reply with its id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[int, Callable[[dict[str, Any]], None]] = {}  # "output" messages, by request id
        self.hello: dict[str, Any] = {}
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reading: asyncio.Task[None] | None = None

    async def start(self, timeout: float) -> None:
        """Wait for the agent's hello, then read replies in the background."""
        line = await asyncio.wait_for(self._reader.readline(), timeout)
        hello = _decode(line)
        if hello is None or hello.get("type") != "hello":
            raise AgentGone(f"the agent did not say hello: {line[:200]!r}")
        self.hello = hello
        self._reading = asyncio.get_running_loop().create_task(self._read_forever())

    async def request(
        self, message: dict[str, Any], on_output: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Send `message` (given an id here) and wait for its reply; AgentGone if the channel closes first.
        `on_output` gets the `{"type": "output", ...}` messages the agent sends for it meanwhile."""
        if self.closed.done():
            raise AgentGone(self.closed.result())
        message_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = reply
        if on_output is not None:
            self._listeners[message_id] = on_output
        try:
            self._writer.write(_encode({**message, "id": message_id}) + b"\n")
            await self._writer.drain()
            return await reply
        except (ConnectionError, OSError) as exc:
            self._close(f"the agent's connection failed: {exc}")
            raise AgentGone(str(exc)) from None
        finally:
            self._waiting.pop(message_id, None)
            self._listeners.pop(message_id, None)

    async def _read_forever(self) -> None:
        reason = "the agent closed its connection"
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                message = _decode(line)
                if message is None:
                    reason = f"the agent sent a malformed line: {line[:200]!r}"
                    break
                if message.get("type") == "output":
                    listener = self._listeners.get(message.get("id"))  # type: ignore[arg-type]
                    if listener is not None:
                        listener(message)
                    continue
                waiting = self._waiting.get(message.get("id"))  # type: ignore[arg-type]
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
        except (ValueError, asyncio.LimitOverrunError):
            reason = f"the agent sent a line over {LINE_LIMIT} bytes"
        except (ConnectionError, OSError) as exc:
            reason = f"the agent's connection failed: {exc}"
        self._close(reason)

    def _close(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(AgentGone(reason))
        self._writer.close()

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        self._close("closed by the service")


async def accept_agent(listener: socket.socket, timeout: float) -> AgentChannel:
    """Serve `listener` until the agent connects and says hello (within `timeout` seconds); the
    listener is closed then, so nothing else in the sandbox can connect."""
    loop = asyncio.get_running_loop()
    connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = loop.create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connected.done():
            writer.close()
        else:
            connected.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, sock=listener, limit=LINE_LIMIT)
    try:
        reader, writer = await asyncio.wait_for(connected, timeout)
    finally:
        server.close()
        if not connected.done():
            connected.cancel()
    channel = AgentChannel(reader, writer)
    try:
        await channel.start(timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            channel.close()
        raise
    return channel


def _encode(message: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(message)
    except TypeError:  # integers beyond 64 bits, which JSON (and Python) allow
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            message = json.loads(line)  # integers beyond 64 bits
        except ValueError:
            return None
    return message if isinstance(message, dict) else None
