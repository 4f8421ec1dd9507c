"""The agent sessions API under /workspace/se/, with the original Sandbox Runtime's paths and envelope.

Every answer but a download is `{"success": true, "data": {...}}`, or, with the error's HTTP status,
`{"success": false, "error": {"code": "SESSION_NOT_FOUND", "message": "...", "details"?: {...}}}`
(`session_errors`); a download answers the file's bytes. The routes only translate HTTP into
`SessionManager` calls (`sessions.py`) and render what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sandbox import WORKSPACE_PATH

from .logs import get_logger
from .session import ExecutionResult
from .session_errors import InternalError, InvalidRequestError, ResourceLimitError, SessionError
from .session_limits import check_session_id
from .sessions import SessionManager
from .workspace import FileEntry, read_chunks

log = get_logger("sessions")

PREFIX = "/workspace/se"
_JSON_LIMIT = 16 * 1024 * 1024  # code and an event of up to 6 MB, JSON-escaped
_FORM_OVERHEAD = 1024 * 1024  # an upload's body beyond its file: boundaries, headers, the path field
_CHUNK = 1024 * 1024

Endpoint = Callable[[Request, SessionManager], Awaitable[Any]]


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}/session/{{session_id}}", _endpoint(create_session), methods=["POST"]),
        Route(f"{PREFIX}/session/{{session_id}}", _endpoint(close_session), methods=["DELETE"]),
        Route(f"{PREFIX}/status/{{session_id}}", _endpoint(status), methods=["GET"]),
        Route(f"{PREFIX}/execute_code/{{session_id}}", _endpoint(execute_code), methods=["POST"]),
        Route(f"{PREFIX}/execute/{{session_id}}", _endpoint(execute), methods=["POST"]),
        Route(f"{PREFIX}/upload/{{session_id}}", _endpoint(upload), methods=["POST"]),
        Route(f"{PREFIX}/download/{{session_id}}/{{filename:path}}", _endpoint(download), methods=["GET"]),
        Route(f"{PREFIX}/files/{{session_id}}", _endpoint(files), methods=["GET"]),
        Route(f"{PREFIX}/create/{{session_id}}", _endpoint(create_file), methods=["POST"]),
        Route(f"{PREFIX}/cleanup-all", _endpoint(cleanup_all), methods=["POST"]),
        Route(f"{PREFIX}/healthy", _endpoint(healthy), methods=["GET"]),
        Route(f"{PREFIX}/{{rest:path}}", _endpoint(unknown), methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]


def _endpoint(handler: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        manager: SessionManager = request.app.state.service.sessions
        try:
            answer = await handler(request, manager)
        except SessionError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception:
            log.exception("sessions.request_failed", path=request.url.path, request_id=request.state.request_id)
            error = InternalError("An internal error occurred; see the service log.")
            return JSONResponse(error.body(), status_code=error.status)
        return answer if isinstance(answer, Response) else JSONResponse({"success": True, "data": answer})

    return endpoint


# -- sessions ---------------------------------------------------------------------------------


async def create_session(request: Request, manager: SessionManager) -> dict[str, Any]:
    session_id = check_session_id(request.path_params["session_id"])
    body = await _json(request)
    session = await manager.create(
        session_id,
        allow_network=body.get("allow_network"),
        cpu_quota=body.get("cpu_quota"),
        memory_limit_kb=body.get("memory_limit"),
        timeout=body.get("timeout"),
        stateful=body.get("stateful", False),
    )
    status = manager.status(session_id)
    return {
        "session_id": session_id,
        "status": "active",
        "stateful": session.stateful,
        "created_at": status["created_at"],
        "limits": session.limits.as_dict(),
        "workspace": WORKSPACE_PATH,
    }


async def close_session(request: Request, manager: SessionManager) -> dict[str, Any]:
    session_id = request.path_params["session_id"]
    await manager.close(session_id)
    return {"message": "Session closed successfully", "session_id": session_id}


async def status(request: Request, manager: SessionManager) -> dict[str, Any]:
    return manager.status(request.path_params["session_id"])


async def cleanup_all(request: Request, manager: SessionManager) -> dict[str, Any]:
    closed = await manager.close_all()
    return {"message": f"{len(closed)} sessions closed", "closed": len(closed), "sessions": closed}


async def healthy(request: Request, manager: SessionManager) -> dict[str, Any]:
    described = manager.describe()
    if not described["available"]:
        raise InternalError(f"sessions are not available: {described['problem']}", details=described, status=503)
    return {"status": "healthy", **described}


async def unknown(request: Request, manager: SessionManager) -> None:
    raise InvalidRequestError(f"No sessions API operation matches {request.method} {request.url.path}", status=404)


# -- executions -------------------------------------------------------------------------------


async def execute_code(request: Request, manager: SessionManager) -> dict[str, Any] | Response:
    session_id = request.path_params["session_id"]
    manager.get(session_id)  # before reading the body
    body = await _json(request)
    if "code" not in body:
        raise InvalidRequestError("code is required")

    def run(on_output: OutputCallback | None) -> Awaitable[ExecutionResult]:
        return manager.execute_code(
            session_id,
            body["code"],
            event=body.get("event"),
            timeout=body.get("timeout"),
            filename=body.get("filename"),
            args=body.get("args") or (),
            script_type=body.get("script_type") or "python",
            on_output=on_output,
        )

    if _wants_stream(request, body):
        return _stream(request, manager, session_id, run)
    return _outcome(manager, session_id, await run(None))


async def execute(request: Request, manager: SessionManager) -> dict[str, Any] | Response:
    session_id = request.path_params["session_id"]
    manager.get(session_id)
    body = await _json(request)
    if "command" not in body:
        raise InvalidRequestError("command is required")

    def run(on_output: OutputCallback | None) -> Awaitable[ExecutionResult]:
        return manager.execute(
            session_id, body["command"], args=body.get("args") or (), timeout=body.get("timeout"), on_output=on_output
        )

    if _wants_stream(request, body):
        return _stream(request, manager, session_id, run)
    return _outcome(manager, session_id, await run(None))


# -- streaming (Server-Sent Events) -------------------------------------------------------------

OutputCallback = Callable[[str, str], None]
_STREAMS: set[asyncio.Task[Any]] = set()  # executions whose client went away: they run to their end


def _wants_stream(request: Request, body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("stream must be a boolean")
    return stream is True or (stream is None and "text/event-stream" in request.headers.get("accept", ""))


def _stream(
    request: Request,
    manager: SessionManager,
    session_id: str,
    run: Callable[[OutputCallback | None], Awaitable[ExecutionResult]],
) -> StreamingResponse:
    """The execution as Server-Sent Events: `stdout` and `stderr` (data: a JSON string, the text) as
    they are produced, then one `result` (data: the usual `{"success": true, "data": ...}`) or one
    `error` (data: `{"code", "message", "details"?}`)."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def execution() -> None:
        try:
            result = await run(lambda stream, text: queue.put_nowait((stream, text)))
            queue.put_nowait(("result", {"success": True, "data": _outcome(manager, session_id, result)}))
        except SessionError as exc:
            queue.put_nowait(("error", exc.body()["error"]))
        except Exception:
            log.exception("sessions.request_failed", path=request.url.path, request_id=request.state.request_id)
            queue.put_nowait(
                ("error", InternalError("An internal error occurred; see the service log.").body()["error"])
            )

    async def events() -> AsyncGenerator[bytes, None]:
        task = asyncio.get_running_loop().create_task(execution())
        _STREAMS.add(task)
        task.add_done_callback(_STREAMS.discard)
        while True:
            kind, data = await queue.get()
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            yield f"event: {kind}\ndata: {text}\n\n".encode("utf-8", "replace")
            if kind in ("result", "error"):
                return

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _outcome(manager: SessionManager, session_id: str, result: ExecutionResult) -> dict[str, Any]:
    """The execution's data, or the error the original API answers for it (a timeout: 408
    EXECUTION_TIMEOUT; a limit reached: RESOURCE_LIMIT; a syntax error: INVALID_CODE)."""
    memory_limit = manager.defaults.memory_limit_kb
    with contextlib.suppress(SessionError):
        memory_limit = manager.get(session_id).limits.memory_limit_kb
    if (problem := result.problem(memory_limit)) is not None:
        raise problem
    return result.as_dict()


# -- files ------------------------------------------------------------------------------------


async def upload(request: Request, manager: SessionManager) -> dict[str, Any]:
    session_id = request.path_params["session_id"]
    manager.get(session_id)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError("an upload is multipart/form-data with a 'file' part (and an optional 'path')")
    limit = manager.settings.session_max_file_mb * 1024 * 1024
    parser = MultiPartParser(request.headers, _limited(request.stream(), limit + _FORM_OVERHEAD), max_files=1,
                             max_fields=8)  # fmt: skip
    try:
        form = await parser.parse()
    except _TooLarge:
        raise ResourceLimitError(f"the upload is over the {limit}-byte limit for files", status=413) from None
    except MultiPartException as exc:
        raise InvalidRequestError(f"the upload is not a valid form: {exc.message}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidRequestError("the upload has no 'file' part")
        path = form.get("path")
        if path is not None and not isinstance(path, str):
            raise InvalidRequestError("path must be a form field, not a file")
        entry = await manager.upload(session_id, file.filename or "", file.file, path=path or None)
    finally:
        await form.close()
    return _file(entry)


async def create_file(request: Request, manager: SessionManager) -> dict[str, Any]:
    session_id = request.path_params["session_id"]
    manager.get(session_id)
    body = await _json(request)
    path = body.get("path") if body.get("filename") is None else body.get("filename")
    content = body.get("content", "")
    encoding = body.get("encoding") or "utf-8"
    if not isinstance(content, str):
        raise InvalidRequestError("content must be a string")
    if encoding == "base64":
        import base64
        import binascii

        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("content is not valid base64") from None
    elif encoding in ("utf-8", "utf8", "text"):
        data = content.encode("utf-8", "surrogatepass")
    else:
        raise InvalidRequestError("encoding must be utf-8 or base64")
    if path is None:
        raise InvalidRequestError("filename (or path) is required")
    return _file(await manager.write_file(session_id, path, data))


async def files(request: Request, manager: SessionManager) -> dict[str, Any]:
    entries, truncated = await manager.list_files(
        request.path_params["session_id"], request.query_params.get("path", "")
    )
    return {"files": [entry.as_dict() for entry in entries], "truncated": truncated}


async def download(request: Request, manager: SessionManager) -> Response:
    fd, size = await manager.open_file(request.path_params["session_id"], request.path_params["filename"])
    return _FileResponse(fd, size, posixpath.basename(request.path_params["filename"]))


class _FileResponse(Response):
    """A workspace file's bytes, read from a descriptor the workspace opened safely (never by path)."""

    def __init__(self, fd: int, size: int, filename: str) -> None:
        self.fd = fd
        self.size = size
        self.status_code = 200
        self.background = None
        quoted = urllib.parse.quote(filename)
        self.raw_headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(size).encode()),
            (b"content-disposition", f"attachment; filename*=UTF-8''{quoted}".encode("latin-1")),
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            # A file the sandbox shortens meanwhile ends early: the client sees a short body, not filler.
            chunks = read_chunks(self.fd, self.size, _CHUNK)
            while data := await asyncio.to_thread(next, chunks, b""):
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            os.close(self.fd)


def _file(entry: FileEntry) -> dict[str, Any]:
    return {"filename": posixpath.basename(entry.name), "path": f"{WORKSPACE_PATH}/{entry.name}", "size": entry.size}


# -- bodies -----------------------------------------------------------------------------------


class _TooLarge(MultiPartException):
    pass


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise _TooLarge("too large")
        yield chunk


async def _json(request: Request) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body), read up to a bound."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > _JSON_LIMIT:
        raise ResourceLimitError(f"the body is over {_JSON_LIMIT} bytes", status=413)
    chunks = []
    try:
        async for chunk in _limited(request.stream(), _JSON_LIMIT):
            chunks.append(chunk)
    except _TooLarge:
        raise ResourceLimitError(f"the body is over {_JSON_LIMIT} bytes", status=413) from None
    body = b"".join(chunks)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise InvalidRequestError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return data
