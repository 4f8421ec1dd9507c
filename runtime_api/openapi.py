"""GET /openapi.json: an OpenAPI 3.1 document of the service's own HTTP routes.

The Lambda routes are not described by hand: every operation of botocore's Lambda service model whose
method and request URI one of the app's routes serves is converted from the model (path, query and
header members as parameters, the JSON body as a JSON Schema, the output shape, the modeled error
responses), so the document follows the model boto3 itself speaks. The sessions API, /health and
/metrics are hand-written in `openapi_local`. The Runtime API is not here: it is served per sandbox,
inside the sandbox's network namespace, not by this app.

The document is built once per app, the first time it is asked for (~0.3 s, in a thread: botocore loads
its model), and served from the bytes rendered then.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from . import __version__
from .openapi_local import EXCLUDED_PATHS, local_paths

# Answers the service gives for any Lambda operation besides the modeled errors: a value that fails
# a model constraint (AWS answers ValidationException, which is not in the model), and a path that
# no route serves (e.g. a function name with a '/').
_EXTRA_ERRORS: dict[int, tuple[str, ...]] = {400: ("ValidationException",), 404: ("UnknownOperationException",)}
# Answers of Invoke other than its modeled 200 (invoke-api.md §2.3).
_EXTRA_SUCCESS: dict[str, dict[str, str]] = {
    "Invoke": {"202": "InvocationType Event: queued, empty body", "204": "InvocationType DryRun: empty body"},
    "InvokeWithResponseStream": {"204": "InvocationType DryRun: empty body"},
    # The model now says 200 (with a StatusCode member); the service answers AWS's long-standing 204,
    # which boto3 reads the same way.
    "DeleteFunction": {"204": "Deleted: empty body"},
}
_UNMODELED = {
    "ValidationException": "A value fails a constraint of the model (not in the model; AWS answers it all the same)",
    "UnknownOperationException": "No operation of the service matches the method and path",
}
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of these routes (the app's route table)."""
    import botocore.session  # the Lambda model; imported only when the document is first built

    model = botocore.session.get_session().get_service_model("lambda")
    converter = _Converter()
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for name in model.operation_names:
        operation = model.operation_model(name)
        method, uri = operation.http["method"], operation.http["requestUri"].split("?", 1)[0]
        if _served(routes, method, uri):
            paths[uri.replace("+}", "}")][method.lower()] = converter.operation(operation)
    for path, operations in local_paths().items():
        paths[path].update(operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sandbox-runtime",
            "version": __version__,
            "description": "The Lambda Invoke and control-plane operations this service implements (from botocore's "
            f"Lambda model, API version {model.api_version}), the agent sessions API, /health, /metrics and the "
            "status page. "
            f"Not described: {', '.join(f'{path} ({why})' for path, why in EXCLUDED_PATHS.items())}.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(converter.schemas.items()))},
    }


def _served(routes: Iterable[BaseRoute], method: str, uri: str) -> bool:
    """Whether a route serves this model URI: its labels filled with a plain value."""
    path = _PARAM.sub("x", uri)
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] is Match.FULL for route in routes if isinstance(route, Route))


async def openapi(request: Request) -> Response:
    state = request.app.state
    rendered = getattr(state, "openapi", None)
    if rendered is None:
        built = await asyncio.to_thread(document, list(request.app.routes))
        rendered = state.openapi = JSONResponse(built).body  # two first requests at once both build: harmless
    return Response(rendered, media_type="application/json")


class _Converter:
    """botocore shapes → JSON Schema; structures become components, referenced by name."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {
            name: {"type": "object", "description": what, "properties": {"Type": {"type": "string"},
                   "message": {"type": "string"}}}
            for name, what in _UNMODELED.items()
        }  # fmt: skip

    # -- operations -------------------------------------------------------------------------------

    def operation(self, op: Any) -> dict[str, Any]:
        described: dict[str, Any] = {
            "operationId": op.name,
            "summary": _first_sentence(op.documentation),
            "tags": ["Lambda"],
            "parameters": [],
            "responses": {},
        }
        body: dict[str, Any] = {}
        required_body: list[str] = []
        shape = op.input_shape
        payload = shape.serialization.get("payload") if shape is not None else None
        for name, member in shape.members.items() if shape is not None else ():
            location = member.serialization.get("location")
            if location in ("uri", "querystring", "header"):
                described["parameters"].append(self._parameter(name, member, location, shape.required_members))
            elif name == payload:
                described["requestBody"] = self._payload(member)
            else:
                body[name] = self.schema(member)
                if name in shape.required_members:
                    required_body.append(name)
        if body:
            schema: dict[str, Any] = {"type": "object", "properties": body, "additionalProperties": False}
            if required_body:
                schema["required"] = required_body
            described["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        described["responses"] = self._responses(op)
        return described

    def _parameter(self, name: str, member: Any, location: str, required: list[str]) -> dict[str, Any]:
        where = {"uri": "path", "querystring": "query", "header": "header"}[location]
        parameter: dict[str, Any] = {
            "name": member.serialization.get("name", name),
            "in": where,
            "required": where == "path" or name in required,
            "schema": self.schema(member, where=where),
        }
        if member.type_name == "list" and where == "query":
            parameter.update(style="form", explode=True)
        return parameter

    def _payload(self, member: Any) -> dict[str, Any]:
        if member.type_name == "structure":
            return {"content": {"application/json": {"schema": self.schema(member)}}}
        # A raw body (Invoke's event, InvokeAsync's args): any bytes; the service wants JSON.
        return {
            "content": {
                "application/json": {"schema": {}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        }

    def _responses(self, op: Any) -> dict[str, Any]:
        responses: dict[str, Any] = {str(op.http.get("responseCode", 200)): self._output(op)}
        for code, what in _EXTRA_SUCCESS.get(op.name, {}).items():
            responses[code] = {"description": what, "headers": {"x-amzn-RequestId": _REQUEST_ID}}
        errors: dict[int, list[str]] = defaultdict(list)
        for error in op.error_shapes:
            errors[error.metadata["error"]["httpStatusCode"]].append(error.name)
            self._error_component(error)
        for status, extra in _EXTRA_ERRORS.items():
            errors[status].extend(extra)
        for status, names in sorted(errors.items()):
            responses[str(status)] = {
                "description": ", ".join(sorted(set(names))),
                "headers": {
                    "x-amzn-ErrorType": {"required": True, "schema": {"type": "string", "enum": sorted(set(names))}},
                    "x-amzn-RequestId": _REQUEST_ID,
                },
                "content": {"application/json": {"schema": {"anyOf": [_ref(name) for name in sorted(set(names))]}}},
            }
        return responses

    def _output(self, op: Any) -> dict[str, Any]:
        shape = op.output_shape
        answer: dict[str, Any] = {"description": "Success", "headers": {"x-amzn-RequestId": _REQUEST_ID}}
        if shape is None:
            return answer
        payload = shape.serialization.get("payload")
        body: dict[str, Any] = {}
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            if location == "header":
                header = {"schema": self.schema(member, "output header")}
                answer["headers"][member.serialization.get("name", name)] = header
            elif location == "statusCode":
                continue
            elif name == payload:
                if member.serialization.get("eventstream"):
                    answer["content"] = {"application/vnd.amazon.eventstream": {"schema": {}}}
                elif member.type_name == "structure":
                    answer["content"] = {"application/json": {"schema": self.schema(member, "output")}}
                else:
                    answer["content"] = {"*/*": {"schema": {}}}  # the function's own result
            else:
                body[name] = self.schema(member, "output")
        if body:
            answer["content"] = {"application/json": {"schema": {"type": "object", "properties": body}}}
        return answer

    def _error_component(self, shape: Any) -> None:
        if shape.name in self.schemas:
            return
        self.schemas[shape.name] = {
            "type": "object",
            "description": _first_sentence(shape.documentation),
            "properties": {name: self.schema(member, "output") for name, member in shape.members.items()},
        }

    # -- shapes -----------------------------------------------------------------------------------

    def schema(self, shape: Any, where: str = "body") -> dict[str, Any]:
        """`where`: body, path, query, header; "output" (a response body), "output header"."""
        kind = shape.type_name
        meta = shape.metadata
        output = where.startswith("output")
        if kind == "structure":
            name = f"{shape.name}_Output" if output else shape.name
            if name not in self.schemas:
                self.schemas[name] = {}  # placeholder: a recursive shape refers to itself
                self.schemas[name] = self._structure(shape, where)
            return _ref(name)
        if kind == "string" and output:
            # botocore checks no constraint of a response, and AWS answers values outside them (an
            # update's LastUpdateStatusReasonCode "Creating", GetFunctionCodeSigningConfig's "" ARN).
            return {"type": "string"}
        if kind == "string":
            schema: dict[str, Any] = {"type": "string"}
            if shape.enum:
                schema["enum"] = list(shape.enum)
            _bounds(schema, meta, "minLength", "maxLength")
            if "pattern" in meta and not shape.enum and _portable(meta["pattern"]):
                schema["pattern"] = meta["pattern"]
            return schema
        if kind in ("integer", "long"):
            schema = {"type": "integer"}
            _bounds(schema, meta, "minimum", "maximum")
            return schema
        if kind in ("float", "double"):
            return {"type": "number"}
        if kind == "boolean":
            return {"type": "boolean"}
        if kind == "timestamp":
            # rest-json: epoch seconds in a body, ISO 8601 in a query string, HTTP-date in a header
            return {"type": "number"} if where in ("body", "output") else {"type": "string"}
        if kind == "blob":
            return {"type": "string", "contentEncoding": "base64"}
        if kind == "list":
            schema = {"type": "array", "items": self.schema(shape.member, where)}
            _bounds(schema, meta, "minItems", "maxItems")
            return schema
        if kind == "map":
            schema = {"type": "object", "additionalProperties": self.schema(shape.value, where)}
            key = self.schema(shape.key, where)
            if key != {"type": "string"}:
                schema["propertyNames"] = key
            _bounds(schema, meta, "minProperties", "maxProperties")
            return schema
        raise ValueError(f"no JSON Schema for {kind} shape {shape.name}")

    def _structure(self, shape: Any, where: str) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: self.schema(member, where) for name, member in shape.members.items()},
        }
        if shape.required_members:
            schema["required"] = list(shape.required_members)
        return schema


_REQUEST_ID = {"schema": {"type": "string", "format": "uuid"}}


def _bounds(schema: dict[str, Any], meta: dict[str, Any], low: str, high: str) -> None:
    if "min" in meta:
        schema[low] = meta["min"]
    if "max" in meta:
        schema[high] = meta["max"]


def _portable(pattern: str) -> bool:
    """Whether a model pattern is one Python's re (and so validators and generators) can use: the model has
    a few with Unicode property classes (`\\p{L}`), which are left out."""
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _first_sentence(documentation: str) -> str:
    text = re.sub(r"<[^>]+>", "", documentation or "").strip()
    return text.split(". ", 1)[0][:200]
