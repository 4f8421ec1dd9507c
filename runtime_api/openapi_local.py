"""The hand-written part of GET /openapi.json: the routes that are not Lambda operations (the agent
sessions API of `session_routes`, /health, /metrics, the status page, a function's code package, the
document itself).

Written from what the handlers answer; tests/test_openapi.py checks that every route is described here,
by the Lambda model (`openapi`), or listed in EXCLUDED_PATHS with the reason.
"""

from __future__ import annotations

from typing import Any

from .session_limits import MAX_CPU_QUOTA, MAX_MEMORY_KB, MAX_TIMEOUT, MIN_CPU_QUOTA, MIN_MEMORY_KB
from .status_page import INVOCATIONS_LIMIT, LINES_LIMIT, MAX_CURSOR, MAX_LIMIT

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


def _record(properties: dict[str, Any]) -> dict[str, Any]:
    """An object that always has every one of these members."""
    return {"type": "object", "required": list(properties), "properties": properties}


_COUNT = {"type": "integer", "minimum": 0}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_BACKEND = _record(
    {
        "name": {"type": "string"},
        "available": {"type": "boolean"},
        "detail": {"type": "string"},
        "extra": {"type": "object"},
    }
)
_POOL = _record(
    {
        "environments": {"type": "object", "additionalProperties": _COUNT},
        "concurrent_executions": _COUNT,
        "queued": _COUNT,
        "concurrency_limit": _COUNT,
        "cold_starts": _COUNT,
    }
)
# GET /health (`app.health`): what docs/api-reference.md#health describes.
_HEALTH = _record({
    "status": {"const": "healthy"},
    "version": {"type": "string"},
    "functions": _COUNT,
    "problems": {"type": "array", "items": {"type": "string"}},
    "pools": _record({
        "environments": _record({"live": _COUNT, "limit": _COUNT}),
        "limits": _record({"cgroups": {"type": "boolean"}, "problem": _TEXT_OR_NULL}),
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
    "events": _record({"pending": _COUNT, "running": _COUNT, "delivered": _COUNT, "failed": _COUNT,
                       "retries": _record({"function_error": _COUNT, "throttled": _COUNT}),
                       "store_problem": _TEXT_OR_NULL}),
    "isolation": {"type": "string", "enum": ["bwrap", "docker"]},
    "network": _record({"default": {"type": "string", "enum": ["egress proxy", "none"]}, "detail": {"type": "string"}}),
})  # fmt: skip


# fmt: off
def _status() -> dict[str, dict[str, Any]]:
    """The status page (`status_page`) and the JSON it polls; every member is always there."""
    text, count = {"type": "string"}, {"type": "integer", "minimum": 0}
    maybe_text, maybe_number = {"type": ["string", "null"]}, {"type": ["number", "null"]}
    time = {"type": "string", "format": "date-time"}
    function = _record({
        "name": text, "version": text, "runtime": text, "package_type": text, "memory_size": {"type": "integer"},
        "timeout": {"type": "integer"}, "state": text, "state_reason": maybe_text,
        "environments": {"type": "object", "additionalProperties": count}, "queued": count,
        "concurrency_limit": {"type": ["integer", "null"]}, "cold_starts": count,
    })
    session = _record({"id_sha256": text, "state": {"enum": ["idle", "busy"]}, "age_seconds": {"type": "number"},
                       "idle_seconds": {"type": "number"}, "executions": count})
    invocation = _record({
        "request_id": text, "function": text, "version": text, "start_time": time, "duration_ms": maybe_number,
        "init_duration_ms": maybe_number, "outcome": {"enum": ["success", "error", "timeout", "throttled",
        "service_error"]}, "error_type": maybe_text, "error_message": maybe_text,
    })
    line = _record({"cursor": {"type": "integer", "minimum": 1}, "time": time, "function": text,
                    "request_id": maybe_text, "text": text, "truncated": count})
    limit = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
    invalid = {"description": "ValidationException: a query parameter is not a whole number in its range",
               "headers": {"x-amzn-ErrorType": {"required": True, "schema": {"enum": ["ValidationException"]}}},
               "content": {"application/json": {"schema": _record({"Type": {"const": "User"}, "message": text})}}}

    def get(op_id: str, summary: str, media_type: str, schema: dict[str, Any], *parameters: Any) -> dict[str, Any]:
        responses = {"200": {"description": summary, "content": {media_type: {"schema": schema}}}}
        operation = {"operationId": op_id, "summary": summary, "tags": ["Status page"],
                     "responses": {**responses, "400": invalid} if parameters else responses}
        return {"get": {**operation, "parameters": list(parameters)} if parameters else operation}

    return {
        "/": get("StatusPage", "The status page (HTML; it polls the /status/... JSON)", "text/html", text),
        "/status/page.js": get("StatusPageScript", "The status page's script", "text/javascript", text),
        "/status/page.css": get("StatusPageStyles", "The status page's styles", "text/css", text),
        "/status/functions": get(
            "StatusFunctions", "Every function version: configuration, state, its environments by state",
            "application/json", _record({"functions": {"type": "array", "items": function},
                                         "environments": _record({"live": count, "limit": count})}),
        ),
        "/status/sessions": get(
            "StatusSessions", "Live agent sessions (a digest of each id, never the id)", "application/json",
            _record({"available": {"type": "boolean"}, "problem": maybe_text, "limit": count,
                     "sessions": {"type": "array", "items": session}}),
        ),
        "/status/invocations": get(
            "StatusInvocations", "The last invocations, newest first (a ring of SANDBOX_STATUS_INVOCATIONS)",
            "application/json", _record({"invocations": {"type": "array", "items": invocation}, "recorded": count,
                                         "capacity": count}),
            {"name": "limit", "in": "query", "schema": limit,
             "description": f"how many (the newest), {INVOCATIONS_LIMIT} by default"},
        ),
        "/status/logs": get(
            "StatusLogs", "Log lines (function output, START/END/REPORT) after a cursor, oldest first",
            "application/json", _record({"lines": {"type": "array", "items": line}, "next": count, "skipped": count,
                                         "capacity": count}),
            {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
             "description": "the `next` of the last answer: only newer lines; none: the newest"},
            {"name": "limit", "in": "query", "schema": limit,
             "description": f"at most this many (the newest), {LINES_LIMIT} by default"},
        ),
    }
# fmt: on


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
        **_status(),
    }  # fmt: skip
