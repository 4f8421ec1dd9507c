"""`SandboxClient`: the Python SDK of sandbox-runtime's agent sessions API, and of its Invoke API.

    from sandbox_runtime.sdk import SandboxClient      # or: from runtime_api.sdk import SandboxClient

    client = SandboxClient(base_url="http://localhost:8000")
    await client.create_session(session_id="my_session")
    result = await client.execute_code(session_id="my_session", code="print('Hello!')", timeout=10)
    print(result.stdout)
    await client.close_session(session_id="my_session")

    async with SandboxClient() as client, client.session() as session:   # closed on the way out
        await session.upload_file("data.csv")
        result = await session.execute_code("def handler(event):\\n    return open(event['f']).read()",
                                            event={"f": "data.csv"})
        print(result.result)

Results are typed (`ExecutionResult`, `SessionInfo`, `FileInfo`, `UploadResult`, `InvokeResult`).
An error answer raises its code's class from `session_errors` (SessionNotFoundError, SessionExpiredError,
ExecutionTimeoutError, ResourceLimitError, InvalidCodeError, SessionFileNotFoundError, InvalidPathError,
...; all SessionError, with `.code`, `.message`, `.status`, `.details`); an Invoke API error raises
LambdaError. Network failures are httpx's own exceptions. `SyncSandboxClient` has the same methods,
without `await`, for scripts. Needs only httpx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from .session_errors import (
    ERRORS,
    ExecutionTimeoutError,
    InternalError,
    InvalidCodeError,
    InvalidPathError,
    InvalidRequestError,
    ResourceLimitError,
    SessionError,
    SessionExistsError,
    SessionExpiredError,
    SessionFileNotFoundError,
    SessionNotFoundError,
    error_from_body,
)

__all__ = [
    "ERRORS",
    "ExecutionResult",
    "ExecutionTimeoutError",
    "FileInfo",
    "InternalError",
    "InvalidCodeError",
    "InvalidPathError",
    "InvalidRequestError",
    "InvokeResult",
    "LambdaError",
    "ResourceLimitError",
    "SandboxClient",
    "SandboxSession",
    "SessionError",
    "SessionExistsError",
    "SessionExpiredError",
    "SessionFileNotFoundError",
    "SessionInfo",
    "SessionNotFoundError",
    "StreamEvent",
    "SyncSandboxClient",
    "UploadResult",
]

SESSIONS = "/workspace/se"
_EXECUTION_GRACE = 30.0  # on top of an execution's own timeout, for the HTTP call carrying it


@dataclass
class ExecutionResult:
    """One execute_code or execute. `result` is a handler's return value (`has_result` says whether
    there was one); `error` a handler's exception (errorType, errorMessage, stackTrace)."""

    exit_code: int
    stdout: str
    stderr: str
    execution_time: float
    result: Any = None
    has_result: bool = False
    error: dict[str, Any] | None = None
    resource_usage: dict[str, Any] = field(default_factory=dict)
    execution_id: str = ""
    reset: bool | None = None  # a stateful session's: whether its interpreter was reset (None: stateless)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and self.error is None

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ExecutionResult:
        return cls(
            exit_code=int(data.get("exit_code", -1)),
            stdout=str(data.get("stdout", "")),
            stderr=str(data.get("stderr", "")),
            execution_time=float(data.get("execution_time", 0.0)),
            result=data.get("result"),
            has_result="result" in data,
            error=data.get("error"),
            resource_usage=dict(data.get("resource_usage") or {}),
            execution_id=str(data.get("execution_id", "")),
            reset=data.get("reset") if isinstance(data.get("reset"), bool) else None,
            raw=data,
        )


@dataclass
class StreamEvent:
    """One event of a streamed execution: `type` "stdout" or "stderr" with `data` the text produced, or
    the last one, "result", with `result` the ExecutionResult. (An error ends the stream by raising.)"""

    type: str
    data: str = ""
    result: ExecutionResult | None = None


@dataclass
class SessionInfo:
    """A session as create_session and get_status describe it (status adds its activity and usage)."""

    session_id: str
    status: str
    created_at: str
    limits: dict[str, Any] = field(default_factory=dict)
    busy: bool = False
    executions: int = 0
    last_activity: str | None = None
    expires_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> SessionInfo:
        return cls(
            session_id=str(data.get("session_id", "")),
            status=str(data.get("status", "")),
            created_at=str(data.get("created_at", "")),
            limits=dict(data.get("limits") or {}),
            busy=bool(data.get("busy", False)),
            executions=int(data.get("executions", 0)),
            last_activity=data.get("last_activity"),
            expires_at=data.get("expires_at"),
            raw=data,
        )


@dataclass(frozen=True)
class FileInfo:
    name: str  # relative to /workspace
    size: int
    modified: str  # ISO 8601, UTC


@dataclass(frozen=True)
class UploadResult:
    filename: str
    path: str  # where it is inside the sandbox: /workspace/...
    size: int


class LambdaError(Exception):
    """An error answer of the Invoke API (not a function error, which is an InvokeResult)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class InvokeResult:
    status_code: int
    payload: bytes
    function_error: str | None = None  # "Unhandled" when the function failed
    log_result: str | None = None  # the decoded last 4 KB of its log, with log_type="Tail"
    executed_version: str | None = None
    request_id: str | None = None

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None


class SandboxClient:
    """An async client of one sandbox-runtime service. Close it with `aclose()` or `async with`."""

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        *,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=headers, transport=transport)

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- sessions -------------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str | None = None,
        *,
        allow_network: bool | None = None,
        cpu_quota: float | None = None,
        memory_limit: int | None = None,
        timeout: float | None = None,
        stateful: bool | None = None,
    ) -> SessionInfo:
        """Start a session (`session_id`, or a new id). `memory_limit` is in KB; `timeout` is the default
        timeout of its executions, in seconds. Unset limits are the service's SANDBOX_* defaults.
        `stateful=True` keeps one Python interpreter alive for execute_code: variables and imports persist
        between calls (a timeout or crash resets it: the result's `reset`, or the error's details, say so)."""
        session_id = session_id or f"session-{uuid.uuid4().hex[:12]}"
        body = _present(allow_network=allow_network, cpu_quota=cpu_quota, memory_limit=memory_limit, timeout=timeout,
                        stateful=stateful)  # fmt: skip
        return SessionInfo.from_data(await self._call("POST", f"/session/{_id(session_id)}", json=body))

    async def close_session(self, session_id: str) -> None:
        await self._call("DELETE", f"/session/{_id(session_id)}")

    async def get_status(self, session_id: str) -> SessionInfo:
        return SessionInfo.from_data(await self._call("GET", f"/status/{_id(session_id)}"))

    async def cleanup_all(self) -> int:
        """Close every session of the service; how many were closed."""
        return int((await self._call("POST", "/cleanup-all")).get("closed", 0))

    async def healthy(self) -> dict[str, Any]:
        return await self._call("GET", "/healthy")

    @asynccontextmanager
    async def session(self, session_id: str | None = None, **limits: Any) -> AsyncIterator[SandboxSession]:
        """`async with client.session() as session:` a new session, closed on the way out."""
        info = await self.create_session(session_id, **limits)
        try:
            yield SandboxSession(self, info.session_id, info)
        finally:
            with suppress(SessionNotFoundError, SessionExpiredError):
                await self.close_session(info.session_id)

    # -- executions -----------------------------------------------------------------------------

    async def execute_code(
        self,
        session_id: str,
        code: str,
        *,
        event: Any = None,
        timeout: float | None = None,
        filename: str | None = None,
        args: list[str] | None = None,
        script_type: str | None = None,
    ) -> ExecutionResult:
        """Run code in the session. Python that defines `handler(event[, context])` is called with
        `event` and `result` is what it returns; other code runs as a script (with `args`).
        `script_type` "bash" runs it with bash. A timeout raises ExecutionTimeoutError."""
        body = _present(code=code, event=event, timeout=timeout, filename=filename, args=args, script_type=script_type)
        data = await self._call("POST", f"/execute_code/{_id(session_id)}", json=body, timeout=self._long(timeout))
        return ExecutionResult.from_data(data)

    async def execute(
        self, session_id: str, command: str, *, args: list[str] | None = None, timeout: float | None = None
    ) -> ExecutionResult:
        """Run a shell command line in the session's /workspace (`args` are appended, quoted)."""
        body = _present(command=command, args=args, timeout=timeout)
        data = await self._call("POST", f"/execute/{_id(session_id)}", json=body, timeout=self._long(timeout))
        return ExecutionResult.from_data(data)

    async def execute_code_stream(
        self,
        session_id: str,
        code: str,
        *,
        event: Any = None,
        timeout: float | None = None,
        filename: str | None = None,
        args: list[str] | None = None,
        script_type: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """execute_code, streamed: StreamEvents "stdout"/"stderr" as the code prints, then "result". An
        error (a timeout, ...) raises its SessionError, after the output that came before it."""
        body = _present(code=code, event=event, timeout=timeout, filename=filename, args=args, script_type=script_type)
        async for item in self._stream(f"/execute_code/{_id(session_id)}", body, timeout):
            yield item

    async def execute_stream(
        self, session_id: str, command: str, *, args: list[str] | None = None, timeout: float | None = None
    ) -> AsyncIterator[StreamEvent]:
        """execute, streamed: StreamEvents "stdout"/"stderr" as the command prints, then "result"."""
        body = _present(command=command, args=args, timeout=timeout)
        async for item in self._stream(f"/execute/{_id(session_id)}", body, timeout):
            yield item

    async def _stream(self, path: str, body: dict[str, Any], timeout: float | None) -> AsyncIterator[StreamEvent]:
        body = {**body, "stream": True}
        headers = {"accept": "text/event-stream"}
        async with self._http.stream(
            "POST", SESSIONS + path, json=body, headers=headers, timeout=self._long(timeout)
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error(response)
            kind, lines = "message", []
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    lines.append(line[5:].removeprefix(" "))
                elif not line and lines:
                    data = json.loads("\n".join(lines))
                    lines = []
                    if kind == "error":
                        raise error_from_body(response.status_code, {"error": data})
                    if kind == "result":
                        envelope = data.get("data") if isinstance(data, dict) else None
                        yield StreamEvent("result", result=ExecutionResult.from_data(envelope or {}))
                        return
                    if kind in ("stdout", "stderr"):
                        yield StreamEvent(kind, data=str(data))
            raise SessionError("the stream ended without a result")

    # -- files ----------------------------------------------------------------------------------

    async def upload_file(
        self,
        session_id: str,
        file: str | os.PathLike[str] | bytes | IO[bytes],
        *,
        filename: str | None = None,
        path: str | None = None,
    ) -> UploadResult:
        """Upload a local file (a path), bytes or a binary file object. Without `path` it lands at the
        workspace's root under its own name (`filename`); `path` is a folder ("data/", "/workspace/in/")
        or the file's path in the workspace."""
        if isinstance(file, bytes):
            name, content = filename or "upload.bin", file
            data = await self._upload(session_id, name, content, path)
        elif isinstance(file, str | os.PathLike):
            local = Path(file)
            with local.open("rb") as handle:
                data = await self._upload(session_id, filename or local.name, handle, path)
        else:
            name = filename or Path(getattr(file, "name", "upload.bin")).name
            data = await self._upload(session_id, name, file, path)
        return UploadResult(str(data.get("filename")), str(data.get("path")), int(data.get("size", 0)))

    async def _upload(self, session_id: str, name: str, content: Any, path: str | None) -> dict[str, Any]:
        form = {"path": path} if path else None
        return await self._call("POST", f"/upload/{_id(session_id)}", files={"file": (name, content)}, data=form)

    async def create_file(self, session_id: str, filename: str, content: str | bytes) -> UploadResult:
        """Write a file in the workspace from text or bytes (sent as JSON; folders on the way are made)."""
        if isinstance(content, bytes):
            body = {"filename": filename, "content": base64.b64encode(content).decode(), "encoding": "base64"}
        else:
            body = {"filename": filename, "content": content}
        data = await self._call("POST", f"/create/{_id(session_id)}", json=body)
        return UploadResult(str(data.get("filename")), str(data.get("path")), int(data.get("size", 0)))

    async def download_file(
        self, session_id: str, filename: str, *, destination: str | os.PathLike[str] | None = None
    ) -> bytes:
        """A workspace file's bytes (also written to `destination` when given)."""
        if filename.startswith("/workspace/"):  # as the sandbox names it
            filename = filename[len("/workspace/") :]
        url = f"{SESSIONS}/download/{_id(session_id)}/{quote(filename, safe='/')}"
        response = await self._http.get(url)
        if response.status_code != 200:
            raise _error(response)
        if destination is not None:
            Path(destination).write_bytes(response.content)
        return response.content

    async def list_files(self, session_id: str, path: str | None = None) -> list[FileInfo]:
        """The workspace's files (under `path`), recursively."""
        params = {"path": path} if path else None
        data = await self._call("GET", f"/files/{_id(session_id)}", params=params)
        return [FileInfo(str(f["name"]), int(f["size"]), str(f["modified"])) for f in data.get("files", [])]

    # -- functions ------------------------------------------------------------------------------

    async def invoke(
        self,
        function_name: str,
        payload: Any = None,
        *,
        invocation_type: str = "RequestResponse",
        log_type: str | None = None,
        qualifier: str | None = None,
        client_context: dict[str, Any] | None = None,
    ) -> InvokeResult:
        """Invoke a Lambda function through the Invoke API. `payload` is JSON-encoded unless it is bytes.
        A function error is a result (`function_error`); an error of the service raises LambdaError."""
        headers = {"X-Amz-Invocation-Type": invocation_type}
        if log_type:
            headers["X-Amz-Log-Type"] = log_type
        if client_context is not None:
            headers["X-Amz-Client-Context"] = base64.b64encode(json.dumps(client_context).encode()).decode()
        body = payload if isinstance(payload, bytes) else json.dumps(payload if payload is not None else {}).encode()
        response = await self._http.post(
            f"/2015-03-31/functions/{quote(function_name, safe=':')}/invocations",
            content=body,
            headers=headers,
            params={"Qualifier": qualifier} if qualifier else None,
            timeout=max(self.timeout, 900.0 + _EXECUTION_GRACE),
        )
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.json().get("Message") or response.text
            except ValueError:
                message = response.text
            code = response.headers.get("x-amzn-ErrorType", f"HTTP{response.status_code}").split(":")[0]
            raise LambdaError(code, str(message), response.status_code)
        log = response.headers.get("X-Amz-Log-Result")
        return InvokeResult(
            status_code=response.status_code,
            payload=response.content,
            function_error=response.headers.get("X-Amz-Function-Error"),
            log_result=base64.b64decode(log).decode(errors="replace") if log else None,
            executed_version=response.headers.get("X-Amz-Executed-Version"),
            request_id=response.headers.get("x-amzn-RequestId"),
        )

    # -- the wire -------------------------------------------------------------------------------

    def _long(self, timeout: float | None) -> httpx.Timeout:
        """The HTTP timeouts of a call that runs something for up to `timeout` seconds (None: the
        session's own default, which the service enforces: no read timeout then)."""
        return httpx.Timeout(self.timeout, read=None if timeout is None else timeout + _EXECUTION_GRACE)

    async def _call(
        self, method: str, path: str, *, timeout: httpx.Timeout | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self._http.request(method, SESSIONS + path, timeout=timeout or self.timeout, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        try:
            body = response.json()
        except ValueError:
            raise SessionError(f"HTTP {response.status_code}: not JSON: {response.text[:300]}") from None
        if not isinstance(body, dict) or body.get("success") is not True:
            raise _error(response)
        data = body.get("data")
        return data if isinstance(data, dict) else {}


class SandboxSession:
    """One session's methods without the session id (from `SandboxClient.session()`)."""

    def __init__(self, client: SandboxClient, session_id: str, info: SessionInfo) -> None:
        self.client = client
        self.id = session_id
        self.info = info

    async def execute_code(self, code: str, **kwargs: Any) -> ExecutionResult:
        return await self.client.execute_code(self.id, code, **kwargs)

    async def execute(self, command: str, **kwargs: Any) -> ExecutionResult:
        return await self.client.execute(self.id, command, **kwargs)

    def execute_code_stream(self, code: str, **kwargs: Any) -> AsyncIterator[StreamEvent]:
        return self.client.execute_code_stream(self.id, code, **kwargs)

    def execute_stream(self, command: str, **kwargs: Any) -> AsyncIterator[StreamEvent]:
        return self.client.execute_stream(self.id, command, **kwargs)

    async def upload_file(self, file: Any, **kwargs: Any) -> UploadResult:
        return await self.client.upload_file(self.id, file, **kwargs)

    async def create_file(self, filename: str, content: str | bytes) -> UploadResult:
        return await self.client.create_file(self.id, filename, content)

    async def download_file(self, filename: str, **kwargs: Any) -> bytes:
        return await self.client.download_file(self.id, filename, **kwargs)

    async def list_files(self, path: str | None = None) -> list[FileInfo]:
        return await self.client.list_files(self.id, path)

    async def get_status(self) -> SessionInfo:
        return await self.client.get_status(self.id)

    async def close(self) -> None:
        await self.client.close_session(self.id)


class SyncSandboxClient:
    """`SandboxClient` for scripts: the same methods, blocking (on an event loop of its own; not for
    use inside a running event loop). Close it with `close()` or `with`."""

    def __init__(self, base_url: str = "http://localhost:8000", **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = SandboxClient(base_url, **kwargs)

    def __enter__(self) -> SyncSandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def _run(self, coroutine: Any) -> Any:
        return self._runner.run(coroutine)

    def create_session(self, session_id: str | None = None, **kwargs: Any) -> SessionInfo:
        return self._run(self._client.create_session(session_id, **kwargs))  # type: ignore[no-any-return]

    def close_session(self, session_id: str) -> None:
        self._run(self._client.close_session(session_id))

    def get_status(self, session_id: str) -> SessionInfo:
        return self._run(self._client.get_status(session_id))  # type: ignore[no-any-return]

    def cleanup_all(self) -> int:
        return self._run(self._client.cleanup_all())  # type: ignore[no-any-return]

    def healthy(self) -> dict[str, Any]:
        return self._run(self._client.healthy())  # type: ignore[no-any-return]

    def execute_code(self, session_id: str, code: str, **kwargs: Any) -> ExecutionResult:
        return self._run(self._client.execute_code(session_id, code, **kwargs))  # type: ignore[no-any-return]

    def execute(self, session_id: str, command: str, **kwargs: Any) -> ExecutionResult:
        return self._run(self._client.execute(session_id, command, **kwargs))  # type: ignore[no-any-return]

    def upload_file(self, session_id: str, file: Any, **kwargs: Any) -> UploadResult:
        return self._run(self._client.upload_file(session_id, file, **kwargs))  # type: ignore[no-any-return]

    def create_file(self, session_id: str, filename: str, content: str | bytes) -> UploadResult:
        return self._run(self._client.create_file(session_id, filename, content))  # type: ignore[no-any-return]

    def download_file(self, session_id: str, filename: str, **kwargs: Any) -> bytes:
        return self._run(self._client.download_file(session_id, filename, **kwargs))  # type: ignore[no-any-return]

    def list_files(self, session_id: str, path: str | None = None) -> list[FileInfo]:
        return self._run(self._client.list_files(session_id, path))  # type: ignore[no-any-return]

    def invoke(self, function_name: str, payload: Any = None, **kwargs: Any) -> InvokeResult:
        return self._run(self._client.invoke(function_name, payload, **kwargs))  # type: ignore[no-any-return]

    @contextmanager
    def session(self, session_id: str | None = None, **limits: Any) -> Iterator[str]:
        """`with client.session() as session_id:` a new session, closed on the way out."""
        info = self.create_session(session_id, **limits)
        try:
            yield info.session_id
        finally:
            with suppress(SessionNotFoundError, SessionExpiredError):
                self.close_session(info.session_id)


def _error(response: httpx.Response) -> SessionError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return error_from_body(response.status_code, body)


def _present(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _id(session_id: str) -> str:
    return quote(session_id, safe="")
