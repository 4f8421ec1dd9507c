"""The Invoke API: `POST /2015-03-31/functions/{FunctionName}/invocations`, as AWS answers it."""

from __future__ import annotations

import base64
import binascii
import json

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import InvalidRequestContentException, RequestTooLargeException, ValidationException
from .functions import parse_function_name
from .invocation import MAX_EVENT_REQUEST_BYTES, MAX_REQUEST_BYTES, Invocation, new_trace_id

_INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_LOG_TYPES = ("None", "Tail")


async def invoke(request: Request) -> Response:
    service = request.app.state.service
    qualifier = request.query_params.get("Qualifier")
    ref = parse_function_name(request.path_params["function_name"], qualifier)
    function, version = service.registry.resolve(ref)
    headers = request.headers
    invocation_type = _enum(
        headers.get("x-amz-invocation-type", "RequestResponse"), "invocationType", _INVOCATION_TYPES
    )
    log_type = _enum(headers.get("x-amz-log-type", "None"), "logType", _LOG_TYPES)
    client_context = _client_context(headers.get("x-amz-client-context"))
    payload = await _read_payload(request, invocation_type)
    if invocation_type == "DryRun":
        return Response(status_code=204, headers={"x-amzn-RequestId": request.state.request_id})
    invocation = Invocation(
        function=function,
        payload=payload,
        version=version,
        invoked_arn=function.qualified_arn(ref.qualifier) if ref.qualifier else function.arn,
        request_id=request.state.request_id,
        trace_id=headers.get("x-amzn-trace-id") or new_trace_id(),
        client_context=client_context if invocation_type == "RequestResponse" else None,
        tenant_id=headers.get("x-amz-tenant-id"),
    )
    if invocation_type == "Event":
        service.pool_for(function)  # an unrunnable function fails now, not in the background
        request.app.state.events.submit(invocation)
        return Response(status_code=202, headers={"x-amzn-RequestId": invocation.request_id})
    result = await service.invoke(invocation)
    response_headers = {
        "x-amzn-RequestId": invocation.request_id,
        "X-Amz-Executed-Version": version,
        "Content-Type": "application/json",
    }
    if result.function_error:
        response_headers["X-Amz-Function-Error"] = result.function_error
    if log_type == "Tail":
        response_headers["X-Amz-Log-Result"] = base64.b64encode(result.log_tail).decode()
    return Response(result.payload, status_code=200, headers=response_headers)


async def invoke_async(request: Request) -> Response:
    """InvokeAsync (deprecated, still in boto3): an Event invocation under its own path."""
    service = request.app.state.service
    ref = parse_function_name(request.path_params["function_name"])
    function, version = service.registry.resolve(ref)
    service.pool_for(function)
    invocation = Invocation(
        function=function,
        payload=await _read_payload(request, "Event"),
        version=version,
        invoked_arn=function.qualified_arn(ref.qualifier) if ref.qualifier else function.arn,
        request_id=request.state.request_id,
        trace_id=request.headers.get("x-amzn-trace-id") or new_trace_id(),
    )
    request.app.state.events.submit(invocation)
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
    except (binascii.Error, ValueError):
        raise InvalidRequestContentException("Client context must be a valid Base64-encoded JSON object.") from None
    return text


async def _read_payload(request: Request, invocation_type: str) -> bytes:
    limit = MAX_EVENT_REQUEST_BYTES if invocation_type == "Event" else MAX_REQUEST_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        _too_large(int(declared), invocation_type, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            _too_large(size, invocation_type, limit)
        chunks.append(chunk)
    payload = b"".join(chunks)
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
    """orjson refuses integers past 64 bits that JSON (and AWS) accept; settle those with the stdlib."""
    try:
        json.loads(payload, parse_constant=_reject)
    except ValueError:
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
