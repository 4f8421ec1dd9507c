"""The HTTP service: routes, AWS-shaped error rendering, and the service's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import __version__
from .catalog import Store
from .control import ControlPlane
from .control import routes as control_routes
from .errors import LambdaServiceError, MethodNotAllowedException, ServiceException, UnknownOperationException
from .event_store import EventStore
from .events import EventQueue
from .heartbeat import Heartbeat
from .invocation import Invocation, new_request_id
from .invoke import (
    Deferred,
    InvokeCall,
    answer_headers,
    finish_invoke,
    first_headers,
    invoke,
    invoke_async,
    invoke_call,
    invoke_path_function,
    invoke_with_response_stream,
    start_invoke,
)
from .logs import bind_request_id, get_logger
from .mcp_http import MCPEndpoint
from .metrics import CONTENT_TYPE_LATEST
from .openapi import openapi
from .service import Service, StartupError
from .session_errors import InvalidRequestError
from .session_routes import PREFIX as SESSIONS_PREFIX
from .session_routes import routes as session_routes
from .status_page import routes as status_routes
from .template_reload import TemplateLoader, TemplateReloader

log = get_logger("app")

EVENTS_DB = "events.db"  # the Event queue, in SANDBOX_DATA_DIR (`event_store`)


class RequestIdMiddleware:
    """Every request gets the id that `x-amzn-RequestId` (and the invocation) will carry, and every
    event logged while it is handled carries it as `request_id`. Answers that do not name it themselves
    (the sessions API, /health, /metrics) get the header here, so any request's log lines can be found."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.setdefault("state", {})["request_id"] = new_request_id()
        bind_request_id(request_id)
        header = (_REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if all(name.lower() != _REQUEST_ID_HEADER for name, _ in headers):
                    message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


_REQUEST_ID_HEADER = b"x-amzn-requestid"


class InvokeFastPath:
    """Invoke (`POST /2015-03-31/functions/{FunctionName}/invocations`), the hot route, answered straight
    from the ASGI scope in front of the Starlette app: no routing over every route, middleware
    stack or Request object, for the same answer (`invoke_call`) and the same error rendering.
    Everything else, Invoke's other methods (405) included, goes to the app."""

    def __init__(self, app: Starlette, service: Service) -> None:
        self.app = app
        self.state = app.state
        self._service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if (function_name := invoke_path_function(path)) is not None:
                await self._invoke(scope, receive, send, function_name)
                return
        await self.app(scope, receive, send)

    async def _invoke(self, scope: Any, receive: Any, send: Any, function_name: str) -> None:
        headers = first_headers(scope["headers"])  # lower-case names already (uvicorn)
        try:
            response = await self.answer(function_name, scope["query_string"], headers, _body(receive))
        except _ClientGone:
            return
        await response(scope, receive, send)

    async def answer(
        self, function_name: str, query: bytes, headers: dict[str, str], body: bytes | AsyncIterator[bytes]
    ) -> Response:
        """Invoke's answer, errors included; `headers` by lower-case name. Runs in a task of its own
        (uvicorn's), where the request id is bound for the log."""
        call = _call(function_name, query, headers, body)
        try:
            return await invoke_call(self._service, self.state.events, call)
        except _ClientGone:
            raise
        except Exception as exc:
            return _failed(call, exc)

    def start(
        self, function_name: str, query: bytes, headers: dict[str, str], body: bytes
    ) -> Invocation | Response | Deferred:
        """`answer` as far as it goes without waiting (`invoke.start_invoke`), for the service's HTTP
        protocol (`http_protocol`), which takes small Invoke requests off the ASGI path: the answer now,
        or the invocation whose result `finished` answers; `Deferred` (an Event, a function being
        reloaded) for `answer_deferred`, in a task. Binds the request id in the current context, as
        `answer` does in its task."""
        call = _call(function_name, query, headers, body)
        try:
            return start_invoke(self._service, call)
        except Exception as exc:
            return _failed(call, exc)

    async def answer_deferred(self, deferred: Deferred) -> Response:
        """The answer to what `start` made but could not hand over without waiting, errors included."""
        try:
            return await finish_invoke(self._service, self.state.events, deferred)
        except Exception as exc:
            return _failed(deferred.invocation, exc)

    @staticmethod
    def finished(invocation: Invocation) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer (status, headers, body) to an invocation `start` handed to its pool, once its
        future is done."""
        try:
            result = invocation.future.result()
        except Exception as exc:
            response = _failed(invocation, exc)
            return response.status_code, response.raw_headers, bytes(response.body)
        return 200, answer_headers(invocation, result), result.payload


def _call(function_name: str, query: bytes, headers: dict[str, str], body: bytes | AsyncIterator[bytes]) -> InvokeCall:
    request_id = new_request_id()
    bind_request_id(request_id)
    qualifier = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)).get("Qualifier") if query else None
    return InvokeCall(function_name, qualifier, headers, body, request_id)


def _failed(call: InvokeCall | Invocation, exc: Exception) -> Response:
    """Invoke's answer to an error: the AWS error shape; anything unexpected is logged and a ServiceException."""
    if isinstance(exc, LambdaServiceError):
        return _error_response(call.request_id, exc)
    name = call.function_name if isinstance(call, InvokeCall) else call.function.name
    log.exception("request.failed", path=f"/2015-03-31/functions/{name}/invocations")
    return _error_response(call.request_id, ServiceException("An internal error occurred; see the service log."))


class _ClientGone(Exception):
    pass


async def _body(receive: Any) -> AsyncIterator[bytes]:
    """The request body's pieces, as Starlette's `Request.stream()` gives them."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def _error_response(request_id: str, error: LambdaServiceError) -> Response:
    headers = {**error.headers(), "x-amzn-RequestId": request_id}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LambdaServiceError)
    return _error_response(request.state.request_id, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(SESSIONS_PREFIX + "/"):
        # A path no sessions route matches even with its catch-all (Starlette's `path` parameters stop at a
        # newline): the sessions API's own envelope, as its catch-all answers.
        unknown = InvalidRequestError(f"No sessions API operation matches {request.method} {request.url.path}")
        return JSONResponse(unknown.body(), status_code=exc.status_code)
    if exc.status_code == 405:
        error: LambdaServiceError = MethodNotAllowedException(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = UnknownOperationException(f"No operation matches {request.method} {request.url.path}")
    return _error_response(request.state.request_id, error)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("request.failed", path=request.url.path)
    return _error_response(
        request.state.request_id, ServiceException("An internal error occurred; see the service log.")
    )


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    events: EventQueue = request.app.state.events
    pools = service.describe()
    sessions = service.sessions.describe()
    return JSONResponse(
        {
            "status": "healthy",
            "version": __version__,
            "functions": len(service.registry),
            "problems": _problems(pools, sessions, events),
            "pools": pools,
            "sessions": sessions,
            "events": {
                "pending": events.pending,
                "running": events.running,
                "delivered": events.delivered,
                "failed": events.failed,
                "retries": dict(events.retries),
                "store_problem": events.problem,
            },
            "isolation": service.settings.isolation,
            "network": {
                "default": "egress proxy" if service.settings.allow_network else "none",
                "detail": "sandboxes have no interface of their own; with network allowed, outbound access goes "
                "through the service's egress proxy (no host-local or link-local destinations)",
            },
        }
    )


def _problems(pools: dict[str, Any], sessions: dict[str, Any], events: EventQueue) -> list[str]:
    """What an operator should look at, one sentence each (the details are in /health's other members);
    empty when everything works as configured. The service answers regardless: `status` stays healthy."""
    problems = [
        f"the {name} sandbox backend is unavailable: {status['detail']}"
        for name, status in pools["backends"].items()
        if not status["available"]
    ]
    if pools["limits"]["problem"]:
        problems.append(f"sandboxes run without cgroup limits: {pools['limits']['problem']}")
    generic = pools["generic_sandboxes"]
    if not generic["enabled"] and generic["problem"]:
        problems.append(f"no generic sandboxes, cold starts start from nothing: {generic['problem']}")
    if unavailable := pools["unavailable"]:
        problems.append(f"{len(unavailable)} function version(s) cannot run here (pools.unavailable)")
    if not sessions["available"]:
        problems.append(f"agent sessions are unavailable: {sessions['problem']}")
    if events.problem:
        problems.append(f"Event invocations cannot be accepted: {events.problem}")
    return problems


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def routes(mcp: Any) -> list[BaseRoute]:
    """The service's route table (`mcp`: the ASGI app served at /mcp)."""
    return [
        Route("/2015-03-31/functions/{function_name:path}/invocations", invoke, methods=["POST"]),
        Route(
            "/2021-11-15/functions/{function_name:path}/response-streaming-invocations",
            invoke_with_response_stream,
            methods=["POST"],
        ),
        Route("/2014-11-13/functions/{function_name:path}/invoke-async", invoke_async, methods=["POST"]),
        Route("/2014-11-13/functions/{function_name:path}/invoke-async/", invoke_async, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *status_routes(),  # GET /: the status page, and the JSON it polls (/status/...)
        Route("/mcp", mcp),
        *session_routes(),  # /workspace/se/...: agent sessions
        *control_routes(),
    ]


def create_app(service: Service, *, reload_template: TemplateLoader | None = None) -> InvokeFastPath:
    """The service's HTTP app. `reload_template` loads the template's functions again: given, edits of the
    template file are applied while serving (`template_reload`)."""
    settings = service.settings
    control = ControlPlane(service, Store(settings.data_dir))
    try:
        control.load()  # functions created through the API before a restart, before the service starts
    except OSError as exc:
        raise StartupError(f"cannot use SANDBOX_DATA_DIR={settings.data_dir}: {exc}") from None
    mcp = MCPEndpoint(service, host=settings.host)  # /mcp: MCP's streamable HTTP transport (mcp_http)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.service = service
        app.state.control = control
        store = EventStore(settings.data_dir / EVENTS_DB)
        events = app.state.events = EventQueue(
            service, store, retry_delay=settings.event_retry_delay_seconds, control=control
        )
        service.metrics.events = events
        heartbeat = None
        template_reloader = None
        try:
            await service.start()
            await events.resume()  # Event invocations accepted before a restart, now that their functions run
            if reload_template is not None and settings.template is not None:
                template_reloader = TemplateReloader(settings.template, reload_template, control)
                template_reloader.start()
            if settings.heartbeat_url:
                heartbeat = Heartbeat(service, settings.heartbeat_url, settings.heartbeat_interval_seconds)
                heartbeat.start()
            yield
        finally:
            if template_reloader is not None:
                await template_reloader.close()
            if heartbeat is not None:
                await heartbeat.close()
            await mcp.close()
            await events.drain(settings.shutdown_timeout_seconds)
            await control.close()
            await service.close()
            log.info("service.stopped")

    app = Starlette(
        routes=routes(mcp),
        exception_handlers={
            LambdaServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.add_middleware(RequestIdMiddleware)
    return InvokeFastPath(app, service)
