"""The Telemetry API (2022-07-01): subscriptions from extensions, and the delivery of their batches.

An extension subscribes (PUT /2022-07-01/telemetry) with the event types it wants (platform,
function, extension), buffering bounds and an HTTP destination inside the sandbox
(http://sandbox.localdomain:<port>/<path>). Events are then POSTed to it as JSON arrays: a batch goes
out when it holds maxItems events, when one more would pass maxBytes, or timeoutMs after its first
event. The service reaches the subscriber's listener inside the sandbox's network namespace
(`Sandbox.connect`): the sandbox never gets a way out to the host.

Subscriptions are taken during init only (as Lambda and RIE do); what happened in the init phase
before a subscription (platform.initStart, the init's function output, ...) is kept until init ends
and handed to each subscriber when it subscribes, so it sees its environment's whole init.
Delivery is at most once: a batch the subscriber does not take (refused connection, error status,
timeout) is dropped and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from .apierror import RuntimeAPIError
from .logs import get_logger

log = get_logger("telemetry")

SCHEMA_VERSIONS = ("2022-07-01", "2022-12-13", "2025-01-29")
CATEGORIES = ("platform", "function", "extension")
_HOSTS = ("sandbox.localdomain", "sandbox")
_BOUNDS = {"maxItems": (1000, 10000, 10000), "maxBytes": (262144, 1048576, 262144), "timeoutMs": (25, 30000, 1000)}
_BACKLOG_ITEMS = 10000
_BACKLOG_BYTES = 1024 * 1024
_OUTBOX = 64  # batches waiting for a slow subscriber; past that the oldest is dropped
_SEND_TIMEOUT = 5.0
_RESERVED_PORTS = (9001,)  # the Runtime API itself

Connect = Callable[[int, float], socket.socket]


def timestamp(at: float | None = None) -> str:
    """Lambda's event time: ISO 8601, UTC, milliseconds."""
    moment = datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _invalid(message: str) -> RuntimeAPIError:
    return RuntimeAPIError(400, "ValidationError", message)


class Subscription:
    """What one extension subscribed to, and its batch on the way."""

    def __init__(self, name: str, types: frozenset[str], buffering: dict[str, int], port: int, path: str) -> None:
        self.name = name
        self.types = types
        self.max_items = buffering["maxItems"]
        self.max_bytes = buffering["maxBytes"]
        self.timeout = buffering["timeoutMs"] / 1000
        self.port = port
        self.path = path
        self.batch: list[bytes] = []
        self.size = 0
        self.timer: asyncio.TimerHandle | None = None
        self.outbox: deque[list[bytes]] = deque()
        self.sender: asyncio.Task[None] | None = None


def parse_subscription(name: str, body: bytes) -> Subscription:
    """A PUT /telemetry body, validated as the Telemetry API does (400 ValidationError otherwise)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"failed to parse JSON: {exc}") from None
    if not isinstance(request, dict):
        raise _invalid("the subscription must be a JSON object")
    if request.get("schemaVersion") not in SCHEMA_VERSIONS:
        raise _invalid(f"schemaVersion must be one of {', '.join(SCHEMA_VERSIONS)}")
    types = request.get("types")
    if not isinstance(types, list) or not types or any(kind not in CATEGORIES for kind in types):
        raise _invalid(f"types must be a non-empty list of {', '.join(CATEGORIES)}")
    buffering = request.get("buffering") or {}
    if not isinstance(buffering, dict):
        raise _invalid("buffering must be an object")
    bounds = {}
    for key, (low, high, default) in _BOUNDS.items():
        value = buffering.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _invalid(f"buffering.{key} must be an integer from {low} to {high}")
        bounds[key] = value
    destination = request.get("destination")
    if not isinstance(destination, dict):
        raise _invalid("destination is required")
    if destination.get("protocol") != "HTTP":
        raise _invalid("destination.protocol must be HTTP (TCP destinations are not supported here)")
    uri = destination.get("URI")
    if not isinstance(uri, str) or not uri:
        raise _invalid("destination.URI is required")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise _invalid(f"Invalid destination: could not parse destination.URI: {exc}") from None
    if parts.scheme != "http" or parts.hostname not in _HOSTS:
        raise _invalid("Invalid destination: destination.URI host must be sandbox.localdomain")
    if port is None or port in _RESERVED_PORTS:
        raise _invalid("Invalid destination: destination.URI needs a port of the extension's own listener")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Subscription(name, frozenset(types), bounds, port, path)


class Telemetry:
    """One environment's subscriptions. `connect` reaches a port inside the sandbox (blocking)."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.subscriptions: dict[str, Subscription] = {}  # by extension name
        self._subscribed: frozenset[str] = frozenset()  # the categories some subscription takes
        self.connect: Connect | None = None
        self._backlog: list[tuple[str, bytes]] | None = []  # (category, event) until init ends
        self._backlog_size = 0
        self._closed = False
        self.dropped = 0

    def wants(self, category: str) -> bool:
        """Whether an event of this category would go anywhere (a subscriber, or the init backlog)."""
        return self._backlog is not None or category in self._subscribed

    def subscribe(self, subscription: Subscription) -> None:
        old = self.subscriptions.pop(subscription.name, None)
        if old is not None:
            self._discard(old)
        for category, event in self._backlog or ():
            if category in subscription.types:
                self._add(subscription, event)
        self.subscriptions[subscription.name] = subscription
        self._subscribed = frozenset().union(*(sub.types for sub in self.subscriptions.values()))
        self.emit(
            "platform",
            "platform.telemetrySubscription",
            {"name": subscription.name, "state": "Subscribed", "types": sorted(subscription.types)},
        )

    def end_backlog(self) -> None:
        """Init is over: no more subscriptions, so the init's events need not be kept."""
        self._backlog = None

    def emit(self, category: str, kind: str, record: Any, at: float | None = None) -> None:
        if self._closed or not self.wants(category):
            return
        event = orjson.dumps({"time": timestamp(at), "type": kind, "record": record})
        if self._backlog is not None:
            if len(self._backlog) < _BACKLOG_ITEMS and self._backlog_size + len(event) <= _BACKLOG_BYTES:
                self._backlog.append((category, event))
                self._backlog_size += len(event)
            else:
                self.dropped += 1
        for subscription in self.subscriptions.values():
            if category in subscription.types:
                self._add(subscription, event)

    def flush(self) -> None:
        """Send what is buffered now (before a SHUTDOWN)."""
        for subscription in self.subscriptions.values():
            self._flush(subscription)

    def close(self) -> None:
        self._closed = True
        self._backlog = None
        for subscription in self.subscriptions.values():
            self._discard(subscription)

    # -- batching ---------------------------------------------------------------------------------

    def _add(self, subscription: Subscription, event: bytes) -> None:
        if subscription.batch and subscription.size + len(event) + 1 > subscription.max_bytes:
            self._flush(subscription)  # one more would pass maxBytes
        subscription.batch.append(event)
        subscription.size += len(event) + 1
        if len(subscription.batch) >= subscription.max_items or subscription.size >= subscription.max_bytes:
            self._flush(subscription)
        elif subscription.timer is None:
            loop = asyncio.get_running_loop()
            subscription.timer = loop.call_later(subscription.timeout, self._flush, subscription)

    def _flush(self, subscription: Subscription) -> None:
        if subscription.timer is not None:
            subscription.timer.cancel()
            subscription.timer = None
        if not subscription.batch or self._closed:
            return
        batch, subscription.batch, subscription.size = subscription.batch, [], 0
        if len(subscription.outbox) >= _OUTBOX:
            dropped = subscription.outbox.popleft()
            self._dropped(subscription, len(dropped), "the subscriber is slower than the events")
        subscription.outbox.append(batch)
        if subscription.sender is None or subscription.sender.done():
            subscription.sender = asyncio.get_running_loop().create_task(self._send_all(subscription))

    def _discard(self, subscription: Subscription) -> None:
        if subscription.timer is not None:
            subscription.timer.cancel()
            subscription.timer = None
        subscription.batch = []
        subscription.outbox.clear()
        if subscription.sender is not None:
            subscription.sender.cancel()

    def _dropped(self, subscription: Subscription, events: int, reason: str) -> None:
        self.dropped += events
        log.info(
            "telemetry.dropped",
            function=self.function_name,
            extension=subscription.name,
            events=events,
            reason=reason,
        )

    async def _send_all(self, subscription: Subscription) -> None:
        while subscription.outbox and not self._closed:
            batch = subscription.outbox.popleft()
            body = b"[" + b",".join(batch) + b"]"
            try:
                status = await asyncio.wait_for(self._post(subscription, body), _SEND_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                self._dropped(subscription, len(batch), f"could not send events: {exc or type(exc).__name__}")
                continue
            if status >= 400:
                self._dropped(subscription, len(batch), f"the subscriber answered {status}")

    async def _post(self, subscription: Subscription, body: bytes) -> int:
        """POST one batch; the subscriber's status code."""
        if self.connect is None:
            raise ConnectionRefusedError("the sandbox is not running")
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, self.connect, subscription.port, _SEND_TIMEOUT)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(
                f"POST {subscription.path} HTTP/1.1\r\nHost: sandbox.localdomain:{subscription.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line = head.split(b"\r\n", 1)[0].split()
            if len(status_line) < 2 or not status_line[1].isdigit():
                raise ValueError("not an HTTP answer")
            return int(status_line[1])
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("the subscriber closed the connection before answering") from None
        except asyncio.LimitOverrunError:
            raise ValueError("the subscriber's answer is too large") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
