"""Agent sessions: the manager behind the sessions API (`session_routes`), and the Python API for
anything else that drives sessions (MCP).

A session is a long-lived sandbox with a persistent workspace (`session.py`), known by an id the
client chooses. The manager owns the table of sessions and everything around it:

- **Creation**: from a warm spare when the request asks for the default limits (`SANDBOX_POOL_SIZE`,
  or `SANDBOX_SESSION_POOL_SIZE`, spares are kept started), else a new sandbox.
- **A cap**: at most `SANDBOX_MAX_SESSIONS` live sessions (spares are not counted), its own budget
  apart from the functions' `SANDBOX_MAX_ENVIRONMENTS`; past it, RESOURCE_LIMIT (429).
- **Expiry**: a session idle (no call touching it, no execution running) for
  `SANDBOX_SESSION_IDLE_TIMEOUT` seconds is closed and its workspace removed; its id then answers
  SESSION_EXPIRED (as does one whose sandbox ended by itself) rather than SESSION_NOT_FOUND.
- **Executions**: one at a time per session, each in a child process of the session's agent, with
  the session's default timeout unless the call gives one.
- **Files**: through `workspace.Workspace`, which never follows a link the sandbox made.
- Lifecycle events in the structured log: session.created, session.execution, session.closed,
  session.expired, session.ended.

Python API (every method but `get`, `status`, `describe` is async). Problems with the request or the
session raise a `session_errors` class (an unknown session is also a KeyError, refused input a
ValueError, a missing file a FileNotFoundError); how an execution went (a timeout, a limit reached, a
syntax error, a non-zero exit) is data in its ExecutionResult, a read-only mapping:
    create_session(session_id=None, *, allow_network=None, cpu_quota=None, memory_limit_kb=None,
                   timeout=None, stateful=False) -> str
        (an id is made up when none is given; `create` returns the Session)
    get(session_id) -> Session;  status(session_id) -> dict
    close_session(session_id) (also `close`);  close_all() -> [ids]
    execute_code(session_id, code, *, event=None, timeout=None, filename=None, args=(), script_type="python",
                 on_output=None) -> ExecutionResult
    execute(session_id, command, *, args=(), timeout=None, on_output=None) -> ExecutionResult
        (`on_output(stream, text)` gets stdout/stderr as they come: the streaming API)
    write_file(session_id, path, data) -> FileEntry;  upload(session_id, filename, content, *, path=None)
    read_file(session_id, path) -> bytes;  open_file(session_id, path) -> (fd, size)
    list_files(session_id, path="") -> ([FileEntry], truncated)
This is also the `SessionBackend` the MCP session tools use (`mcp_sessions`).
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, BinaryIO, Protocol

from sandbox import WORKSPACE_PATH, SandboxError, UidExhausted

from .agent import AgentGone
from .config import Settings
from .logs import detached, get_logger
from .session import ExecutionResult, Session, SessionLauncher
from .session_errors import (
    InternalError,
    InvalidCodeError,
    InvalidRequestError,
    ResourceLimitError,
    SessionError,
    SessionExistsError,
    SessionExpiredError,
    SessionNotFoundError,
)
from .session_limits import (
    SessionLimits,
    arguments_of,
    check_session_id,
    execution_timeout,
    script_type_of,
    session_limits,
)
from .workspace import FileEntry, display, iso_time, parse_path

log = get_logger("sessions")

_REMEMBERED = 4096  # ended sessions whose ids still answer SESSION_EXPIRED


class SessionObserver(Protocol):
    """What the metrics (`metrics.Metrics`) are told: a session's end and each execution."""

    def session_ended(self, reason: str, lifetime_s: float) -> None: ...
    def execution(self, kind: str, outcome: str, seconds: float) -> None: ...


class SessionManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.defaults = SessionLimits(
            memory_limit_kb=settings.memory_limit_kb,
            cpu_quota=settings.cpu_quota,
            timeout=float(settings.timeout_seconds),
            allow_network=settings.allow_network,
        )
        # By default as many as functions pre-start, but never more than sessions can be live: SANDBOX_POOL_SIZE=200
        # (200 warm environments of one function) started 200 session sandboxes too, all at once.
        pool_size = settings.session_pool_size
        self.pool_size = min(settings.pool_size, settings.max_sessions) if pool_size is None else pool_size
        self.problem: str | None = "the service has not started"  # why sessions cannot run, if they cannot
        self.observer: SessionObserver | None = None  # the service's metrics
        self.counts = {"created": 0, "created_warm": 0, "closed": 0, "expired": 0, "ended": 0, "executions": 0}
        self._launcher: SessionLauncher | None = None
        self._sessions: dict[str, Session] = {}
        self._reserved: set[str] = set()  # ids being created
        self._ended: OrderedDict[str, str] = OrderedDict()  # id -> why (SESSION_EXPIRED)
        self._spares: list[Session] = []
        self._filling = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False
        self._shell = shutil.which("bash", path="/usr/bin:/bin") or "/bin/sh"

    # -- start and stop -------------------------------------------------------------------------

    async def start(
        self, launcher: SessionLauncher | None, *, problem: str | None = None, warm_up: bool = True
    ) -> None:
        """Serve sessions on `launcher` (None: they cannot run here, for `problem`); with `warm_up`,
        keep the warm pool filled."""
        self._launcher = launcher
        self.problem = None if launcher is not None else (problem or "sessions are not available")
        if launcher is None:
            log.warning("sessions.unavailable", reason=self.problem)
            return
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        if not warm_up:
            self.pool_size = 0
        self._refill()

    async def shutdown(self) -> None:
        """Close every session and spare (their sandboxes and workspaces)."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        sessions = [*self._sessions.values(), *self._spares]
        self._sessions.clear()
        self._spares.clear()
        await asyncio.gather(*(session.stop() for session in sessions), return_exceptions=True)

    # -- sessions -------------------------------------------------------------------------------

    def limits(self, **requested: object) -> SessionLimits:
        """A session's limits: the requested ones (allow_network, cpu_quota, memory_limit_kb, timeout;
        checked), else the defaults (SANDBOX_*)."""
        return session_limits(self.defaults, **requested)

    async def create_session(
        self,
        session_id: str | None = None,
        *,
        allow_network: bool | None = None,
        cpu_quota: float | None = None,
        memory_limit_kb: int | None = None,
        timeout: float | None = None,
        stateful: bool = False,
    ) -> str:
        """Start a session; its id (`session_id`, or a new one)."""
        session_id = session_id or f"session-{uuid.uuid4().hex[:12]}"
        await self.create(
            session_id,
            allow_network=allow_network,
            cpu_quota=cpu_quota,
            memory_limit_kb=memory_limit_kb,
            timeout=timeout,
            stateful=stateful,
        )
        return session_id

    async def create(
        self,
        session_id: str,
        *,
        allow_network: bool | None = None,
        cpu_quota: float | None = None,
        memory_limit_kb: int | None = None,
        timeout: float | None = None,
        stateful: bool = False,
    ) -> Session:
        """Start a session under `session_id` (a warm spare when the limits are the defaults). A `stateful`
        one runs execute_code's Python in one interpreter kept alive between calls."""
        check_session_id(session_id)
        if not isinstance(stateful, bool):
            raise InvalidRequestError("stateful must be a boolean")
        limits = self.limits(
            allow_network=allow_network, cpu_quota=cpu_quota, memory_limit_kb=memory_limit_kb, timeout=timeout
        )
        launcher = self._require()
        if session_id in self._sessions or session_id in self._reserved:
            raise SessionExistsError(f"Session '{session_id}' already exists")
        if len(self._sessions) + len(self._reserved) >= self.settings.max_sessions:
            raise ResourceLimitError(
                f"at most {self.settings.max_sessions} sessions may be open at once (SANDBOX_MAX_SESSIONS): "
                "close one first",
                status=429,
            )
        started = time.perf_counter()
        self._reserved.add(session_id)
        try:
            session = self._take_spare(limits)
            warm = session is not None
            if session is None:
                session = await self._launch(launcher, limits)
        finally:
            self._reserved.discard(session_id)
        if self._closing:
            await session.stop()
            raise InternalError("the service is shutting down")
        session.id = session_id
        session.stateful = stateful
        session.created_at = time.time()
        session.touch()
        session.on_end = self._on_end
        self._sessions[session_id] = session
        self._ended.pop(session_id, None)
        self.counts["created"] += 1
        self.counts["created_warm"] += warm
        log.info(
            "session.created",
            session_id=session_id,
            warm=warm,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            start_ms=session.start_ms,  # the sandbox's own start (before the creation, for a warm one)
            uid=session.sandbox.uid,
            **limits.as_dict(),
        )
        self._refill()
        return session

    def get(self, session_id: str) -> Session:
        """The live session `session_id`; SESSION_EXPIRED or SESSION_NOT_FOUND otherwise."""
        session = self._sessions.get(session_id)
        if session is not None:
            return session
        if (why := self._ended.get(session_id)) is not None:
            raise SessionExpiredError(why)
        raise SessionNotFoundError(f"Session '{session_id}' does not exist")

    def live(self) -> list[tuple[str, Session]]:
        """The live sessions with their ids, oldest first."""
        return sorted(self._sessions.items(), key=lambda item: item[1].created_at)

    def status(self, session_id: str) -> dict[str, Any]:
        session = self.get(session_id)
        idle = time.monotonic() - session.last_activity
        last = time.time() - idle
        try:
            usage = session.workspace.usage()
        except OSError:
            usage = {}
        peak = session.sandbox.memory_peak_bytes()
        return {
            "session_id": session_id,
            "status": "active",
            "busy": session.busy,
            "stateful": session.stateful,
            "created_at": iso_time(session.created_at),
            "last_activity": iso_time(last),
            "expires_at": iso_time(last + self.settings.session_idle_timeout_seconds),
            "executions": session.executions,
            "limits": session.limits.as_dict(),
            "workspace": {"path": WORKSPACE_PATH, **usage},
            "memory_peak_kb": None if peak is None else peak // 1024,
        }

    async def close(self, session_id: str) -> None:
        """Close a session: its sandbox (and anything running in it) ends and its workspace is removed."""
        session = self.get(session_id)
        del self._sessions[session_id]
        await session.stop()
        self.counts["closed"] += 1
        log.info("session.closed", session_id=session_id, **self._lifetime(session, "closed"))

    async def close_session(self, session_id: str) -> None:
        await self.close(session_id)

    async def close_all(self) -> list[str]:
        """Close every session (not the warm spares); their ids."""
        ids = list(self._sessions)
        await asyncio.gather(*(self.close(session_id) for session_id in ids), return_exceptions=True)
        return ids

    def describe(self) -> dict[str, Any]:
        return {
            "available": self.problem is None,
            "problem": self.problem,
            "active": len(self._sessions),
            "limit": self.settings.max_sessions,
            "pool": {"size": self.pool_size, "ready": len(self._spares), "starting": self._filling},
            "idle_timeout": self.settings.session_idle_timeout_seconds,
            **self.counts,
        }

    # -- executions -----------------------------------------------------------------------------

    async def execute_code(
        self,
        session_id: str,
        code: str,
        *,
        event: Any = None,
        timeout: float | None = None,
        filename: str | None = None,
        args: Sequence[str] = (),
        script_type: str = "python",
        on_output: Callable[[str, str], None] | None = None,
    ) -> ExecutionResult:
        """Write `code` into the workspace (`filename`, main.py by default) and run it: Python that
        defines `handler` is called with `event` ({} by default) and its return value is the result;
        other Python runs as a script with `args`; `script_type` bash (or shell) runs it with bash."""
        session = self.get(session_id)
        session.touch()
        if not isinstance(code, str) or not code.strip():
            raise InvalidCodeError("the code is empty")
        kind, default_name = script_type_of(script_type)
        parts = parse_path(filename or default_name)
        arguments = arguments_of(args)
        seconds = session.limits.timeout if timeout is None else execution_timeout(timeout)
        await self._in_workspace(session, session.workspace.write, parts, code.encode("utf-8", "surrogatepass"))
        path = f"{WORKSPACE_PATH}/{display(parts)}"
        launcher = self._require()
        if kind == "python" and session.stateful:  # in the session's kernel, reset after a timeout or crash
            message = {"type": "exec", "stateful": True, "path": path, "args": arguments,
                       "event": {} if event is None else event}  # fmt: skip
        elif kind == "python":
            # Forked by the agent's fork server (`path`, `args`); `argv` runs it when that server is down.
            message = {"type": "exec", "argv": launcher.runner_argv(path, arguments), "runner": True,
                       "path": path, "args": arguments, "event": {} if event is None else event}  # fmt: skip
        else:
            message = {"type": "exec", "argv": [self._shell, path, *arguments]}
        return await self._run(session, "execute_code", message, seconds, on_output)

    async def execute(
        self,
        session_id: str,
        command: str,
        *,
        args: Sequence[str] = (),
        timeout: float | None = None,
        on_output: Callable[[str, str], None] | None = None,
    ) -> ExecutionResult:
        """Run a shell command line (bash, else sh) in /workspace; `args` are appended, each quoted."""
        session = self.get(session_id)
        session.touch()
        if not isinstance(command, str) or not command.strip():
            raise InvalidRequestError("command must be a non-empty string")
        line = command + "".join(" " + shlex.quote(arg) for arg in arguments_of(args))
        seconds = session.limits.timeout if timeout is None else execution_timeout(timeout)
        message = {"type": "exec", "argv": [self._shell, "-c", line]}
        return await self._run(session, "execute", message, seconds, on_output)

    async def _run(
        self,
        session: Session,
        kind: str,
        message: dict[str, Any],
        timeout: float,
        on_output: Callable[[str, str], None] | None = None,
    ) -> ExecutionResult:
        self.counts["executions"] += 1
        started = time.perf_counter()
        fields: dict[str, Any] = {"session_id": session.id, "kind": kind, "timeout": timeout}
        try:
            result = await session.run(message, timeout, on_output)
        except AgentGone:
            error: SessionError = await self._gone(session)
            log.warning("session.execution", **fields, error=error.code, detail=error.message,
                        **self._took(kind, error.code.lower(), started))  # fmt: skip
            raise error from None
        except SessionError as exc:
            log.warning("session.execution", **fields, error=exc.code, detail=exc.message,
                        **self._took(kind, exc.code.lower(), started))  # fmt: skip
            raise
        log.info(
            "session.execution",
            **fields,
            exit_code=result.exit_code,
            execution_time=result.execution_time,
            timed_out=result.timed_out,
            limit=result.limit,
            stdout_bytes=len(result.stdout),
            stderr_bytes=len(result.stderr),
            **self._took(kind, _outcome(result), started),
        )
        return result

    def _took(self, kind: str, outcome: str, started: float) -> dict[str, float]:
        took = _took(started)
        if self.observer is not None:
            self.observer.execution(kind, outcome, took["duration_ms"] / 1000)
        return took

    def _lifetime(self, session: Session, reason: str) -> dict[str, Any]:
        lifetime = _lifetime(session)
        if self.observer is not None:
            self.observer.session_ended(reason, lifetime["lifetime_s"])
        return lifetime

    async def _gone(self, session: Session) -> SessionError:
        """Why an execution's session went away under it."""
        if session.alive:  # the agent broke its protocol: the session cannot go on
            session.sandbox.kill()
        await session.wait_exit()
        if session.sandbox.oom_killed():
            return ResourceLimitError(
                f"the session's memory limit ({session.limits.memory_limit_kb} KB) was reached and its sandbox ended",
                details={"limit": "memory"},
            )
        if session.id is not None and session.id not in self._ended:
            return SessionNotFoundError(f"Session '{session.id}' was closed during the execution")
        return self._absent(session)

    def _absent(self, session: Session) -> SessionError:
        """The error for a session that is no longer in the table (closed, expired or ended)."""
        try:
            self.get(session.id or "")
        except SessionError as exc:
            return exc
        return SessionNotFoundError(f"Session '{session.id}' was closed")

    # -- files ----------------------------------------------------------------------------------

    async def write_file(self, session_id: str, path: str, data: bytes | BinaryIO) -> FileEntry:
        """Create or replace a file in the workspace (folders on the way are made)."""
        session = self.get(session_id)
        parts = parse_path(path)
        return await self._in_workspace(session, session.workspace.write, parts, data)

    async def upload(
        self, session_id: str, filename: str, content: bytes | BinaryIO, *, path: str | None = None
    ) -> FileEntry:
        """Store an uploaded file: at the workspace's root under its own name, or at `path` (a folder
        when it ends with "/" or is one, else the file's own path)."""
        session = self.get(session_id)
        parts = await self._in_workspace(session, session.workspace.upload_target, filename, path)
        return await self._in_workspace(session, session.workspace.write, parts, content)

    async def read_file(self, session_id: str, path: str) -> bytes:
        session = self.get(session_id)
        return await self._in_workspace(session, session.workspace.read, parse_path(path))

    async def open_file(self, session_id: str, path: str) -> tuple[int, int]:
        """A descriptor on a regular file of the workspace and its size; the caller closes it."""
        session = self.get(session_id)
        return await self._in_workspace(session, session.workspace.open_file, parse_path(path))

    async def list_files(self, session_id: str, path: str = "") -> tuple[list[FileEntry], bool]:
        """The workspace's regular files under `path`, recursively; whether the list was cut short."""
        session = self.get(session_id)
        return await self._in_workspace(session, session.workspace.files, parse_path(path, folder=True))

    async def _in_workspace(self, session: Session, operation: Callable[..., Any], *args: Any) -> Any:
        session.touch()
        try:
            return await asyncio.to_thread(operation, *args)
        except OSError:
            if not session.alive:  # closed meanwhile: its folder is gone
                raise self._absent(session) from None
            raise
        finally:
            session.touch()

    # -- the warm pool, expiry, endings ---------------------------------------------------------

    def _require(self) -> SessionLauncher:
        if self._launcher is None:
            raise InternalError(f"sessions are not available: {self.problem}")
        return self._launcher

    def _take_spare(self, limits: SessionLimits) -> Session | None:
        if limits != self.defaults:
            return None
        while self._spares:
            spare = self._spares.pop(0)
            if spare.alive:
                return spare
        return None

    async def _launch(self, launcher: SessionLauncher, limits: SessionLimits) -> Session:
        try:
            # Its sandbox's watchers outlive the request creating it: no request id in their log lines.
            return await detached(Session.start(launcher, limits))
        except UidExhausted as exc:
            raise ResourceLimitError(f"no sandbox uid is free: {exc}", status=429) from None
        except (SandboxError, OSError) as exc:
            log.error("session.start_failed", error=str(exc))
            raise InternalError(f"the session's sandbox could not start: {exc}") from None

    def _refill(self) -> None:
        if self._closing or self._launcher is None:
            return
        for _ in range(self.pool_size - len(self._spares) - self._filling):
            self._filling += 1
            self._spawn(self._add_spare(self._launcher))

    async def _add_spare(self, launcher: SessionLauncher) -> None:
        try:
            spare = await Session.start(launcher, self.defaults)
        except Exception as exc:
            log.warning("session.pool_start_failed", error=str(exc))
            return
        finally:
            self._filling -= 1
        if self._closing:
            await spare.stop()
            return
        spare.on_end = self._on_spare_end
        self._spares.append(spare)

    def _on_spare_end(self, spare: Session, reason: str) -> None:
        if spare in self._spares:
            self._spares.remove(spare)
        log.warning("session.pool_sandbox_ended", reason=reason)
        self._spawn(spare.stop())

    def _on_end(self, session: Session, reason: str) -> None:
        """A session's sandbox ended by itself (its agent was killed, out of memory)."""
        if session.id is None or self._sessions.get(session.id) is not session:
            return
        del self._sessions[session.id]
        self._remember(session.id, f"Session '{session.id}' has ended: {reason}")
        self.counts["ended"] += 1
        log.warning("session.ended", session_id=session.id, reason=reason, **self._lifetime(session, "ended"))
        self._spawn(session.stop())

    async def _reap_forever(self) -> None:
        idle_limit = self.settings.session_idle_timeout_seconds
        interval = max(0.25, min(30.0, idle_limit / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session_id, session in list(self._sessions.items()):
                if not session.busy and now - session.last_activity > idle_limit:
                    await self._expire(session_id, session)
            self._refill()

    async def _expire(self, session_id: str, session: Session) -> None:
        if self._sessions.get(session_id) is not session:
            return
        del self._sessions[session_id]
        idle = self.settings.session_idle_timeout_seconds
        self._remember(session_id, f"Session '{session_id}' expired after {idle:g} seconds without activity")
        self.counts["expired"] += 1
        log.info("session.expired", session_id=session_id, idle_timeout=idle, **self._lifetime(session, "expired"))
        await session.stop()

    def _remember(self, session_id: str, why: str) -> None:
        self._ended[session_id] = why
        while len(self._ended) > _REMEMBERED:
            self._ended.popitem(last=False)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = detached(work)  # spares, stops: not the work of the request that may have asked for them
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _outcome(result: ExecutionResult) -> str:
    if result.timed_out:
        return "timeout"
    if result.limit:
        return "limit"
    return "success" if result.exit_code == 0 else "exit_error"


def _took(started: float) -> dict[str, float]:
    return {"duration_ms": round((time.perf_counter() - started) * 1000, 3)}


def _lifetime(session: Session) -> dict[str, Any]:
    return {"executions": session.executions, "lifetime_s": round(time.time() - session.created_at, 3)}
