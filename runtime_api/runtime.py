"""The Lambda Runtime API (2018-06-01), served to each environment on its own listener.

Each environment's listening socket lives inside that sandbox's network namespace, so a connection
can only come from that sandbox: a connection here serves one environment and nothing else of the
service. Requests are parsed by httptools; responses are rendered here, each in one write and with
header names spelled as Lambda spells them (`Lambda-Runtime-Aws-Request-Id`), which a general
ASGI server would lower-case.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson

from .environment import Environment, RuntimeAPIError
from .invocation import MAX_RESPONSE_BYTES, Invocation

_INVOCATION = "/2018-06-01/runtime/invocation/"
_NEXT = "/2018-06-01/runtime/invocation/next"
_INIT_ERROR = "/2018-06-01/runtime/init/error"
_PING = "/2018-06-01/ping"
_MAX_ERROR_BYTES = 1024 * 1024
_MAX_HEADER_BYTES = 64 * 1024

_ACCEPTED = b'{"status":"OK"}\n'
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Request Entity Too Large", 500: "Internal Server Error"}  # fmt: skip


class RuntimeAPIServer:
    """Creates one asyncio server per environment."""

    async def serve(self, env: Environment, listener: Any) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(lambda: RuntimeAPIProtocol(env), sock=listener)


class _Request:
    __slots__ = ("body", "body_limit", "body_size", "headers", "keep_alive", "method", "path")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_limit = _MAX_ERROR_BYTES
        self.keep_alive = True


class RuntimeAPIProtocol(asyncio.Protocol):
    """One keep-alive connection from a runtime: requests answered one at a time, in order."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._request = _Request()
        self._header_bytes = 0
        self._queue: list[_Request] = []
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            self._write(_render(400, b'{"errorMessage":"Malformed HTTP request","errorType":"BadRequest"}\n'))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._task is not None:
            self._task.cancel()  # e.g. a /next long poll whose runtime went away

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._request = _Request()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._request.path += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise httptools.HttpParserError("header section too large")
        self._request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._request
        request.method = self._parser.get_method().decode("latin-1")
        request.path = request.path.split("?", 1)[0]
        if request.path.endswith("/response"):
            request.body_limit = MAX_RESPONSE_BYTES
        if request.headers.get("expect", "").lower() == "100-continue":
            self._write(_CONTINUE)  # curl otherwise waits a second before sending a body

    def on_body(self, body: bytes) -> None:
        request = self._request
        request.body_size += len(body)
        kept = request.body_size - len(body)
        if kept <= request.body_limit:
            request.body.append(body[: request.body_limit + 1 - kept])  # beyond the limit: counted, dropped

    def on_message_complete(self) -> None:
        self._request.keep_alive = self._parser.should_keep_alive()
        self._queue.append(self._request)
        if self._task is None:
            self._task = self._loop.create_task(self._serve_queue())

    # -- dispatch -------------------------------------------------------------------------------

    async def _serve_queue(self) -> None:
        try:
            while self._queue:
                request = self._queue.pop(0)
                self._write(await self._handle(request))
                if not request.keep_alive:
                    self._close()
                    return
        finally:
            self._task = None

    async def _handle(self, request: _Request) -> bytes:
        path, method = request.path, request.method
        try:
            if path == _NEXT:
                _require(method, "GET")
                return self._render_invocation(await self.env.next_invocation())
            if path.startswith(_INVOCATION):
                request_id, _, action = path[len(_INVOCATION) :].partition("/")
                if action not in ("response", "error"):
                    raise _not_found()
                _require(method, "POST")
                return self._answer(request, request_id, action)
            if path == _INIT_ERROR:
                _require(method, "POST")
                headers = request.headers
                self.env.post_init_error(
                    headers.get("lambda-runtime-function-error-type"),
                    b"".join(request.body),
                    headers.get("content-type"),
                )
                return _render(202, _ACCEPTED)
            if path == _PING:
                _require(method, "GET")
                return _render(200, b"pong", b"text/plain; charset=utf-8")
            raise _not_found()
        except RuntimeAPIError as exc:
            if exc.status == 404:
                return _render(404, b"404 page not found\n", b"text/plain; charset=utf-8")
            if exc.status == 405:
                return _render(405, b"", b"text/plain; charset=utf-8")
            return _render(exc.status, orjson.dumps({"errorMessage": exc.message, "errorType": exc.error_type}) + b"\n")

    def _answer(self, request: _Request, request_id: str, action: str) -> bytes:
        headers = request.headers
        body = b"".join(request.body)
        if action == "response":
            mode = headers.get("lambda-runtime-function-response-mode")
            if mode is not None and mode != "streaming":
                self.env.post_invalid_response_mode(request_id)
                raise RuntimeAPIError(400, "InvalidFunctionResponseMode", "Invalid function response mode")
            self.env.post_response(request_id, body, request.body_size)
        else:
            self.env.post_error(
                request_id, headers.get("lambda-runtime-function-error-type"), body, headers.get("content-type")
            )
        return _render(202, _ACCEPTED)

    def _render_invocation(self, invocation: Invocation) -> bytes:
        payload = invocation.payload
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Lambda-Runtime-Aws-Request-Id: {invocation.request_id}\r\n"
            f"Lambda-Runtime-Deadline-Ms: {invocation.deadline_ms}\r\n"
            f"Lambda-Runtime-Invoked-Function-Arn: {invocation.invoked_arn}\r\n"
            f"Lambda-Runtime-Trace-Id: {invocation.trace_id}\r\n"
        )
        if invocation.client_context is not None:
            head += f"Lambda-Runtime-Client-Context: {invocation.client_context}\r\n"
        if invocation.cognito_identity is not None:
            head += f"Lambda-Runtime-Cognito-Identity: {invocation.cognito_identity}\r\n"
        if invocation.tenant_id is not None:
            head += f"Lambda-Runtime-Aws-Tenant-Id: {invocation.tenant_id}\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        return head.encode("latin-1", errors="replace") + payload

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _render(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nContent-Type: ".encode()
        + content_type
        + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _require(method: str, wanted: str) -> None:
    if method != wanted:
        raise RuntimeAPIError(405, "MethodNotAllowed", "")


def _not_found() -> RuntimeAPIError:
    return RuntimeAPIError(404, "NotFound", "404 page not found")
