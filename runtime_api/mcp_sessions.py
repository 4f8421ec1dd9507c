"""MCP tools over agent sessions: run code, run a shell command, read and write files in a session's sandbox.

A session is a long-lived sandbox with a persistent workspace (the sessions API, `/workspace/se/...`). These
tools reach it through a small interface, `SessionBackend`, which the session manager implements; the MCP
server offers them only when the service has one (`sessions_of`). Every tool but `create_session` takes a
`session_id`; `run_code`, `run_command` and `write_file` start a new session when it is left out and say
which one in their result, so an agent can go on in the same workspace.

Results are JSON text. A tool error (`isError`) is what the agent must react to: an unknown session, a
timeout, code that raised, a file that is not there. A command's non-zero exit status is a result, not an
error: the output says what happened.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import mcp_types as types
from mcp.shared.exceptions import MCPError

from .logs import get_logger

log = get_logger("mcp")

MAX_FILE_BYTES = 6 * 1024 * 1024  # what one tool result carries at most (as an Invoke payload)


@runtime_checkable
class SessionBackend(Protocol):
    """What the MCP session tools need from the session manager. Paths are relative to the session's
    workspace (absolute ones inside it are accepted); unknown sessions raise KeyError, refused input
    ValueError, file problems OSError (FileNotFoundError, IsADirectoryError, ...), each with a message fit
    for the agent."""

    async def create_session(self, *, allow_network: bool | None = None) -> str:
        """Start a session (limits from the SANDBOX_* settings); its id."""
        ...

    async def close_session(self, session_id: str) -> None:
        """Stop the session's sandbox and remove its workspace."""
        ...

    async def execute_code(
        self, session_id: str, code: str, *, event: Any = None, timeout: float | None = None
    ) -> Mapping[str, Any]:
        """Run Python code in the session: a `handler(event)` it defines is called with `event` and its result
        returned; other code runs as a script. A mapping with at least `stdout`, `stderr`, `exit_code` and
        `timed_out`, plus `result` (the handler's, JSON) or `error` (`errorType`, `errorMessage`, `stackTrace`)."""
        ...

    async def execute(self, session_id: str, command: str, *, timeout: float | None = None) -> Mapping[str, Any]:
        """Run a shell command in the workspace: `stdout`, `stderr`, `exit_code`, `timed_out`."""
        ...

    async def read_file(self, session_id: str, path: str) -> bytes: ...

    async def write_file(self, session_id: str, path: str, data: bytes) -> None:
        """Create or replace the file, and the folders above it."""
        ...


def sessions_of(*holders: Any) -> SessionBackend | None:
    """The session manager of the first holder (the Service, the app's state) that has one."""
    for holder in holders:
        manager = getattr(holder, "sessions", None)
        if isinstance(manager, SessionBackend):
            return manager
    return None


_SESSION_ID = {"type": "string", "description": "the session to use (from create_session or an earlier result)"}
_NEW_OR_SESSION_ID = {
    "type": "string",
    "description": "the session to use; leave it out to start a new one (its id is in the result)",
}
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "description": "seconds before it is stopped"}

TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "create_session": (
        "Start a sandboxed session: a Linux sandbox with a persistent workspace folder (/workspace) where "
        "run_code, run_command, read_file and write_file work. Returns its session_id.",
        {
            "type": "object",
            "properties": {
                "allow_network": {"type": "boolean", "description": "outbound network access (default: the service's)"}
            },
            "additionalProperties": False,
        },
    ),
    "run_code": (
        "Run Python code in a session's sandbox (cwd /workspace). If the code defines handler(event), it is "
        "called with `event` and its JSON result returned; otherwise the code runs as a script. Returns "
        "stdout, stderr, exit_code and the result.",
        {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Python source"},
                "event": {"description": "the argument of handler(event), any JSON value"},
                "session_id": _NEW_OR_SESSION_ID,
                "timeout": _TIMEOUT,
            },
            "required": ["code"],
            "additionalProperties": False,
        },
    ),
    "run_command": (
        "Run a shell command (bash -c) in a session's sandbox, in /workspace. Returns stdout, stderr and exit_code.",
        {
            "type": "object",
            "properties": {
                "command": {"type": "string"},
                "session_id": _NEW_OR_SESSION_ID,
                "timeout": _TIMEOUT,
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    ),
    "read_file": (
        "Read a file of a session's workspace. Text comes back as is; other bytes base64-encoded.",
        {
            "type": "object",
            "properties": {
                "session_id": _SESSION_ID,
                "path": {"type": "string", "description": "relative to /workspace"},
            },
            "required": ["session_id", "path"],
            "additionalProperties": False,
        },
    ),
    "write_file": (
        "Write a file into a session's workspace (folders are created as needed).",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "relative to /workspace"},
                "content": {"type": "string"},
                "encoding": {"enum": ["utf-8", "base64"], "default": "utf-8", "description": "of `content`"},
                "session_id": _NEW_OR_SESSION_ID,
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    ),
    "close_session": (
        "Stop a session: its sandbox ends and its workspace is removed.",
        {
            "type": "object",
            "properties": {"session_id": _SESSION_ID},
            "required": ["session_id"],
            "additionalProperties": False,
        },
    ),
}


def _json(document: Mapping[str, Any], *, error: bool = False) -> types.CallToolResult:
    text = json.dumps(document, ensure_ascii=False, default=str)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


def _error(message: str, **details: Any) -> types.CallToolResult:
    return _json({"error": message, **details}, error=True)


class SessionTools:
    """The session tools of `mcp_server.build_server`, over a SessionBackend."""

    names = frozenset(TOOLS)

    def __init__(self, backend: SessionBackend) -> None:
        self.backend = backend

    def tools(self) -> list[types.Tool]:
        return [
            types.Tool(name=name, description=description, input_schema=schema)
            for name, (description, schema) in TOOLS.items()
        ]

    def owns(self, name: str) -> bool:
        return name in TOOLS

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        return TOOLS[name][1] if name in TOOLS else None

    async def call(self, name: str, arguments: Mapping[str, Any] | None) -> types.CallToolResult:
        if name not in TOOLS:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")
        args = dict(arguments or {})
        try:
            return await getattr(self, f"_{name}")(args)
        except KeyError as exc:
            missing = exc.args[0] if exc.args else ""
            return _error(f"No such session: {missing}. Start one with create_session, or leave session_id out.")
        except (ValueError, TypeError) as exc:
            return _error(f"Invalid arguments for {name}: {exc}")
        except OSError as exc:
            return _error(f"{type(exc).__name__}: {exc.strerror or exc}", path=args.get("path"))
        except Exception as exc:  # an agent gets an answer it can act on; the log gets the details
            log.exception("mcp.session_tool_failed", tool=name)
            return _error(f"{name} failed: {type(exc).__name__}: {exc}")

    async def _session(self, args: dict[str, Any]) -> tuple[str, bool]:
        """The session the call names, or a new one (True)."""
        session_id = args.get("session_id")
        if session_id is None:
            return await self.backend.create_session(), True
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        return session_id, False

    @staticmethod
    def _timeout(args: dict[str, Any]) -> float | None:
        timeout = args.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return float(timeout) if timeout is not None else None

    @staticmethod
    def _text(args: dict[str, Any], key: str) -> str:
        value = args.get(key)
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        return value

    async def _create_session(self, args: dict[str, Any]) -> types.CallToolResult:
        allow_network = args.get("allow_network")
        if allow_network is not None and not isinstance(allow_network, bool):
            raise ValueError("allow_network must be true or false")
        return _json({"session_id": await self.backend.create_session(allow_network=allow_network)})

    async def _close_session(self, args: dict[str, Any]) -> types.CallToolResult:
        session_id = self._text(args, "session_id")
        await self.backend.close_session(session_id)
        return _json({"session_id": session_id, "closed": True})

    async def _run_code(self, args: dict[str, Any]) -> types.CallToolResult:
        code, timeout = self._text(args, "code"), self._timeout(args)
        session_id, new = await self._session(args)
        outcome = dict(await self.backend.execute_code(session_id, code, event=args.get("event"), timeout=timeout))
        failed = bool(outcome.get("timed_out")) or outcome.get("error") is not None or outcome.get("exit_code") != 0
        return _json({"session_id": session_id, "new_session": new, **outcome}, error=failed)

    async def _run_command(self, args: dict[str, Any]) -> types.CallToolResult:
        command, timeout = self._text(args, "command"), self._timeout(args)
        session_id, new = await self._session(args)
        outcome = dict(await self.backend.execute(session_id, command, timeout=timeout))
        return _json({"session_id": session_id, "new_session": new, **outcome}, error=bool(outcome.get("timed_out")))

    async def _read_file(self, args: dict[str, Any]) -> types.CallToolResult:
        session_id, path = self._text(args, "session_id"), self._text(args, "path")
        data = await self.backend.read_file(session_id, path)
        if len(data) > MAX_FILE_BYTES:
            return _error(f"{path} is {len(data)} bytes; read_file returns at most {MAX_FILE_BYTES}", path=path)
        try:
            return _json({"session_id": session_id, "path": path, "encoding": "utf-8", "content": data.decode()})
        except UnicodeDecodeError:
            content = base64.b64encode(data).decode()
            return _json({"session_id": session_id, "path": path, "encoding": "base64", "content": content})

    async def _write_file(self, args: dict[str, Any]) -> types.CallToolResult:
        path, content = self._text(args, "path"), self._text(args, "content")
        encoding = args.get("encoding", "utf-8")
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"content is not valid base64: {exc}") from None
        elif encoding == "utf-8":
            data = content.encode()
        else:
            raise ValueError(f"encoding must be utf-8 or base64, got {encoding!r}")
        session_id, new = await self._session(args)
        await self.backend.write_file(session_id, path, data)
        return _json({"session_id": session_id, "new_session": new, "path": path, "bytes": len(data)})
