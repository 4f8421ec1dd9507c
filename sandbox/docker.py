"""The Docker backend: the same sandbox spec as a hardened container (DESIGN §2, reference/sandbox.md §5).

Each sandbox is two containers:
- a *holder* of the network namespace: `--network none`, a `sleep` that does nothing. Once it runs, the
  service makes the Runtime API listener (and the egress proxy's) inside its namespace, exactly as for
  bwrap (`netns.listen_in_netns`), before any function code exists;
- the *function* container, joined to that namespace (`--network container:<holder>`) and started only
  then, so the runtime's first connection always finds the listener. Its stdout and stderr come through
  Docker's attach stream (no log driver: nothing is stored on disk), demultiplexed into a pipe.

Hardening of both: read-only root, every capability dropped, no-new-privileges, the seccomp deny-list
of the bwrap sandboxes (`seccomp.docker_profile`), a distinct unprivileged host uid from the service's
pool, memory = memory+swap (no swap), pids, CPU, core/nofile/fsize rlimits, a sized /tmp, a small
/dev/shm, /sys hidden. Functions from the service's own base image get the host's /usr read-only like
bwrap sandboxes; `PackageType: Image` functions run their own image with nothing of the host mounted.

Containers carry the service's pid as a label: at start the backend removes those of services that
died without cleaning up, and `close()` removes its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import logging
import os
import shutil
import socket
import struct
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import seccomp
from .bwrap import _ETC_FILES, _ETC_RO_BINDS, _SHM_BYTES, _TOP_LEVEL_LINKS
from .cgroups import SandboxCgroup, pid_alive
from .egress import PROXY_HOST, PROXY_PORT
from .netns import connect_in_netns, listen_in_netns
from .spec import (
    EXTENSION_OUTPUT_PATH,
    RUNTIME_API_HOST,
    RUNTIME_API_PORT,
    WORKSPACE_PATH,
    BackendStatus,
    LimitEvents,
    SandboxError,
    SandboxSpec,
)
from .uids import UidPool

log = logging.getLogger(__name__)

SERVICE_LABEL = "sandbox-runtime.service"  # "<hostname>:<pid>" of the service that made the container
ROLE_LABEL = "sandbox-runtime.role"  # holder | function
FUNCTION_LABEL = "sandbox-runtime.function"
BASE_REPOSITORY = "sandbox-runtime/base"
_HOLDER_COMMAND = ["/usr/bin/sleep", "infinity"]
_HOLDER_MEMORY = 16 * 1024 * 1024
_HOSTNAME = "sandbox"
_SPARE_HOLDERS = 2  # holders started ahead of time (each holds one uid and ~1 MB)
# Docker's own output path (shim pipe → dockerd → attach stream) lags behind the Runtime API, so a
# response could overtake the lines printed before it and Tail logs would miss them. Instead the
# command writes straight into a FIFO the service reads, as from a bwrap sandbox's pipe: a static
# busybox, mounted read-only, makes the redirection in any image and then execs the command.
_SHELL = "/var/sandbox-runtime/busybox"
_OUTPUT = "/var/sandbox-runtime/output"
_OUTPUT_SCRIPT = f'exec >{_OUTPUT} 2>&1; exec "$@"'
# Variables Docker (HOME, HOSTNAME) or the shell (PWD, OLDPWD, SHLVL) add; unset unless the spec sets
# them, so the command's environment is exactly the spec's, as in a bwrap sandbox (--clearenv).
_ADDED_VARIABLES = ("HOME", "HOSTNAME", "PWD", "OLDPWD", "SHLVL")
_SHELL_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


@dataclass
class _Holder:
    uid: int
    container_id: str
    pid: int


class DockerUnavailable(SandboxError):
    """No Docker engine answers: the message says where we looked and what to do."""


def _base_image_tar() -> bytes:
    """The root filesystem of our base image: empty mount points, the host's top-level links (merged
    /usr), a sticky /tmp (Docker gives the tmpfs the image's mode) and the synthetic /etc files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int = 0o755, link: str = "", data: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for folder in ("usr", "etc", "var", "var/task", "var/runtime", "opt", "proc", "sys", "dev", "root"):
            add(folder, tarfile.DIRTYPE)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        # /sbin stays a folder of the image: Docker mounts its init at /sbin/docker-init, which cannot
        # be made inside the host's /usr (read-only). Programs find sbin tools in /usr/sbin.
        add("sbin", tarfile.DIRTYPE)
        for name in _TOP_LEVEL_LINKS:
            host = Path("/") / name
            if name == "sbin":
                continue
            if host.is_symlink():
                add(name, tarfile.SYMTYPE, 0o777, link=os.readlink(host))
            elif host.is_dir():
                add(name, tarfile.DIRTYPE)
        for path, content in _ETC_FILES.items():
            add(path.lstrip("/"), tarfile.REGTYPE, 0o644, data=content.encode())
    return buf.getvalue()


def _host_mounts() -> list[str]:
    """Read-only binds that give a base-image container the host's programs, as bwrap sandboxes have."""
    binds = ["/usr:/usr:ro"]
    for name in _TOP_LEVEL_LINKS:
        host = Path("/") / name
        if name != "sbin" and host.is_dir() and not host.is_symlink():
            binds.append(f"{host}:{host}:ro")
    return binds + [f"{path}:{path}:ro" for path in _ETC_RO_BINDS if Path(path).exists()]


class DockerBackend:
    """Starts hardened containers through the Docker Engine API. One instance per service."""

    name = "docker"

    def __init__(
        self, *, uid_pool: UidPool, docker_host: str, spawn_threads: int = 8, spare_holders: int = _SPARE_HOLDERS
    ) -> None:
        self._uid_pool = uid_pool
        self._spare_target = spare_holders
        self._spares: list[_Holder] = []
        self._spares_pending = 0
        self._docker_host = docker_host
        # The output FIFOs. Named like the service's state folders, so that a later service removes it
        # if this one dies without cleaning up; sandbox uids may traverse it, never list it.
        self._state_dir = Path(tempfile.mkdtemp(prefix=f"sandbox-runtime-{os.getpid()}-docker-"))
        self._state_dir.chmod(0o711)
        self._serial = itertools.count(1)
        self._shell = ""
        self._service_id = f"{socket.gethostname()}:{os.getpid()}"
        self._executor = ThreadPoolExecutor(max_workers=spawn_threads, thread_name_prefix="docker-spawn")
        self._client: Any = None
        self._problem: str | None = None
        self._base_image = ""
        self._version = ""
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------------

    def connect(self) -> None:
        """Reach the engine, clear dead services' containers and build the base image (idempotent).
        Raises DockerUnavailable with what to do when there is no engine."""
        with self._lock:
            if self._client is not None:
                return
            self._shell = _static_busybox() or ""
            if not self._shell:
                raise self._unavailable(
                    "it needs a statically linked busybox to route each container's output "
                    "(apt-get install busybox-static)"
                )
            try:
                import docker
                from docker.errors import DockerException
            except ImportError:  # pragma: no cover - a dependency of the package
                raise self._unavailable("the 'docker' Python package is not installed") from None
            try:
                # Every live sandbox holds one connection in a blocking wait: size the pool for many.
                client = docker.DockerClient(base_url=self._docker_host, version="auto", timeout=60, max_pool_size=1024)
                self._version = client.version().get("Version", "")
            except DockerException as exc:
                raise self._unavailable(f"no Docker engine answers at {self._docker_host} ({_reason(exc)})") from None
            try:
                self._sweep(client)
                self._base_image = self._ensure_base_image(client)
            except DockerException as exc:
                raise self._unavailable(f"the Docker engine at {self._docker_host} failed: {_reason(exc)}") from None
            self._client = client
            self._problem = None
        self._refill()

    def _unavailable(self, reason: str) -> DockerUnavailable:
        self._problem = (
            f"Docker is not available: {reason}. Start dockerd (see docs/security.md, 'The Docker backend') "
            "or point SANDBOX_DOCKER_HOST at a running engine"
        )
        return DockerUnavailable(self._problem)

    def _ensure_base_image(self, client: Any) -> str:
        data = _base_image_tar()
        tag = f"{BASE_REPOSITORY}:{hashlib.sha256(data).hexdigest()[:16]}"
        from docker.errors import ImageNotFound

        try:
            client.images.get(tag)
        except ImageNotFound:
            repository, _, version = tag.partition(":")
            client.api.import_image_from_data(data, repository=repository, tag=version)
        return tag

    def _sweep(self, client: Any) -> None:
        """Remove containers left by services on this host that are no longer running (SIGKILL)."""
        host = socket.gethostname()
        for container in client.api.containers(all=True, filters={"label": SERVICE_LABEL}):
            owner = container["Labels"].get(SERVICE_LABEL, "")
            owner_host, _, pid = owner.rpartition(":")
            if owner_host == host and pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(Exception):
                    client.api.remove_container(container["Id"], force=True)

    def image(self, reference: str) -> dict[str, Any]:
        """`docker image inspect` of an image that must already be on this engine (none is pulled)."""
        from docker.errors import DockerException, ImageNotFound

        self.connect()
        try:
            return dict(self._client.api.inspect_image(reference))
        except ImageNotFound:
            raise SandboxError(
                f"the image {reference} is not on the Docker engine at {self._docker_host}: "
                "build, load or pull it there first (the service never pulls)"
            ) from None
        except DockerException as exc:
            raise SandboxError(f"cannot inspect the image {reference}: {_reason(exc)}") from None

    def status(self) -> BackendStatus:
        if self._client is None:
            return BackendStatus(self.name, False, self._problem or "not connected yet")
        return BackendStatus(
            self.name,
            True,
            extra={
                "docker_host": self._docker_host,
                "engine": self._version,
                "base_image": self._base_image,
                "sandbox_uids": f"{self._uid_pool.first}+{self._uid_pool.count}",
            },
        )

    # -- sandboxes -------------------------------------------------------------------------------

    async def start(self, spec: SandboxSpec) -> DockerSandbox:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._start_blocking, spec, loop)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        shutil.rmtree(self._state_dir, ignore_errors=True)
        if self._client is None:
            return
        with contextlib.suppress(Exception):
            for container in self._client.api.containers(
                all=True, filters={"label": f"{SERVICE_LABEL}={self._service_id}"}
            ):
                with contextlib.suppress(Exception):
                    self._client.api.remove_container(container["Id"], force=True)
        self._client.close()

    def _start_blocking(self, spec: SandboxSpec, loop: asyncio.AbstractEventLoop) -> DockerSandbox:
        from docker.errors import DockerException

        self.connect()
        api = self._client.api
        holder = self._take_holder()
        try:
            fifo = self._state_dir / f"output-{next(self._serial)}"
            sandbox = DockerSandbox(api, holder.uid, self._uid_pool, loop, fifo, spec.memory_mb * 1024 * 1024)
        except BaseException:
            self._discard_holder(holder)
            raise
        sandbox.holder_id = holder.container_id
        try:
            if spec.workspace_dir is not None:
                os.chown(spec.workspace_dir, holder.uid, holder.uid, follow_symlinks=False)
            sandbox.holder_pidfd = os.pidfd_open(holder.pid)  # names its network namespace (Telemetry API)
            if spec.extension_output:
                sandbox.open_extension_output(self._state_dir / f"extensions-{next(self._serial)}")
            sandbox.listener = listen_in_netns(holder.pid, RUNTIME_API_HOST, RUNTIME_API_PORT)
            if spec.allow_network:
                sandbox.proxy_listener = listen_in_netns(holder.pid, PROXY_HOST, PROXY_PORT)
            function = api.create_container(
                **self._function_config(
                    api, spec, holder.uid, holder.container_id, sandbox.fifo, sandbox.extension_fifo
                )
            )
            sandbox.container_id = function["Id"]
            pid = _start(api, function["Id"])
            sandbox.begin(SandboxCgroup.of_process(pid) if pid else None)
        except BaseException as exc:
            sandbox.abandon()
            if isinstance(exc, DockerException):
                raise SandboxError(f"docker could not start the sandbox: {_reason(exc)}") from None
            raise
        return sandbox

    # -- holders: made ahead of time, since starting one is two thirds of a cold start ---------------

    def _take_holder(self) -> _Holder:
        """A running holder for a new sandbox: a spare if one is ready, else a new one. Either way a
        replacement spare is made in the background."""
        holder = None
        with self._lock:
            while self._spares and holder is None:
                spare = self._spares.pop(0)
                if pid_alive(spare.pid):
                    holder = spare
                else:
                    self._discard_holder(spare)
        self._refill()
        return holder or self._make_holder()

    def _refill(self) -> None:
        with self._lock:
            missing = self._spare_target - len(self._spares) - self._spares_pending
            self._spares_pending += max(0, missing)
        for _ in range(missing):
            try:
                self._executor.submit(self._add_spare)
            except RuntimeError:  # closing
                with self._lock:
                    self._spares_pending -= 1

    def _add_spare(self) -> None:
        try:
            holder = self._make_holder()
        except Exception as exc:  # the next start makes its own and reports the failure
            log.debug("docker holder spare failed: %s", exc)
            holder = None
        with self._lock:
            self._spares_pending -= 1
            if holder is not None:
                self._spares.append(holder)

    def _make_holder(self) -> _Holder:
        """Create and start a holder: the owner of a sandbox's network namespace and uid."""
        from docker.errors import DockerException

        api = self._client.api
        uid = self._uid_pool.acquire()
        holder = _Holder(uid, "", 0)
        try:
            created = api.create_container(
                self._base_image,
                command=_HOLDER_COMMAND,
                user=f"{uid}:{uid}",
                hostname=_HOSTNAME,
                labels={SERVICE_LABEL: self._service_id, ROLE_LABEL: "holder"},
                host_config=api.create_host_config(
                    network_mode="none",
                    # Docker writes the holder's /etc/hosts, which the function container shares: where
                    # extensions tell the Telemetry API to deliver (their own listener).
                    extra_hosts={"sandbox.localdomain": "127.0.0.1"},
                    binds=_host_mounts(),
                    mem_limit=_HOLDER_MEMORY,
                    memswap_limit=_HOLDER_MEMORY,
                    pids_limit=4,
                    **self._hardening(tmp_mb=1, open_files=64),
                ),
            )
            holder.container_id = created["Id"]
            holder.pid = _start(api, holder.container_id)
            if not holder.pid:
                raise SandboxError("the network holder container exited at once")
        except BaseException as exc:
            self._discard_holder(holder)
            if isinstance(exc, DockerException):
                raise SandboxError(f"docker could not start the sandbox: {_reason(exc)}") from None
            raise
        return holder

    def _discard_holder(self, holder: _Holder) -> None:
        if holder.container_id:
            with contextlib.suppress(Exception):
                self._client.api.remove_container(holder.container_id, force=True)
        self._uid_pool.release(holder.uid)

    def _labels(self, spec: SandboxSpec, role: str) -> dict[str, str]:
        return {SERVICE_LABEL: self._service_id, ROLE_LABEL: role, FUNCTION_LABEL: spec.label}

    def _hardening(self, *, tmp_mb: int, open_files: int) -> dict[str, Any]:
        from docker.types import Ulimit

        return {
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges", f"seccomp={seccomp.docker_profile()}"],
            "ulimits": [
                Ulimit(name="core", soft=0, hard=0),
                Ulimit(name="nofile", soft=open_files, hard=open_files),
                Ulimit(name="fsize", soft=tmp_mb * 1024 * 1024, hard=tmp_mb * 1024 * 1024),
            ],
            "log_config": {"Type": "none", "Config": {}},
            "shm_size": _SHM_BYTES,
            # An empty read-only tmpfs over /sys: as in bwrap sandboxes, no view of the host's devices.
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_mb}m,mode=1777", "/sys": "ro,size=4k"},
            "ipc_mode": "private",
        }

    def _function_config(
        self, api: Any, spec: SandboxSpec, uid: int, holder_id: str, fifo: Path, extension_fifo: Path | None = None
    ) -> dict[str, Any]:
        if not spec.command:
            raise SandboxError("the docker backend needs the command to run (an image's ENTRYPOINT + CMD)")
        memory = spec.memory_mb * 1024 * 1024
        binds = [f"{self._shell}:{_SHELL}:ro", f"{fifo}:{_OUTPUT}"]
        if extension_fifo is not None:
            binds.append(f"{extension_fifo}:{EXTENSION_OUTPUT_PATH}")
        if spec.image is None:
            binds += _host_mounts()
            if spec.code_dir is not None:
                binds.append(f"{spec.code_dir}:/var/task:ro")
            if spec.runtime_dir is not None:
                binds.append(f"{spec.runtime_dir}:/var/runtime:ro")
        if spec.opt_dir is not None:
            binds.append(f"{spec.opt_dir}:/opt:ro")
        binds += [f"{path}:{path}:ro" for path in spec.extra_ro_binds]
        if spec.workspace_dir is not None:
            binds.append(f"{spec.workspace_dir}:{WORKSPACE_PATH}:rw")
        host_config = api.create_host_config(
            network_mode=f"container:{holder_id}",
            binds=binds,
            mem_limit=memory,
            memswap_limit=memory,
            pids_limit=spec.pids_limit,
            nano_cpus=int(spec.cpu_cores * 1e9) if spec.cpu_cores else None,
            init=True,  # a reaping pid 1, as bwrap is in its sandboxes
            **self._hardening(tmp_mb=spec.tmp_size_mb, open_files=spec.open_files_limit),
        )
        config: dict[str, Any] = {
            "image": spec.image or self._base_image,
            "environment": dict(spec.env),
            "user": f"{uid}:{uid}",
            "working_dir": spec.cwd,
            "labels": self._labels(spec, "function"),
            "host_config": host_config,
            "stdin_open": False,
            "tty": False,
        }
        # The static shell points the command's stdout and stderr at the FIFO, then becomes the command.
        added = " ".join(name for name in _ADDED_VARIABLES if name not in spec.env)
        script = f"unset {added}; {_OUTPUT_SCRIPT}" if added else _OUTPUT_SCRIPT
        config["entrypoint"] = [_SHELL, "sh", "-c", script, "sandbox-runtime"]
        config["command"] = list(spec.command)
        return config


class DockerSandbox:
    """A running container pair. One thread per sandbox waits for the function container to end, then
    records how it ended and removes both containers."""

    def __init__(
        self, api: Any, uid: int, uid_pool: UidPool, loop: asyncio.AbstractEventLoop, fifo: Path, memory_bytes: int
    ) -> None:
        self._api = api
        self._memory_bytes = memory_bytes
        self._uid = uid
        self._uid_pool = uid_pool
        self._loop = loop
        self.fifo = fifo
        self.holder_id: str | None = None
        self.container_id: str | None = None
        self.listener: socket.socket | None = None
        self.proxy_listener: socket.socket | None = None
        self.holder_pidfd: int | None = None
        self.extension_fifo: Path | None = None
        self.extension_output_fd: int | None = None
        self._extension_w = -1
        self._group: SandboxCgroup | None = None
        self._peak: int | None = None
        self._oom = False
        self._killed = False
        self._exit: asyncio.Future[int] = loop.create_future()
        # The command's output goes straight into this FIFO (see _OUTPUT_SCRIPT), read by the service
        # like a bwrap sandbox's pipe. Our own write end keeps a reader from seeing end-of-file before
        # the command has opened it; it is closed once the container is gone.
        os.mkfifo(fifo, 0o600)
        os.chown(fifo, uid, uid)
        self.output_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._output_w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def uid(self) -> int:
        return self._uid

    def begin(self, group: SandboxCgroup | None) -> None:
        self._group = group
        threading.Thread(target=self._follow, name="docker-wait", daemon=True).start()

    def _follow(self) -> None:
        status = 255
        try:
            with contextlib.suppress(Exception):
                status = int(self._api.wait(self.container_id)["StatusCode"])
            with contextlib.suppress(Exception):
                state = self._api.inspect_container(self.container_id)["State"]
                self._oom = bool(state.get("OOMKilled")) or self._oom
            if self._oom:
                # Docker removes the container's cgroup as it ends, before its peak can be read; an
                # OOM kill means the group reached its limit, which is the peak.
                self._peak = max(self._peak or 0, self._memory_bytes)
            self._remove()
        finally:
            self._loop.call_soon_threadsafe(self._set_exit, status)

    def open_extension_output(self, path: Path) -> None:
        """A second FIFO, for the output of external extensions (bound at EXTENSION_OUTPUT_PATH)."""
        os.mkfifo(path, 0o600)
        os.chown(path, self._uid, self._uid)
        self.extension_fifo = path
        self.extension_output_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._extension_w = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def connect(self, port: int, timeout: float) -> socket.socket:
        # The holder's pidfd names the network namespace for setns() and cannot name another process.
        if self.holder_pidfd is None or self._exit.done():
            raise ConnectionRefusedError("the sandbox has ended")
        return connect_in_netns(self.holder_pidfd, "127.0.0.1", port, timeout)

    def terminate_command(self) -> None:
        """SIGTERM to the function container's init, which passes it on to the command (docker-init)."""
        if self.container_id is None or self._killed or self._exit.done():
            return

        def terminate() -> None:
            with contextlib.suppress(Exception):
                self._api.kill(self.container_id, "SIGTERM")

        threading.Thread(target=terminate, name="docker-terminate", daemon=True).start()

    def _set_exit(self, status: int) -> None:
        self._close_writer()  # every writer inside is gone: the reader drains, then sees end-of-file
        if self._group is not None:
            self.memory_peak_bytes()  # the last reading; its file is closed with it
            self._group.close()
        if not self._exit.done():
            self._exit.set_result(status)

    def _close_writer(self) -> None:
        if self._output_w >= 0:
            os.close(self._output_w)
            self._output_w = -1
        if self._extension_w >= 0:
            os.close(self._extension_w)
            self._extension_w = -1
        if self.holder_pidfd is not None:
            os.close(self.holder_pidfd)
            self.holder_pidfd = None

    def abandon(self) -> None:
        """A start that failed: remove what exists and close everything the caller would have owned."""
        self._remove()
        self._close_writer()
        os.close(self.output_fd)
        if self.extension_output_fd is not None:
            os.close(self.extension_output_fd)
        for sock in (self.listener, self.proxy_listener):
            if sock is not None:
                sock.close()

    def _remove(self) -> None:
        """Remove whatever exists of both containers, the FIFO, and free the uid (idempotent)."""
        for container in (self.container_id, self.holder_id):
            if container is not None:
                with contextlib.suppress(Exception):
                    self._api.remove_container(container, force=True)
        for path in (self.fifo, self.extension_fifo):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if self._uid >= 0:
            self._uid_pool.release(self._uid)
            self._uid = -1

    def kill(self) -> None:
        if self._killed or self._exit.done():
            return
        self._killed = True
        threading.Thread(target=self._kill_blocking, name="docker-kill", daemon=True).start()

    def _kill_blocking(self) -> None:
        # Killing the function container's init ends every process in it; the holder goes with it.
        for container in (self.container_id, self.holder_id):
            if container is not None:
                with contextlib.suppress(Exception):
                    self._api.kill(container, "SIGKILL")

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def memory_peak_bytes(self) -> int | None:
        if self._group is not None:
            peak = self._group.memory_peak_bytes()
            if peak is not None:
                self._peak = peak
        return self._peak

    def oom_killed(self) -> bool:
        if not self._oom and self._group is not None and not self._exit.done():
            self._oom = self._group.oom_kills() > 0
        return self._oom

    def limit_events(self) -> LimitEvents:
        # Docker's own groups: the memory counters are readable (SandboxCgroup.of_process), pids are not.
        if self._group is not None and not self._exit.done():
            return LimitEvents(oom_kills=max(self._group.oom_kills(), int(self._oom)))
        return LimitEvents(oom_kills=int(self._oom))


def _start(api: Any, container: str) -> int:
    """Start a container; its pid (0 if it already ended). A loaded engine sometimes answers a start that
    did happen with an error ("cannot start an already running container"): the state decides."""
    from docker.errors import APIError

    try:
        api.start(container)
    except APIError:
        state = api.inspect_container(container)["State"]
        if not state.get("Running"):
            raise
        return int(state.get("Pid") or 0)
    return int(api.inspect_container(container)["State"].get("Pid") or 0)


def _static_busybox() -> str | None:
    """A busybox that needs no shared libraries (it runs inside images that have none of the host's)."""
    for path in _SHELL_CANDIDATES:
        if os.access(path, os.X_OK) and _is_static_elf(Path(path)):
            return path
    return None


def _is_static_elf(path: Path) -> bool:
    """An ELF executable with no program interpreter (PT_INTERP): the kernel runs it without ld.so."""
    try:
        with open(path, "rb") as elf:
            header = elf.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only
                return False
            order = "<" if header[5] == 1 else ">"
            (phoff,) = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
            for index in range(phnum):
                elf.seek(phoff + index * phentsize)
                (kind,) = struct.unpack(order + "I", elf.read(4))
                if kind == 3:  # PT_INTERP
                    return False
            return True
    except (OSError, struct.error, IndexError):
        return False


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
