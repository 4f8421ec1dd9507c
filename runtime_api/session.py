"""One agent session: a sandbox running the session agent, the agent's channel, and the workspace.

The sandbox is an ordinary one of the service's backend (its uid pool, cgroups, seccomp, network
policy and egress proxy), with one difference: a workspace folder bound read-write at /workspace
(`SandboxSpec.workspace_dir`), a size-capped tmpfs the service made (`sandbox/volumes.py`). Its
command is the session agent (bootstrap/session_agent.py), which connects to the sandbox's listener;
each execution is one exec message to it, run one at a time per session.

    start ──agent connected──► ready (a warm spare, or bound to an id) ──stop / sandbox ends──► ended

`SessionManager` (`sessions.py`) owns sessions: ids, the warm pool, expiry, the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import Backend, Sandbox, SandboxError, SandboxSpec, volumes

from .agent import AgentChannel, AgentGone, accept_agent
from .config import Settings
from .lambda_env import proxy_environment
from .logs import get_logger
from .runtimes import BOOTSTRAP_PACKAGE, RuntimeLaunch
from .session_errors import ExecutionTimeoutError, InternalError, InvalidCodeError, ResourceLimitError, SessionError
from .session_limits import SessionLimits
from .workspace import Workspace

log = get_logger("sessions")

_AGENT_GRACE = 10.0  # past an execution's timeout: how long the agent has to report it before it is presumed stuck
_STOP_WAIT = 5.0
_OUTPUT_BUDGET = 64 * 1024  # the agent's own output (its errors) that reaches the service log


@dataclass(frozen=True)
class SessionLauncher:
    """What the service lends sessions: its backend and runtime, and the folders and sizes to use."""

    backend: Backend
    interpreter: str  # the sandbox's python3, for the agent and the runner
    runtime_dir: Path  # /var/runtime: the agent and the runner (sandbox_bootstrap)
    code_dir: Path  # /var/task: an empty folder
    workspaces: Path  # where workspace folders are made
    extra_ro_binds: tuple[Path, ...] = ()
    serve_egress: Callable[[Any], Awaitable[Any]] | None = None
    environment: dict[str, str] = field(default_factory=dict)  # the sandbox's, besides SANDBOX_SESSION_AGENT
    proxy_environment: dict[str, str] = field(default_factory=dict)  # added with network allowed (egress proxy)
    workspace_bytes: int = 512 * 1024 * 1024
    max_file_bytes: int = 100 * 1024 * 1024
    output_limit: int = 1024 * 1024  # per stream and execution
    tmp_size_mb: int = 512
    init_timeout: float = 10.0

    def spec(self, limits: SessionLimits, workspace: Path) -> SandboxSpec:
        launch = (
            f"import sys; sys.path.insert(0, '/var/runtime'); from {BOOTSTRAP_PACKAGE}.session_agent import main; "
            "main()"
        )
        env = {**self.environment, "SANDBOX_SESSION_AGENT": "127.0.0.1:9001"}
        if limits.allow_network:
            env.update(self.proxy_environment)
        return SandboxSpec(
            command=(self.interpreter, "-c", launch),
            env=env,
            code_dir=self.code_dir,
            runtime_dir=self.runtime_dir,
            extra_ro_binds=self.extra_ro_binds,
            cwd="/workspace",
            tmp_size_mb=self.tmp_size_mb,
            memory_mb=limits.memory_mb,
            cpu_cores=limits.cpu_cores,
            allow_network=limits.allow_network,
            workspace_dir=workspace,
            label="session",
        )

    def runner_argv(self, path: str, args: list[str]) -> list[str]:
        """How execute_code's Python runs inside: the runner (bootstrap/session_runner.py) on `path`."""
        launch = (
            f"import sys; sys.path.insert(0, '/var/runtime'); from {BOOTSTRAP_PACKAGE}.session_runner import main; "
            "del sys.path[0]; main()"
        )
        return [self.interpreter, "-c", launch, path, *args]


# The sandbox's environment (the agent passes it on to every execution).
_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "PYTHONUNBUFFERED": "1",
    # No __pycache__ written into the workspace. (PYTHONPYCACHEPREFIX would also keep it out, but Python then
    # reads byte-code only from that tree: every stdlib import of a new session would compile from source.)
    "PYTHONDONTWRITEBYTECODE": "1",
}


def session_launcher(
    settings: Settings,
    *,
    backend: Backend,
    launch: RuntimeLaunch,
    runtime_dir: Path,
    state_dir: Path,
    serve_egress: Callable[[Any], Awaitable[Any]],
) -> SessionLauncher:
    """What sessions run on, from the service's parts and settings. Blocking: it (re)makes the
    sessions folder in `state_dir`, unmounting what a service that died left there."""
    root = state_dir / "sessions"
    if root.exists():
        volumes.unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o711)
    root.chmod(0o711)  # sandbox uids traverse it to their workspace, never list it
    (root / "empty").mkdir(mode=0o755)  # /var/task
    (root / "empty").chmod(0o755)
    assert launch.interpreter is not None
    return SessionLauncher(
        backend=backend,
        interpreter=str(launch.interpreter),
        runtime_dir=runtime_dir,
        code_dir=root / "empty",
        workspaces=root,
        extra_ro_binds=launch.extra_ro_binds,
        serve_egress=serve_egress,
        environment=dict(_ENVIRONMENT),
        proxy_environment=proxy_environment(),
        workspace_bytes=settings.session_workspace_mb * 1024 * 1024,
        max_file_bytes=settings.session_max_file_mb * 1024 * 1024,
        output_limit=settings.session_output_limit_bytes,
        init_timeout=settings.init_timeout_seconds,
    )


@dataclass(eq=False)
class ExecutionResult(Mapping[str, Any]):
    """What one execution gave. Outcomes are data here: a timeout (`timed_out`), a limit reached
    (`limit`), code that cannot run (`invalid_code`); `problem()` is the sessions API's error for them.
    It is also a read-only mapping of the sessions API's `data` (`as_dict`)."""

    exit_code: int
    stdout: str
    stderr: str
    execution_time: float  # seconds, the command's own run time
    result: Any = None  # a handler's return value
    has_result: bool = False
    error: dict[str, Any] | None = None  # a handler's exception, or a syntax error (Lambda's error document)
    timed_out: bool = False
    timeout: float = 0.0
    limit: str | None = None  # "memory" or "pids" when the execution reached that limit of the session
    invalid_code: str | None = None  # why the code cannot run (a syntax error)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    resource_usage: dict[str, Any] = field(default_factory=dict)
    execution_id: str = ""
    reset: bool | None = None  # a stateful session's execution: whether its interpreter was reset (None: stateless)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "execution_time": self.execution_time,
        }
        if self.has_result:
            data["result"] = self.result
        if self.error is not None:
            data["error"] = self.error
        data["timed_out"] = self.timed_out
        if self.limit is not None:
            data["limit"] = self.limit
        data["stdout_truncated"] = self.stdout_truncated
        data["stderr_truncated"] = self.stderr_truncated
        data["resource_usage"] = self.resource_usage
        data["execution_id"] = self.execution_id
        if self.reset is not None:
            data["reset"] = self.reset
        return data

    def problem(self, memory_limit_kb: int) -> SessionError | None:
        """The sessions API's error for this outcome: EXECUTION_TIMEOUT, RESOURCE_LIMIT, INVALID_CODE."""
        if self.timed_out:
            return ExecutionTimeoutError(f"Execution timed out after {self.timeout:g} seconds", details=self.as_dict())
        if self.limit == "memory":
            return ResourceLimitError(
                f"the execution reached the session's memory limit ({memory_limit_kb} KB)", details=self.as_dict()
            )
        if self.limit is not None:
            return ResourceLimitError(f"the execution reached the session's {self.limit} limit", details=self.as_dict())
        if self.invalid_code is not None:
            return InvalidCodeError(self.invalid_code, details={"stderr": self.stderr})
        return None

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


class Session:
    """One session's sandbox and agent. Made by `start`; `run` one execution at a time; `stop` ends it."""

    def __init__(self, launcher: SessionLauncher, limits: SessionLimits, sandbox: Sandbox, folder: Path) -> None:
        self.id: str | None = None  # set when bound (a warm spare has none yet)
        self.limits = limits
        self.sandbox = sandbox
        self.workspace = Workspace(folder, sandbox.uid, max_file_bytes=launcher.max_file_bytes)
        self.created_at = time.time()
        self.last_activity = time.monotonic()
        self.executions = 0
        self.busy = False
        self.stateful = False  # execute_code's Python runs in one interpreter kept alive (the agent's kernel)
        self.exit_status: int | None = None
        self.on_end: Callable[[Session, str], None] | None = None  # the sandbox ended (not by `stop`)
        self._launcher = launcher
        self._folder = folder
        self._channel: AgentChannel | None = None
        self._egress: Any = None
        self._lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._stopping = False
        self._removed = False
        self._output_fd: int | None = None
        self._output_tail = b""
        self._output_budget = _OUTPUT_BUDGET
        # How long its start took: the workspace's tmpfs, the sandbox (backend.start), the agent's hello.
        self.start_ms: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def start(cls, launcher: SessionLauncher, limits: SessionLimits) -> Session:
        """Start a sandbox for a session and wait for its agent. Raises SandboxError (and UidExhausted)."""
        folder = launcher.workspaces / f"ws-{uuid.uuid4().hex[:16]}"
        clock = time.perf_counter()
        mounted = await asyncio.to_thread(volumes.make, folder, launcher.workspace_bytes)
        phases = {"workspace": time.perf_counter() - clock}
        if not mounted:
            log.warning(
                "session.workspace_unbounded", detail="tmpfs mounts are refused here: workspaces are not capped"
            )
        try:
            sandbox = await launcher.backend.start(launcher.spec(limits, folder))
        except BaseException:
            await asyncio.to_thread(volumes.remove, folder)
            raise
        phases["sandbox"] = time.perf_counter() - clock - phases["workspace"]
        session = cls(launcher, limits, sandbox, folder)
        session._loop.create_task(session._watch_exit())
        try:
            session._attach_output()
            accepting = asyncio.ensure_future(accept_agent(sandbox.listener, launcher.init_timeout))
            either: set[asyncio.Future[Any]] = {accepting, session._exited}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not accepting.done():
                accepting.cancel()
                tail = session._output_tail.decode(errors="replace").strip()[-2000:]
                raise SandboxError(f"the session agent exited at start (status {session.exit_status}): {tail}")
            session._channel = accepting.result()
            phases["agent"] = time.perf_counter() - clock - phases["workspace"] - phases["sandbox"]
            if sandbox.proxy_listener is not None and launcher.serve_egress is not None:
                session._egress = await launcher.serve_egress(sandbox.proxy_listener)
            session.start_ms = {name: round(seconds * 1000, 2) for name, seconds in phases.items()}
        except BaseException as exc:
            await session.stop()
            if isinstance(exc, TimeoutError):
                raise SandboxError("the session agent did not connect in time") from None
            if isinstance(exc, AgentGone | OSError):
                raise SandboxError(f"the session agent failed at start: {exc}") from None
            raise
        return session

    @property
    def alive(self) -> bool:
        return not self._exited.done() and not self._stopping

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    async def wait_exit(self, timeout: float = _STOP_WAIT) -> None:
        """Wait (a bounded time) for the sandbox to be gone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)

    async def stop(self) -> None:
        """End the sandbox and remove the workspace. Idempotent."""
        self._stopping = True
        self.sandbox.kill()
        await self.wait_exit()
        if not self._removed:
            self._removed = True
            try:
                await asyncio.to_thread(volumes.remove, self._folder)
            except OSError as exc:
                log.error("session.workspace_not_removed", session_id=self.id, folder=str(self._folder), error=str(exc))

    async def _watch_exit(self) -> None:
        status = await self.sandbox.wait()
        self.exit_status = status
        self._detach_output()
        if self._channel is not None:
            self._channel.close()
        if self._egress is not None:
            self._egress.close()
        self._exited.set_result(status)
        if not self._stopping and self.on_end is not None:
            reason = "its sandbox ran out of memory" if self.sandbox.oom_killed() else f"its sandbox exited ({status})"
            self.on_end(self, reason)

    def _attach_output(self) -> None:
        """The agent's own stdout and stderr (executions have pipes of their own): its errors, to the log."""
        self._output_fd = self.sandbox.output_fd
        self._loop.add_reader(self._output_fd, self._on_output)

    def _on_output(self) -> None:
        assert self._output_fd is not None
        try:
            data = os.read(self._output_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._output_fd)
            return
        self._output_tail = (self._output_tail + data)[-4096:]
        if self._output_budget > 0:
            self._output_budget -= len(data)
            log.warning("session.agent_output", session_id=self.id, output=data.decode(errors="replace")[:4096])

    def _detach_output(self) -> None:
        if self._output_fd is None:
            return
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._output_fd)
        with contextlib.suppress(OSError):
            while data := os.read(self._output_fd, 65536):
                self._output_tail = (self._output_tail + data)[-4096:]
        with contextlib.suppress(OSError):
            os.close(self._output_fd)
        self._output_fd = None

    # -- executions -----------------------------------------------------------------------------

    async def run(
        self, message: dict[str, Any], timeout: float, on_output: Callable[[str, str], None] | None = None
    ) -> ExecutionResult:
        """Run one exec message (argv, and for the runner its event) to its end or its timeout; how it
        went is in the result. `on_output(stream, text)` gets stdout and stderr as they come.
        Raises AgentGone (the sandbox ended meanwhile), ExecutionTimeoutError
        (the agent stopped answering: the session ends), InternalError (it could not start)."""
        async with self._lock:
            if self._channel is None or not self.alive:
                raise AgentGone("the session has ended")
            self.busy = True
            execution_id = uuid.uuid4().hex[:16]
            message = {
                **message,
                "timeout": timeout,
                "max_output": self._launcher.output_limit,
                "context": {
                    "execution_id": execution_id,
                    "session_id": self.id,
                    "memory_limit_mb": self.limits.memory_mb,
                    "deadline": time.time() + timeout,
                },
            }
            listener = None
            if on_output is not None:
                message["stream"] = True

                def listener(output: dict[str, Any]) -> None:
                    stream, text = output.get("stream"), output.get("data")
                    if stream in ("stdout", "stderr") and isinstance(text, str):
                        on_output(stream, text)

            before = self.sandbox.limit_events()
            try:
                reply = await asyncio.wait_for(self._channel.request(message, listener), timeout + _AGENT_GRACE)
            except TimeoutError:
                self.sandbox.kill()  # the agent is stuck (or was replaced): the session cannot be trusted
                raise ExecutionTimeoutError(
                    f"the execution did not end within {timeout:g} s and the session agent stopped answering; "
                    "the session has ended"
                ) from None
            finally:
                self.busy = False
                self.executions += 1
                self.touch()
            after = self.sandbox.limit_events()
        if reply.get("type") != "result":
            raise InternalError(f"the execution could not start: {str(reply.get('message'))[:2000]}")
        result = _result(reply, execution_id, self.sandbox.memory_peak_bytes())
        result.timeout = timeout
        if after.oom_kills > before.oom_kills:
            result.limit = "memory"
        elif after.pids_max > before.pids_max:
            result.limit = "pids"
        return result


def _result(reply: dict[str, Any], execution_id: str, peak: int | None) -> ExecutionResult:
    """The agent's reply as an ExecutionResult, every field checked (the agent is not trusted)."""
    outcome = reply.get("outcome") if isinstance(reply.get("outcome"), dict) else {}
    result = ExecutionResult(
        exit_code=_number(reply.get("exit_code"), int, -1),
        stdout=_text(reply.get("stdout")),
        stderr=_text(reply.get("stderr")),
        execution_time=round(_number(reply.get("duration"), float, 0.0), 6),
        stdout_truncated=reply.get("stdout_truncated") is True,
        stderr_truncated=reply.get("stderr_truncated") is True,
        resource_usage={
            "cpu_time": round(_number(reply.get("cpu_time"), float, 0.0), 6),
            "session_memory_peak_kb": None if peak is None else peak // 1024,
        },
        execution_id=execution_id,
        timed_out=reply.get("timed_out") is True,
        reset=(reply.get("reset") is True) if reply.get("stateful") is True else None,
    )
    assert isinstance(outcome, dict)
    if "result" in outcome:
        result.result, result.has_result = outcome["result"], True
    error = outcome.get("error")
    if isinstance(error, dict):
        trace = error.get("stackTrace")
        result.error = {
            "errorType": _text(error.get("errorType")),
            "errorMessage": _text(error.get("errorMessage")),
            "stackTrace": [_text(line) for line in trace] if isinstance(trace, list) else [],
        }
    if isinstance(outcome.get("invalid_code"), str):
        result.invalid_code = outcome["invalid_code"]
    return result


def _number(value: Any, kind: type, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return kind(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
