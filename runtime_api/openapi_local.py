"""The hand-written part of GET /openapi.json: the routes that are not Lambda operations (the agent
sessions API of `session_routes`, /health, /metrics, a function's code package, the document itself).

Written from what the handlers answer; tests/test_openapi.py checks that every route is described here,
by the Lambda model (`openapi`), or listed in EXCLUDED_PATHS with the reason.
"""

from __future__ import annotations

from typing import Any

from .session_limits import MAX_CPU_QUOTA, MAX_MEMORY_KB, MAX_TIMEOUT, MIN_CPU_QUOTA, MIN_MEMORY_KB

EXCLUDED_PATHS: dict[str, str] = {
    "/mcp": "the MCP streamable HTTP transport: JSON-RPC, described by the MCP specification",
    "/workspace/se/{rest}": "the sessions API's catch-all: 404 INVALID_REQUEST for paths it does not serve",
}

_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
}
# session_limits: null for the SANDBOX_* default
_CPU_QUOTA = {"anyOf": [{"type": "null"}, {"const": 0},
                        {"type": "number", "minimum": MIN_CPU_QUOTA, "maximum": MAX_CPU_QUOTA}]}  # fmt: skip
_MEMORY_LIMIT = {"type": ["integer", "null"], "minimum": MIN_MEMORY_KB, "maximum": MAX_MEMORY_KB}
_TIMEOUT = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT}
_LIMITS = {
    "type": "object",
    "properties": {
        "memory_limit": {"type": "integer"},
        "cpu_quota": {"type": "number"},
        "timeout": {"type": "number"},
        "allow_network": {"type": "boolean"},
    },
}
_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"const": False},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": [
                        "SESSION_NOT_FOUND", "SESSION_EXPIRED", "EXECUTION_TIMEOUT", "RESOURCE_LIMIT", "INVALID_CODE",
                        "FILE_NOT_FOUND", "INVALID_PATH", "INVALID_REQUEST", "SESSION_EXISTS", "INTERNAL_ERROR",
                    ],
                },
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        },
    },
}  # fmt: skip
_EXECUTION = {
    "type": "object",
    "required": ["exit_code", "stdout", "stderr", "execution_time", "timed_out", "execution_id"],
    "properties": {
        "exit_code": {"type": ["integer", "null"]},
        "stdout": {"type": "string"},
        "stderr": {"type": "string"},
        "execution_time": {"type": "number"},
        "result": {},
        "error": {},
        "timed_out": {"type": "boolean"},
        "limit": {"type": ["string", "null"]},
        "stdout_truncated": {"type": "boolean"},
        "stderr_truncated": {"type": "boolean"},
        "resource_usage": {"type": ["object", "null"]},
        "execution_id": {"type": "string"},
        "reset": {},
    },
}
_FILE = {
    "type": "object",
    "required": ["filename", "path", "size"],
    "properties": {"filename": {"type": "string"}, "path": {"type": "string"}, "size": {"type": "integer"}},
}


def _ok(data: dict[str, Any]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["success", "data"],
        "properties": {"success": {"const": True}, "data": data},
    }
    return {"description": "Success", "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    # 500 INTERNAL_ERROR: the documented answer of a failure on the service's side (a sandbox that would
    # not start); 429: no sandbox uid free or too many live sessions.
    return {
        str(status): {"description": "Error", "content": {"application/json": {"schema": _ERROR}}}
        for status in sorted({400, 404, 410, 429, 500, *statuses})
    }


def _json_body(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {"content": {"application/json": {"schema": schema}}}


def _operation(op_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary, "tags": ["Sessions"], "responses": responses, **extra}


def _sessions() -> dict[str, dict[str, Any]]:
    session = {"type": "object", "properties": {"session_id": {"type": "string"}, "status": {"type": "string"},
               "stateful": {"type": "boolean"}, "created_at": {"type": "string"}, "limits": _LIMITS,
               "workspace": {}}}  # fmt: skip
    run_fields = {"timeout": _TIMEOUT, "args": {"type": "array", "items": {"type": "string"}},
                  "stream": {"type": "boolean"}}  # fmt: skip
    execution = {**_ok(_EXECUTION), "content": {**_ok(_EXECUTION)["content"], "text/event-stream": {"schema": {}}}}
    p = "/workspace/se"
    sid = [_SESSION_ID]
    return {
        f"{p}/session/{{session_id}}": {
            "post": _operation(
                "CreateSession", "Create a session: a long-lived sandbox with a persistent /workspace",
                {"200": _ok(session), **_errors(409)}, parameters=sid,
                requestBody=_json_body({"allow_network": {"type": "boolean"}, "cpu_quota": _CPU_QUOTA,
                                        "memory_limit": _MEMORY_LIMIT, "timeout": _TIMEOUT,
                                        "stateful": {"type": "boolean"}}),
            ),
            "delete": _operation("CloseSession", "Close a session and remove its workspace",
                                 {"200": _ok({"type": "object"}), **_errors()}, parameters=sid),
        },
        f"{p}/status/{{session_id}}": {
            "get": _operation("SessionStatus", "A session's state, limits and usage",
                              {"200": _ok({"type": "object"}), **_errors()}, parameters=sid),
        },
        f"{p}/execute_code/{{session_id}}": {
            "post": _operation(
                "ExecuteCode", "Run Python (or a script): a handler(event) is called and its result returned",
                {"200": execution, **_errors(408)}, parameters=sid,
                requestBody=_json_body({"code": {"type": "string"}, "event": {}, "filename": {"type": "string"},
                                        "script_type": {"type": "string"}, **run_fields}, ("code",)),
            ),
        },
        f"{p}/execute/{{session_id}}": {
            "post": _operation(
                "Execute", "Run a shell command in the session", {"200": execution, **_errors(408)}, parameters=sid,
                requestBody=_json_body({"command": {"type": "string"}, **run_fields}, ("command",)),
            ),
        },
        f"{p}/upload/{{session_id}}": {
            "post": _operation(
                "UploadFile", "Upload a file (multipart/form-data: 'file', optional 'path')",
                {"200": _ok(_FILE), **_errors(413, 507)}, parameters=sid,
                requestBody={"content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}, "path": {"type": "string"}}}}}},
            ),
        },
        f"{p}/download/{{session_id}}/{{filename}}": {
            "get": _operation(
                "DownloadFile", "A workspace file's bytes",
                {"200": {"description": "The file", "content": {"application/octet-stream": {"schema": {}}}},
                 **_errors()},
                parameters=[*sid, {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
        },
        f"{p}/files/{{session_id}}": {
            "get": _operation(
                "ListFiles", "The files of a workspace folder",
                {"200": _ok({"type": "object", "required": ["files", "truncated"], "properties": {
                    "files": {"type": "array", "items": {"type": "object"}}, "truncated": {"type": "boolean"}}}),
                 **_errors()},
                parameters=[*sid, {"name": "path", "in": "query", "required": False, "schema": {"type": "string"}}],
            ),
        },
        f"{p}/create/{{session_id}}": {
            "post": _operation(
                "CreateFile", "Write a file from a JSON body (utf-8 text or base64)",
                {"200": _ok(_FILE), **_errors(413, 507)}, parameters=sid,
                requestBody=_json_body({"filename": {"type": "string"}, "path": {"type": "string"},
                                        "content": {"type": "string"},
                                        "encoding": {"type": "string", "enum": ["utf-8", "utf8", "text", "base64"]}}),
            ),
        },
        f"{p}/cleanup-all": {
            "post": _operation("CleanupAll", "Close every session",
                               {"200": _ok({"type": "object", "properties": {"closed": {"type": "integer"}}}),
                                **_errors()}),
        },
        f"{p}/healthy": {
            "get": _operation("SessionsHealthy", "Whether sessions can be created",
                              {"200": _ok({"type": "object"}), "503": {"description": "Sessions unavailable",
                               "content": {"application/json": {"schema": _ERROR}}}}),
        },
    }  # fmt: skip


def _object(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object with all of `properties` required."""
    return {"type": "object", "required": list(properties), "properties": properties, **extra}


_COUNT = {"type": "integer", "minimum": 0}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_BACKEND = _object(
    {
        "name": {"type": "string"},
        "available": {"type": "boolean"},
        "detail": {"type": "string"},
        "extra": {"type": "object"},
    }
)
_POOL = _object(
    {
        "environments": {"type": "object", "additionalProperties": _COUNT},
        "concurrent_executions": _COUNT,
        "queued": _COUNT,
        "concurrency_limit": _COUNT,
        "cold_starts": _COUNT,
    }
)
# GET /health (`app.health`): what docs/api-reference.md#health describes.
_HEALTH = _object({
    "status": {"const": "healthy"},
    "version": {"type": "string"},
    "functions": _COUNT,
    "problems": {"type": "array", "items": {"type": "string"}},
    "pools": _object({
        "environments": _object({"live": _COUNT, "limit": _COUNT}),
        "limits": _object({"cgroups": {"type": "boolean"}, "problem": _TEXT_OR_NULL}),
        "functions": {"type": "object", "additionalProperties": _POOL},
        "unavailable": {"type": "object", "additionalProperties": {"type": "string"}},
        "backend": {"anyOf": [{"type": "null"}, _BACKEND]},
        "backends": {"type": "object", "additionalProperties": _BACKEND},
        "generic_sandboxes": {"type": "object", "required": ["enabled", "problem"], "properties": {
            "enabled": {"type": "boolean"}, "problem": _TEXT_OR_NULL, "size": _COUNT, "keys": _COUNT,
            "ready": _COUNT, "starting": _COUNT, "taken": _COUNT, "missed": _COUNT}},
    }),
    "sessions": {"type": "object", "required": ["available", "problem", "active", "limit"], "properties": {
        "available": {"type": "boolean"}, "problem": _TEXT_OR_NULL, "active": _COUNT, "limit": _COUNT}},
    "events": _object({"pending": _COUNT, "running": _COUNT, "delivered": _COUNT, "failed": _COUNT,
                       "retries": _object({"function_error": _COUNT, "throttled": _COUNT}),
                       "store_problem": _TEXT_OR_NULL}),
    "isolation": {"type": "string", "enum": ["bwrap", "docker"]},
    "network": _object({"default": {"type": "string", "enum": ["egress proxy", "none"]}, "detail": {"type": "string"}}),
})  # fmt: skip


def local_paths() -> dict[str, dict[str, Any]]:
    function_name = {"name": "FunctionName", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/health": {
            "get": {
                "operationId": "Health",
                "summary": "The service's state: functions, pools, sessions, the event queue",
                "tags": ["Service"],
                "responses": {"200": {"description": "Healthy", "content": {"application/json": {
                    "schema": _HEALTH}}}},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "Metrics",
                "summary": "Prometheus metrics (text exposition format)",
                "tags": ["Service"],
                "responses": {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "OpenAPI",
                "summary": "This document",
                "tags": ["Service"],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {
                    "type": "object"}}}}},
            }
        },
        "/2015-03-31/functions/{FunctionName}/package": {
            "get": {
                "operationId": "GetFunctionPackage",
                "summary": "A function's code as a zip (the Code.Location of GetFunction points here)",
                "tags": ["Lambda"],
                "parameters": [function_name, {"name": "Qualifier", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The zip", "content": {"application/zip": {"schema": {}}}},
                    "400": {"description": "InvalidParameterValueException, ValidationException",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "404": {"description": "ResourceNotFoundException",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                },
            }
        },
        **_sessions(),
    }  # fmt: skip
