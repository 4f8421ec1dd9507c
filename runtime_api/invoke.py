"""The Invoke API as AWS answers it: Invoke (`POST /2015-03-31/functions/{FunctionName}/invocations`)
and InvokeWithResponseStream (`POST /2021-11-15/functions/{FunctionName}/response-streaming-invocations`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from . import eventstream
from .errors import (
    InvalidRequestContentException,
    LambdaServiceError,
    RequestTooLargeException,
    ValidationException,
)
from .functions import parse_function_name
from .invocation import (
    MAX_EVENT_REQUEST_BYTES,
    MAX_REQUEST_BYTES,
    Invocation,
    InvocationResult,
    ResponseStream,
    new_trace_id,
)

if TYPE_CHECKING:
    from .events import EventQueue
    from .service import Service

_INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_STREAM_INVOCATION_TYPES = ("RequestResponse", "DryRun")
_LOG_TYPES = ("None", "Tail")


_INVOKE_PREFIX = "/2015-03-31/functions/"
_INVOKE_SUFFIX = "/invocations"


def invoke_path_function(path: str) -> str | None:
    """The function name of an Invoke path (`/2015-03-31/functions/{FunctionName}/invocations`, decoded),
    as the router's `{function_name:path}` would take it; None for any other path."""
    long_enough = len(path) >= len(_INVOKE_PREFIX) + len(_INVOKE_SUFFIX)
    if long_enough and path.startswith(_INVOKE_PREFIX) and path.endswith(_INVOKE_SUFFIX):
        return path[len(_INVOKE_PREFIX) : -len(_INVOKE_SUFFIX)]
    return None


def first_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Raw (lower-case name, value) header pairs by name, the first of a repeated one kept (as
    Starlette's `Headers.get`): what `InvokeCall.headers` holds."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


class InvokeCall:
    """What an Invoke-style request carries, however it arrived (a Starlette request, the ASGI scope on
    the Invoke fast path, or the service's HTTP protocol): header names are lower-case, the first value
    of each kept; the body whole, or its pieces as they arrive."""

    __slots__ = ("body", "function_name", "headers", "qualifier", "request_id")

    def __init__(
        self,
        function_name: str,
        qualifier: str | None,
        headers: Mapping[str, str],
        body: bytes | AsyncIterator[bytes],
        request_id: str,
    ) -> None:
        self.function_name = function_name
        self.qualifier = qualifier
        self.headers = headers
        self.body = body
        self.request_id = request_id

    @classmethod
    def of(cls, request: Request) -> InvokeCall:
        return cls(
            request.path_params["function_name"],
            request.query_params.get("Qualifier"),
            request.headers,
            request.stream(),
            request.state.request_id,
        )


class _Asked:
    """What an Invoke-style request asks for, checked before its payload is read."""

    __slots__ = ("client_context", "function", "invocation_type", "invoked_arn", "log_type", "version")

    def __init__(self, service: Service, call: InvokeCall, invocation_types: tuple[str, ...]) -> None:
        ref = parse_function_name(call.function_name, call.qualifier)
        self.function, self.version = service.registry.resolve(ref)
        self.invoked_arn = self.function.qualified_arn(ref.qualifier) if ref.qualifier else self.function.arn
        headers = call.headers
        self.invocation_type = _enum(
            headers.get("x-amz-invocation-type", "RequestResponse"), "invocationType", invocation_types
        )
        self.log_type = _enum(headers.get("x-amz-log-type", "None"), "logType", _LOG_TYPES)
        self.client_context = _client_context(headers.get("x-amz-client-context"))

    def invocation(self, call: InvokeCall, payload: bytes, stream: ResponseStream | None = None) -> Invocation | None:
        """The Invocation; None for DryRun, which only checks."""
        if self.invocation_type == "DryRun":
            return None
        headers = call.headers
        return Invocation(
            function=self.function,
            payload=payload,
            version=self.version,
            invoked_arn=self.invoked_arn,
            request_id=call.request_id,
            trace_id=headers.get("x-amzn-trace-id") or new_trace_id(),
            client_context=self.client_context if self.invocation_type == "RequestResponse" else None,
            tenant_id=headers.get("x-amz-tenant-id"),
            stream=stream,
            wants_log_tail=self.log_type == "Tail",
        )


async def _requested(
    service: Service, call: InvokeCall, invocation_types: tuple[str, ...], stream: ResponseStream | None = None
) -> tuple[str, str, Invocation | None]:
    """The invocation an Invoke-style request asks for: its type, log type, and the Invocation (None for
    DryRun, which only checks)."""
    asked = _Asked(service, call, invocation_types)
    payload = await _read_payload(call.headers.get("content-length"), call.body, asked.invocation_type)
    return asked.invocation_type, asked.log_type, asked.invocation(call, payload, stream)


async def invoke(request: Request) -> Response:
    return await invoke_call(request.app.state.service, request.app.state.events, InvokeCall.of(request))


async def invoke_call(service: Service, events: EventQueue, call: InvokeCall) -> Response:
    """Invoke: the Starlette route's, and the fast path's in front of the app (`app.InvokeFastPath`)."""
    invocation_type, _, invocation = await _requested(service, call, _INVOCATION_TYPES)
    if invocation is None:
        return _dry_run(call.request_id)
    return await finish_invoke(service, events, Deferred(invocation_type, invocation))


class Deferred(NamedTuple):
    """An invocation `start_invoke` made but could not hand over without waiting: an Event (stored
    before its 202), or one whose function's code is being reloaded. `finish_invoke` answers it."""

    invocation_type: str
    invocation: Invocation


async def finish_invoke(service: Service, events: EventQueue, deferred: Deferred) -> Response:
    """The rest of `invoke_call` once its Invocation is made: an Event stored, else run and answered."""
    invocation = deferred.invocation
    if deferred.invocation_type == "Event":
        service.pool_for(invocation.function)  # an unrunnable function fails now, not in the background
        await events.submit(invocation)  # stored before the 202
        return Response(status_code=202, headers={"x-amzn-RequestId": invocation.request_id})
    return invoke_answer(invocation, await service.invoke(invocation))


def start_invoke(service: Service, call: InvokeCall) -> Invocation | Response | Deferred:
    """`invoke_call` for a whole body, as far as it goes without waiting: the answer when it is known
    at once (DryRun), or the RequestResponse invocation handed to its pool (`answer_headers` renders
    its result); `Deferred` when Invoke has to wait first (`finish_invoke` answers it then). Errors
    raise, as from `invoke_call`."""
    assert isinstance(call.body, bytes)
    asked = _Asked(service, call, _INVOCATION_TYPES)
    invocation = asked.invocation(
        call, _whole_payload(call.headers.get("content-length"), call.body, asked.invocation_type)
    )
    if invocation is None:
        return _dry_run(call.request_id)
    if asked.invocation_type == "Event" or not service.begin_invoke(invocation):
        return Deferred(asked.invocation_type, invocation)
    return invocation


def invoke_answer(invocation: Invocation, result: InvocationResult) -> Response:
    """The answer to a RequestResponse invoke that ran."""
    response = Response(result.payload, status_code=200)
    response.raw_headers = answer_headers(invocation, result)
    return response


def answer_headers(invocation: Invocation, result: InvocationResult) -> list[tuple[bytes, bytes]]:
    """`invoke_answer`'s headers, as Starlette renders them (lower-case names, Content-Length last):
    also what the service's HTTP protocol writes, without a Response object on the warm path."""
    headers = [
        (b"x-amzn-requestid", invocation.request_id.encode("latin-1")),
        (b"x-amz-executed-version", invocation.version.encode("latin-1")),
        (b"content-type", b"application/json"),
    ]
    if result.function_error:
        headers.append((b"x-amz-function-error", result.function_error.encode("latin-1")))
    if invocation.wants_log_tail:
        headers.append((b"x-amz-log-result", base64.b64encode(result.log_tail)))
    headers.append((b"content-length", str(len(result.payload)).encode("latin-1")))
    return headers


def _dry_run(request_id: str) -> Response:
    return Response(status_code=204, headers={"x-amzn-RequestId": request_id})


async def invoke_with_response_stream(request: Request) -> Response:
    """InvokeWithResponseStream: the function's response as it is produced, in event-stream messages:
    `PayloadChunk`s, then one `InvokeComplete` (ErrorCode and ErrorDetails on a function error, LogResult
    with LogType=Tail). Errors before the function runs (throttling, unknown function, ...) are the usual
    error shapes; from the moment the runtime has the event the answer is 200, whatever happens.

    A runtime that does not stream is passed on the same way: its /response body as PayloadChunks."""
    service = request.app.state.service
    stream = ResponseStream()
    _, log_type, invocation = await _requested(service, InvokeCall.of(request), _STREAM_INVOCATION_TYPES, stream)
    if invocation is None:
        return Response(status_code=204, headers={"x-amzn-RequestId": request.state.request_id})
    version = invocation.version
    running = asyncio.ensure_future(service.invoke(invocation))
    running.add_done_callback(_retrieve)  # a caller that went away never awaits it
    assert invocation.started is not None  # made for every invocation with a stream
    started = asyncio.ensure_future(invocation.started.wait())
    try:
        await asyncio.wait((running, started), return_when=asyncio.FIRST_COMPLETED)
    finally:
        started.cancel()
    failure = running.exception() if running.done() else None
    if failure is not None:  # it never ran: throttled, not runnable, shutting down
        stream.detach()
        raise failure
    return _EventStreamResponse(
        _events(stream, running, tail=log_type == "Tail"),
        stream,
        headers={"x-amzn-RequestId": invocation.request_id, "X-Amz-Executed-Version": version},
    )


class _EventStreamResponse(StreamingResponse):
    """Streams the events; however the response ends (a caller that disconnects included), the
    invocation's stream stops waiting for a reader."""

    media_type = eventstream.CONTENT_TYPE

    def __init__(self, content: AsyncIterator[bytes], stream: ResponseStream, headers: dict[str, str]) -> None:
        super().__init__(content, headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.detach()


async def _events(
    stream: ResponseStream, running: asyncio.Future[InvocationResult], *, tail: bool
) -> AsyncIterator[bytes]:
    while (piece := await stream.read()) is not None:
        yield eventstream.payload_chunk(piece)
    try:
        result = await running
    except LambdaServiceError as exc:  # not expected once the runtime has the event
        yield eventstream.invoke_complete(exc.code, exc.message)
        return
    details = None
    if result.function_error and result.payload:
        details = result.payload.decode(errors="replace")
    log_result = base64.b64encode(result.log_tail).decode() if tail else None
    yield eventstream.invoke_complete(result.function_error, details, log_result)


def _retrieve(task: asyncio.Future[InvocationResult]) -> None:
    if not task.cancelled():
        task.exception()


async def invoke_async(request: Request) -> Response:
    """InvokeAsync (deprecated, still in boto3): an Event invocation under its own path."""
    service = request.app.state.service
    ref = parse_function_name(request.path_params["function_name"])
    function, version = service.registry.resolve(ref)
    service.pool_for(function)
    invocation = Invocation(
        function=function,
        payload=await _read_payload(request.headers.get("content-length"), request.stream(), "Event"),
        version=version,
        invoked_arn=function.qualified_arn(ref.qualifier) if ref.qualifier else function.arn,
        request_id=request.state.request_id,
        trace_id=request.headers.get("x-amzn-trace-id") or new_trace_id(),
    )
    await request.app.state.events.submit(invocation)
    return Response(b'{"Status":202}', status_code=202, headers={"x-amzn-RequestId": invocation.request_id})


def _enum(value: str, member: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return value


def _client_context(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        text = base64.b64decode(raw, validate=True).decode()
        if not isinstance(json.loads(text), dict):
            raise ValueError
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidRequestContentException("Client context must be a valid Base64-encoded JSON object.") from None
    return text


async def _read_payload(declared: str | None, body: bytes | AsyncIterator[bytes], invocation_type: str) -> bytes:
    """The request's payload (a whole body, or its pieces as they arrive), checked: within the limit of
    its invocation type, and JSON."""
    if isinstance(body, bytes):
        return _whole_payload(declared, body, invocation_type)
    limit = _declared_within_limit(declared, invocation_type)
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            _too_large(size, invocation_type, limit)
        chunks.append(chunk)
    return _json_payload(b"".join(chunks))


def _whole_payload(declared: str | None, payload: bytes, invocation_type: str) -> bytes:
    """`_read_payload` of a body that is already whole."""
    limit = _declared_within_limit(declared, invocation_type)
    if len(payload) > limit:
        _too_large(len(payload), invocation_type, limit)
    return _json_payload(payload)


def _declared_within_limit(declared: str | None, invocation_type: str) -> int:
    """The payload limit of `invocation_type`; a Content-Length past it fails before the body is read."""
    limit = MAX_EVENT_REQUEST_BYTES if invocation_type == "Event" else MAX_REQUEST_BYTES
    if declared is not None and declared.isdigit() and int(declared) > limit:
        _too_large(int(declared), invocation_type, limit)
    return limit


def _json_payload(payload: bytes) -> bytes:
    if not payload.strip():
        return b"{}"
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if not _loads_big_numbers(payload):
            raise InvalidRequestContentException(
                f"Could not parse request body into json: Could not parse payload into json: {exc}"
            ) from None
    return payload


def _loads_big_numbers(payload: bytes) -> bool:
    """orjson refuses integers past 64 bits that JSON (and AWS) accept; settle those with the stdlib.
    Nesting deeper than orjson's 1024 levels stays refused: the stdlib would raise RecursionError."""
    try:
        json.loads(payload, parse_constant=_reject)
    except (ValueError, RecursionError):
        return False
    return True


def _reject(name: str) -> None:
    raise ValueError(f"invalid JSON constant {name}")


def _too_large(size: int, invocation_type: str, limit: int) -> None:
    if invocation_type == "Event":
        raise RequestTooLargeException(
            f"{size} byte payload is too large for the Event invocation type (limit {limit} bytes)"
        )
    raise RequestTooLargeException(f"Request must be smaller than {limit} bytes for the InvokeFunction operation")
