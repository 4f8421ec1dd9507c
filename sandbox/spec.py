"""What a backend is asked to start, and the handle it gives back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Where the Runtime API appears inside every sandbox (AWS_LAMBDA_RUNTIME_API).
RUNTIME_API_HOST = "127.0.0.1"
RUNTIME_API_PORT = 9001
# Where a sandbox with `extension_output` finds the write end of its second output channel: the launcher
# of external extensions sends their stdout and stderr there, apart from the runtime's.
EXTENSION_OUTPUT_PATH = "/var/sandbox-runtime/extensions"
# Where a sandbox with a `workspace_dir` (an agent session's) sees it, read-write.
WORKSPACE_PATH = "/workspace"


@dataclass(frozen=True)
class Preload:
    """How a sandbox for a spec can be started before it is needed (`sandbox/prestart.py`).

    `command` runs in a generic sandbox until a spec is assigned to it; the backend appends the number
    of the descriptor it reads its assignment from (`bootstrap/preload.py` for our runtime). `env` is
    what it starts with: the variables a process reads only when it starts (locale, the dynamic
    linker's, the interpreter's), equal to the spec's own. Sandboxes are interchangeable when their
    preloads and everything else fixed at start (runtime, binds, /tmp size, rlimits) are equal.
    """

    command: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class SandboxSpec:
    """One execution environment's sandbox: code, environment, limits.

    Paths are host paths the service owns and the sandbox uid can read (see `staging`).
    """

    command: tuple[str, ...]  # argv inside the sandbox
    env: Mapping[str, str]  # the complete environment of the command
    code_dir: Path | None  # mounted read-only at /var/task (None: an image brings its own)
    runtime_dir: Path | None = None  # mounted read-only at /var/runtime
    opt_dir: Path | None = None  # mounted read-only at /opt (layers)
    extra_ro_binds: tuple[Path, ...] = ()  # host paths bound read-only at the same place (interpreters)
    cwd: str = "/var/task"
    tmp_size_mb: int = 512
    memory_mb: int = 128  # the cgroup memory limit (processes and their tmpfs pages)
    cpu_cores: float | None = None  # CFS quota; None: uncapped
    pids_limit: int = 1024  # processes and threads, as on Lambda
    open_files_limit: int = 1024  # RLIMIT_NOFILE, as on Lambda
    allow_network: bool = False  # outbound access through the egress proxy (sandbox/egress.py)
    image: str | None = None  # Docker only: run this image (PackageType Image) instead of the host's /usr
    hostname: str = "sandbox"
    label: str = ""  # for logs only
    extension_output: bool = False  # a FIFO at EXTENSION_OUTPUT_PATH, read through `extension_output_fd`
    # A host folder bound read-write at WORKSPACE_PATH (an agent session's workspace). The backend gives
    # the folder itself (not its content) to the sandbox's uid before the sandbox starts.
    workspace_dir: Path | None = None
    # Whether (and how) a pre-started generic sandbox may run this spec; None: always started from nothing.
    preload: Preload | None = None


@dataclass(frozen=True)
class LimitEvents:
    """How often a sandbox ran into its limits so far (counters only grow)."""

    oom_kills: int = 0  # processes the kernel killed for the memory limit
    pids_max: int = 0  # forks and clones refused at the process limit


class Sandbox(Protocol):
    """A running sandbox. Created by a backend's `start`; owned by one environment."""

    @property
    def output_fd(self) -> int:
        """Non-blocking read end of the command's merged stdout and stderr; the caller closes it."""

    @property
    def listener(self):  # socket.socket
        """A listening TCP socket at RUNTIME_API_HOST:RUNTIME_API_PORT inside the sandbox's network."""

    @property
    def proxy_listener(self):  # socket.socket | None
        """With `allow_network`: a listening socket at 127.0.0.1:3128 inside the sandbox's network,
        for the egress proxy."""

    @property
    def extension_output_fd(self) -> int | None:
        """With `extension_output`: the non-blocking read end of EXTENSION_OUTPUT_PATH; the caller closes it."""

    @property
    def uid(self) -> int: ...

    def connect(self, port: int, timeout: float):  # socket.socket
        """A TCP connection to 127.0.0.1:port inside the sandbox's network namespace, connected and
        non-blocking (a Telemetry API subscriber). Blocking: call from a worker thread."""

    def terminate_command(self) -> None:
        """Send SIGTERM to the sandbox's command only (its graceful shutdown); `kill` still ends it all."""

    async def wait(self) -> int:
        """Wait for the sandbox to end; its exit status (128+n for a signal, as a shell reports it)."""

    def kill(self) -> None:
        """Kill the whole sandbox (every process in it). Idempotent."""

    def memory_peak_bytes(self) -> int | None:
        """Peak memory of the sandbox so far (its cgroup's, else its command's), if known."""

    def oom_killed(self) -> bool:
        """Whether the kernel killed something in the sandbox for exceeding its memory limit."""

    def limit_events(self) -> LimitEvents:
        """The sandbox's limit counters (zeros where the backend cannot read them)."""


class Backend(Protocol):
    """An isolation mechanism (bwrap, docker): starts sandboxes from specs."""

    name: str

    async def start(self, spec: SandboxSpec) -> Sandbox: ...

    def status(self) -> BackendStatus: ...

    def close(self) -> None:
        """Release the backend's own resources once every sandbox it started is gone."""


class SandboxError(Exception):
    """The sandbox could not be started."""


@dataclass
class BackendStatus:
    name: str
    available: bool
    detail: str = ""
    extra: dict[str, object] = field(default_factory=dict)
