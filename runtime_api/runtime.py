"""The Lambda Runtime API (2018-06-01), served to each environment on its own listener.

Each environment's listening socket lives inside that sandbox's network namespace, so a connection
can only come from that sandbox: the app below is bound to one environment and serves nothing else
of the service. The HTTP layer is uvicorn's (httptools) protocol, fed this app directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn import Config
from uvicorn.server import ServerState

from .environment import Environment, RuntimeAPIError
from .invocation import MAX_RESPONSE_BYTES

_PREFIX = "/2018-06-01"
_NEXT = "/2018-06-01/runtime/invocation/next"
_INVOCATION = "/2018-06-01/runtime/invocation/"
_INIT_ERROR = "/2018-06-01/runtime/init/error"
_PING = "/2018-06-01/ping"
_MAX_ERROR_BYTES = 1024 * 1024

_JSON = (b"content-type", b"application/json")
_ACCEPTED = b'{"status":"OK"}\n'


class RuntimeAPIServer:
    """Creates one asyncio server per environment, all sharing one loaded uvicorn configuration."""

    def __init__(self) -> None:
        self._config = Config(
            app=_unused,
            http="httptools",
            lifespan="off",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            log_config=None,
        )
        self._config.load()
        self._state = ServerState()

    async def serve(self, env: Environment, listener: Any) -> asyncio.Server:
        app = RuntimeAPI(env)
        config, state, protocol_class = self._config, self._state, self._config.http_protocol_class

        def protocol() -> asyncio.Protocol:
            proto = protocol_class(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
            proto.app = app  # this connection serves this environment and nothing else
            return proto

        return await asyncio.get_running_loop().create_server(protocol, sock=listener)


async def _unused(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - replaced per connection
    raise RuntimeError("the Runtime API app is bound per environment")


class RuntimeAPI:
    __slots__ = ("env",)

    def __init__(self, env: Environment) -> None:
        self.env = env

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == _NEXT:
                _require(method, "GET")
                await self._next(send)
            elif path.startswith(_INVOCATION):
                request_id, _, action = path[len(_INVOCATION) :].partition("/")
                if action not in ("response", "error"):
                    raise _not_found()
                _require(method, "POST")
                await self._answer(scope, receive, send, request_id, action)
            elif path == _INIT_ERROR:
                _require(method, "POST")
                body, _ = await _read_body(receive, _MAX_ERROR_BYTES)
                headers = _headers(scope)
                self.env.post_init_error(
                    headers.get("lambda-runtime-function-error-type"), body, headers.get("content-type")
                )
                await _send(send, 202, _ACCEPTED)
            elif path == _PING:
                _require(method, "GET")
                await _send(send, 200, b"pong", content_type=b"text/plain; charset=utf-8")
            else:
                raise _not_found()
        except RuntimeAPIError as exc:
            if exc.status == 404:
                await _send(send, 404, b"404 page not found\n", content_type=b"text/plain; charset=utf-8")
            elif exc.status == 405:
                await _send(send, 405, b"", content_type=b"text/plain; charset=utf-8")
            else:
                body = orjson.dumps({"errorMessage": exc.message, "errorType": exc.error_type}) + b"\n"
                await _send(send, exc.status, body)

    async def _next(self, send: Any) -> None:
        invocation = await self.env.next_invocation()
        headers = [
            _JSON,
            (b"lambda-runtime-aws-request-id", invocation.request_id.encode()),
            (b"lambda-runtime-deadline-ms", str(invocation.deadline_ms).encode()),
            (b"lambda-runtime-invoked-function-arn", invocation.invoked_arn.encode()),
            (b"lambda-runtime-trace-id", invocation.trace_id.encode()),
        ]
        if invocation.client_context is not None:
            headers.append((b"lambda-runtime-client-context", invocation.client_context.encode()))
        if invocation.cognito_identity is not None:
            headers.append((b"lambda-runtime-cognito-identity", invocation.cognito_identity.encode()))
        if invocation.tenant_id is not None:
            headers.append((b"lambda-runtime-aws-tenant-id", invocation.tenant_id.encode()))
        payload = invocation.payload
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Any, receive: Any, send: Any, request_id: str, action: str) -> None:
        headers = _headers(scope)
        if action == "response":
            mode = headers.get("lambda-runtime-function-response-mode")
            if mode is not None and mode != "streaming":
                self.env.post_invalid_response_mode(request_id)
                raise RuntimeAPIError(400, "InvalidFunctionResponseMode", "Invalid function response mode")
            body, size = await _read_body(receive, MAX_RESPONSE_BYTES)
            self.env.post_response(request_id, body, size)
        else:
            body, _ = await _read_body(receive, _MAX_ERROR_BYTES)
            self.env.post_error(
                request_id,
                headers.get("lambda-runtime-function-error-type"),
                body,
                headers.get("content-type"),
            )
        await _send(send, 202, _ACCEPTED)


def _require(method: str, wanted: str) -> None:
    if method != wanted:
        raise RuntimeAPIError(405, "MethodNotAllowed", "")


def _not_found() -> RuntimeAPIError:
    return RuntimeAPIError(404, "NotFound", "404 page not found")


def _headers(scope: Any) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}


async def _read_body(receive: Any, limit: int) -> tuple[bytes, int]:
    """The body up to `limit` bytes, and its full size (the rest is read and dropped, never held)."""
    chunks: list[bytes] = []
    kept = size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if kept < limit + 1 and chunk:
            piece = chunk[: limit + 1 - kept]
            chunks.append(piece)
            kept += len(piece)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), size


async def _send(send: Any, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
