"""The Lambda Runtime API (2018-06-01), served to each environment on its own listener, with the
Extensions API (2020-01-01), the Telemetry API (2022-07-01) and the Logs API (2020-08-15, a stub as in
RIE) on the same listener.

Each environment's listening socket lives inside that sandbox's network namespace, so a connection
can only come from that sandbox: a connection here serves one environment and nothing else of the
service. Requests are parsed by httptools; responses are rendered here, each in one write and with
header names spelled as Lambda spells them (`Lambda-Runtime-Aws-Request-Id`), which a general
ASGI server would lower-case.

A /response body is not buffered here: from its headers on it goes, piece by piece, to the
environment's `ResponseSink`, so a streamed response (`Lambda-Runtime-Function-Response-Mode:
streaming`, chunked, errors in trailers) reaches an InvokeWithResponseStream caller as the runtime
writes it. A slow caller pauses reading from the runtime.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any

import httptools
import orjson

from .apierror import RuntimeAPIError
from .environment import Environment, ResponseSink
from .invocation import Invocation
from .logs import get_logger

log = get_logger("runtime")

_INVOCATION = "/2018-06-01/runtime/invocation/"
_NEXT = "/2018-06-01/runtime/invocation/next"
_INIT_ERROR = "/2018-06-01/runtime/init/error"
_PING = "/2018-06-01/ping"
_EXTENSION = "/2020-01-01/extension/"
_TELEMETRY = ("/2022-07-01/telemetry", "/2022-07-01/telemetry/")
_LOGS = ("/2020-08-15/logs", "/2020-08-15/logs/")
_LOGS_STUB = b'{"errorMessage":"Logs API is not supported","errorType":"Logs.NotSupported"}\n'
_MAX_ERROR_BYTES = 1024 * 1024
_MAX_HEADER_BYTES = 64 * 1024
_MAX_TRAILER_BYTES = 2 * _MAX_ERROR_BYTES  # a streamed response's error trailers: its error document in base64

_ACCEPTED = b'{"status":"OK"}\n'
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Request Entity Too Large", 500: "Internal Server Error"}  # fmt: skip


class RuntimeAPIServer:
    """Creates one asyncio server per environment."""

    async def serve(self, env: Environment, listener: Any) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(lambda: RuntimeAPIProtocol(env), sock=listener)


class _Request:
    __slots__ = (
        "body", "body_limit", "body_size", "error", "headers", "held", "keep_alive", "method", "path", "response_id",
        "sink", "trailer_bytes", "trailers",
    )  # fmt: skip

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.trailer_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_limit = _MAX_ERROR_BYTES
        self.keep_alive = True
        self.response_id: str | None = None  # POST /invocation/{id}/response: its body goes to `sink`
        self.sink: ResponseSink | None = None
        self.error: RuntimeAPIError | None = None  # the /response was refused when it began
        self.held: list[bytes] | None = None  # its body, while requests before it are unanswered


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
        # Serving the queue later: after an extension's event/next is answered (a task, which waits for
        # the event), or after a /next's answer written from another connection's call (`_next_ready`).
        self._later: asyncio.Task[None] | asyncio.Handle | None = None
        # A /next waiting for work (with the answer held back to go out with it): `_next_ready` answers it.
        self._parked: tuple[_Request, bytes] | None = None
        self._receiving: _Request | None = None  # the request whose body is arriving
        self._paused: set[str] = set()  # why reading is paused: "held", "drain"

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
            return
        except httptools.HttpParserError:
            self._write(_render(400, b'{"errorMessage":"Malformed HTTP request","errorType":"BadRequest"}\n'))
            self._close()
            return
        # Answered once everything this read brought is parsed: a /response's 202 then goes out with the
        # event of the /next a pipelining runtime sent after it, in one write.
        if self._queue and self._later is None and self._parked is None:
            self._serve_queue()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._later is not None:
            self._later.cancel()
        if self._parked is not None:  # a /next long poll whose runtime went away
            self._parked = None
            self.env.forget_next(self._next_ready)
        self._queue.clear()
        receiving, self._receiving = self._receiving, None
        if receiving is not None and receiving.sink is not None:
            receiving.sink.abort()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._request = self._receiving = _Request()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._request.path += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._request
        if request.method:  # after the header section: a trailer of a chunked body
            request.trailer_bytes += len(name) + len(value)
            if request.trailer_bytes > _MAX_TRAILER_BYTES:
                raise httptools.HttpParserError("trailer section too large")
            request.trailers[name.decode("latin-1").lower()] = value.decode("latin-1")
            return
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise httptools.HttpParserError("header section too large")
        request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._request
        request.method = self._parser.get_method().decode("latin-1")
        request.path = request.path.split("?", 1)[0]
        if request.method == "POST" and request.path.startswith(_INVOCATION):
            request_id, _, action = request.path[len(_INVOCATION) :].partition("/")
            if action == "response":
                request.response_id = request_id
                if not self._busy:
                    self._open_response(request)
                else:  # answer the requests before it first (_serve_queue opens it then)
                    request.held = []
                    self._pause("held")
        if request.headers.get("expect", "").lower() == "100-continue":
            self._write(_CONTINUE)  # curl otherwise waits a second before sending a body

    def on_body(self, body: bytes) -> None:
        request = self._request
        request.body_size += len(body)
        if request.response_id is not None:
            if request.held is not None:
                request.held.append(body)  # at most what one read brought: reading is paused
            elif request.sink is not None:
                self._to_sink(request.sink, body)
            return  # a /response refused when it began: counted, dropped
        kept = request.body_size - len(body)
        if kept <= request.body_limit:
            request.body.append(body[: request.body_limit + 1 - kept])  # beyond the limit: counted, dropped

    def on_message_complete(self) -> None:
        self._request.keep_alive = self._parser.should_keep_alive()
        self._receiving = None
        self._end_response(self._request)  # at once: a /next on another connection must find it answered
        self._queue.append(self._request)  # answered when the read is parsed (`data_received`)

    @property
    def _busy(self) -> bool:
        """A request before the one arriving is still being answered."""
        return self._later is not None or self._parked is not None or bool(self._queue)

    # -- response bodies ------------------------------------------------------------------------

    def _open_response(self, request: _Request) -> None:
        """Hand a /response to the environment; what arrived of its body while it waited goes first."""
        assert request.response_id is not None
        headers = request.headers
        declared = headers.get("content-length", "")
        held, request.held = request.held, None
        try:
            request.sink = self.env.open_response(
                request.response_id,
                headers.get("lambda-runtime-function-response-mode"),
                int(declared) if declared.isdigit() else None,
            )
        except RuntimeAPIError as exc:
            request.error = exc
        if request.sink is not None:
            for piece in held or ():
                self._to_sink(request.sink, piece)
        self._resume("held")

    def _end_response(self, request: _Request) -> None:
        """A /response body (handed over) has ended: the invocation is answered now; the runtime's answer
        waits its turn on the connection."""
        sink, request.sink = request.sink, None
        if sink is not None:
            try:
                sink.finish(request.trailers)
            except RuntimeAPIError as exc:
                request.error = exc

    def _to_sink(self, sink: ResponseSink, piece: bytes) -> None:
        if not sink.write(piece) and "drain" not in self._paused:
            self._pause("drain")  # the caller reads slower than the runtime writes
            sink.when_drained(lambda: self._resume("drain"))

    def _pause(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- dispatch -------------------------------------------------------------------------------

    def _serve_queue(self) -> None:
        """Answer the queued requests in order, until one has to wait: a /next for work (`_next_ready`
        answers it) or an extension's event/next (`_answer_later`)."""
        self._later = None
        held_back = b""  # a /response's or /error's answer, written with the /next's that follows it
        try:
            while self._queue:
                request = self._queue.pop(0)
                if request.held is not None:
                    self._open_response(request)  # its turn has come
                    self._end_response(request)
                answer = self._handle(request)
                if answer is None:  # a /next waiting for work: `_next_ready` answers it, and goes on
                    self._parked, held_back = (request, held_back), b""
                    self.env.wait_next(self._next_ready)
                    return
                if not isinstance(answer, bytes):  # an extension's event/next: answered when its event comes
                    self._later = self._loop.create_task(self._answer_later(request, answer))
                    return
                answer, held_back = held_back + answer, b""
                if not request.keep_alive:
                    self._write(answer)
                    self.env.handed()
                    self._close()
                    return
                if not _answered_by_next(request, self._queue):
                    self._write(answer)
                    self.env.handed()
                elif answer.startswith(b"HTTP/1.1 202 "):
                    held_back = answer  # a pipelining runtime (ours) reads both answers in one go
                else:  # refused: the runtime may stop on it, and must not have taken an event first
                    self._write(answer)
                    self._close()  # one that carries on connects again and asks again
                    return
        finally:
            if held_back:
                self._write(held_back)
        receiving = self._receiving
        if receiving is not None and receiving.held is not None:
            self._open_response(receiving)  # a /response still arriving: its turn has come

    def _next_ready(self) -> None:
        """The environment has work for the waiting /next, or ended: answer it now, in the call that
        assigned the work (the Invoke request's), so the event goes out without another loop turn."""
        if self._parked is None:
            return
        request, held_back = self._parked
        try:
            invocation = self.env.take_next(waited=True)
            if invocation is None:
                self.env.wait_next(self._next_ready)
                return
            answer = _render_event(invocation)
        except RuntimeAPIError as exc:
            answer = _render_error(exc)
        except Exception:
            answer = self._failed(request)
        self._parked = None
        self._write(held_back + answer)
        try:  # nothing may escape into the call that assigned the work (an Invoke request's, a pool's)
            self.env.handed()
            if not request.keep_alive:
                self._close()
            elif self._queue or (self._receiving is not None and self._receiving.held is not None):
                self._later = self._loop.call_soon(self._serve_queue)  # not in the call that assigned the work
        except Exception:
            self._failed(request)  # logged; the connection closes, and the invocation runs to its timeout
            self._close()

    def _handle(self, request: _Request) -> bytes | Coroutine[Any, Any, bytes] | None:
        """The answer to `request`; None for a /next that has to wait for work (`Environment.wait_next`);
        for an extension's event/next, what to await for it (`_answer_later`)."""
        path, method = request.path, request.method
        try:
            if path == _NEXT:
                _require(method, "GET")
                invocation = self.env.take_next()
                return None if invocation is None else _render_event(invocation)
            if path.startswith(_INVOCATION):
                request_id, _, action = path[len(_INVOCATION) :].partition("/")
                if action not in ("response", "error"):
                    raise _not_found()
                _require(method, "POST")
                if action == "response":
                    if request.error is not None:
                        raise request.error  # refused when it began, or when it ended (413)
                else:
                    headers = request.headers
                    self.env.post_error(
                        request_id,
                        headers.get("lambda-runtime-function-error-type"),
                        b"".join(request.body),
                        headers.get("content-type"),
                    )
                return _render(202, _ACCEPTED)
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
            if path.startswith(_EXTENSION):
                return self._extension(request, path[len(_EXTENSION) :])
            if path in _TELEMETRY:
                _require(method, "PUT")
                self.env.subscribe_telemetry(request.headers.get("lambda-extension-identifier"), b"".join(request.body))
                return _render(200, b'"OK"')
            if path in _LOGS:
                _require(method, "PUT")
                if not self.env.extensions.enabled:
                    raise _not_found()
                return _render(202, _LOGS_STUB)  # as RIE: the Logs API is superseded by the Telemetry API
            raise _not_found()
        except RuntimeAPIError as exc:
            return _render_error(exc)
        except Exception:
            return self._failed(request)

    def _failed(self, request: _Request) -> bytes:
        """A bug of ours: the runtime gets the API's documented 500, not a silent connection."""
        path = request.path
        log.exception(
            "runtime.request_failed", method=request.method, path=path, function=self.env.function.name,
            request_id=path[len(_INVOCATION) :].partition("/")[0] if path.startswith(_INVOCATION) else None,
        )  # fmt: skip
        return _render_error(RuntimeAPIError(500, "ServiceException", "An internal error occurred"))

    def _extension(self, request: _Request, action: str) -> bytes | Coroutine[Any, Any, bytes]:
        headers, method = request.headers, request.method
        identifier = headers.get("lambda-extension-identifier")
        if action == "register":
            _require(method, "POST")
            new_id, body = self.env.register_extension(
                headers.get("lambda-extension-name", ""),
                b"".join(request.body),
                headers.get("lambda-extension-accept-feature"),
            )
            return _render(200, body, extra=f"Lambda-Extension-Identifier: {new_id}\r\n")
        if action == "event/next":
            _require(method, "GET")
            return self._extension_event(identifier)
        if action in ("init/error", "exit/error"):
            _require(method, "POST")
            self.env.extension_error(
                identifier, headers.get("lambda-extension-function-error-type"), init=action == "init/error"
            )
            return _render(202, _ACCEPTED)
        raise _not_found()

    async def _extension_event(self, identifier: str | None) -> bytes:
        event = await self.env.extension_next(identifier)
        return _render(200, orjson.dumps(event), extra=f"Lambda-Extension-Event-Identifier: {uuid.uuid4()}\r\n")

    async def _answer_later(self, request: _Request, waiting: Coroutine[Any, Any, bytes]) -> None:
        """Answer a request that waits (an extension's event/next) once it can be; the requests after it
        wait their turn."""
        try:
            try:
                answer = await waiting
            except RuntimeAPIError as exc:
                answer = _render_error(exc)
            except Exception:
                answer = self._failed(request)
        finally:
            self._later = None
        self._write(answer)
        if request.keep_alive:
            self._serve_queue()
        else:
            self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _render_event(invocation: Invocation) -> bytes:
    """A /next's answer. Our bootstrap recognises its head whole when it has no optional header
    (`_SERVICE_EVENT_HEAD` in bootstrap/client.py; a test keeps the two in step)."""
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


def _render(status: int, body: bytes, content_type: bytes = b"application/json", *, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n{extra}Content-Type: ".encode("latin-1")
        + content_type
        + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _answered_by_next(request: _Request, queue: list[_Request]) -> bool:
    """Whether `request` is a /response or /error whose runtime already sent its next `GET /next` (it
    pipelines): its 202 may then wait for the event and go out with it, in one write. A runtime that
    waits for the answer before its /next never has one queued, so it is answered at once."""
    if request.response_id is None and not (request.path.startswith(_INVOCATION) and request.path.endswith("/error")):
        return False
    following = queue[0] if queue else None
    return following is not None and following.path == _NEXT and following.method == "GET"


def _render_error(exc: RuntimeAPIError) -> bytes:
    if exc.status == 404:
        return _render(404, b"404 page not found\n", b"text/plain; charset=utf-8")
    if exc.status == 405:
        return _render(405, b"", b"text/plain; charset=utf-8")
    return _render(exc.status, orjson.dumps({"errorMessage": exc.message, "errorType": exc.error_type}) + b"\n")


def _require(method: str, wanted: str) -> None:
    if method != wanted:
        raise RuntimeAPIError(405, "MethodNotAllowed", "")


def _not_found() -> RuntimeAPIError:
    return RuntimeAPIError(404, "NotFound", "404 page not found")
