"""The bubblewrap backend: one unprivileged, fully unshared bwrap sandbox per execution environment.

The non-negotiables of DESIGN §2, each a hole found by testing (reference/sandbox.md):
- bwrap runs as a distinct unprivileged host uid (started by root, `--uid` alone stays host root);
- bwrap is exec'd with an empty environment (its pid 1's /proc/1/environ is visible inside);
- every namespace unshared, nested user namespaces disabled, a new session (no TIOCSTI),
  `--die-with-parent` from long-lived spawner threads, a read-only root, /dev and /dev/shm sized
  and read-only, a synthetic /etc, code and runtime read-only, a size-capped /tmp;
- the whole tree is killed by killing the sandbox's pid 1 (the pid namespace's init).
The sandbox is held on `--block-fd` until the service has made its Runtime API listener inside the
sandbox's network namespace (and, with the sandbox issue, attached its cgroups).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import seccomp
from .cgroups import Cgroups, Limits, SandboxCgroup
from .egress import PROXY_HOST, PROXY_PORT
from .netns import connect_in_netns, listen_in_netns
from .prestart import GenericPool, key_of
from .slots import Slot, Slots
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

# Lambda's own sandbox user (sbx_user1051) as seen inside; the host uid behind it differs per sandbox.
SANDBOX_UID = 993
SANDBOX_GID = 990

_ETC_FILES = {
    "/etc/passwd": (
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/tmp:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    ),
    "/etc/group": f"root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
    # sandbox.localdomain: where extensions tell the Telemetry API to deliver (their own listener).
    "/etc/hosts": ("127.0.0.1\tlocalhost sandbox.localdomain sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
}
# Host files that are safe and useful to show read-only: CA certificates, time zone, the dynamic
# linker's cache and the alternatives links that /usr/bin points through. Never /etc/ssl/private.
_ETC_RO_BINDS = (
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/alternatives",
)
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_SHM_BYTES = 4 * 1024 * 1024
_PR_SET_CHILD_SUBREAPER = 36


class BwrapBackend:
    """Starts bwrap sandboxes. One instance per service; `close()` after every sandbox is gone."""

    name = "bwrap"

    def __init__(
        self,
        *,
        uid_pool: UidPool,
        cgroups: Cgroups | None,
        spawn_threads: int = 4,
        bwrap: str | None = None,
    ) -> None:
        self._bwrap = bwrap or shutil.which("bwrap")
        self._prlimit = shutil.which("prlimit")
        self._uid_pool = uid_pool
        self._cgroups = cgroups
        self._serial = itertools.count(1)  # next() is atomic: spawner threads share it
        # Long-lived threads: --die-with-parent fires when the *thread* that forked bwrap exits.
        self._executor = ThreadPoolExecutor(max_workers=spawn_threads, thread_name_prefix="sandbox-spawn")
        self._root_links = list(_root_layout())
        self._fifo_dir: Path | None = None  # extension output FIFOs, made on first use
        self._fifo_lock = threading.Lock()
        self.generic: GenericPool | None = None  # pre-started sandboxes, once `keep_generic` is called
        self._assigner: ThreadPoolExecutor | None = None
        # Orphaned sandbox init processes are re-parented to us, so we can reap them promptly.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def status(self) -> BackendStatus:
        if not self._bwrap:
            return BackendStatus(self.name, False, "bwrap is not installed (apt-get install bubblewrap)")
        return BackendStatus(
            self.name,
            True,
            extra={
                "bwrap": self._bwrap,
                "sandbox_uids": f"{self._uid_pool.first}+{self._uid_pool.count}",
                "cgroups": self._cgroups.describe() if self._cgroups else None,
                "rlimits": bool(self._prlimit),
            },
        )

    async def start(self, spec: SandboxSpec) -> BwrapSandbox:
        if not self._bwrap:
            raise SandboxError("bwrap is not installed (apt-get install bubblewrap)")
        if spec.image is not None or spec.code_dir is None:
            raise SandboxError("bwrap runs code folders; container images need the docker backend")
        loop = asyncio.get_running_loop()
        # Taken in threads of its own: a cold start must not queue behind sandboxes refilling the pool.
        if (
            self.generic is not None
            and self._assigner is not None
            and key_of(spec) is not None
            and (sandbox := await loop.run_in_executor(self._assigner, self.generic.take, spec)) is not None
        ):
            return sandbox
        return await loop.run_in_executor(self._executor, self._start_blocking, spec)

    def keep_generic(self, slots: Slots, size: int, loop: asyncio.AbstractEventLoop) -> None:
        """Keep `size` pre-started generic sandboxes ready for each spec passed to `generic.want`
        (`prestart.py`); `start` then takes one when it can. `loop` watches the ready ones."""
        self._assigner = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-assign")
        self.generic = GenericPool(self._start_generic, slots, self._executor, size, loop)

    def _start_generic(self, spec: SandboxSpec, slot: Slot) -> BwrapSandbox:
        return self._start_blocking(spec, slot=slot)

    def close(self) -> None:
        if self._assigner is not None:
            self._assigner.shutdown(wait=True)
        if self.generic is not None:
            self.generic.close()
        self._executor.shutdown(wait=True)
        if self._fifo_dir is not None:
            shutil.rmtree(self._fifo_dir, ignore_errors=True)

    def _extension_fifo(self, uid: int) -> Path:
        """A FIFO for a sandbox's extension output, owned by its uid. The folder is named like the service's
        state folders, so a later service removes it if this one dies without cleaning up."""
        with self._fifo_lock:
            if self._fifo_dir is None:
                self._fifo_dir = Path(tempfile.mkdtemp(prefix=f"sandbox-runtime-{os.getpid()}-bwrap-"))
                self._fifo_dir.chmod(0o711)  # sandbox uids traverse it to their FIFO, never list it
        path = self._fifo_dir / f"extensions-{next(self._serial)}"
        os.mkfifo(path, 0o600)
        os.chown(path, uid, uid)
        return path

    def _start_blocking(self, spec: SandboxSpec, *, slot: Slot | None = None) -> BwrapSandbox:
        """Start a sandbox for `spec`; with a `slot`, a generic one that says when it is ready and reads
        its assignment on a socket whose descriptor number is appended to its command."""
        uid = self._uid_pool.acquire()
        fds: list[int] = []
        group: SandboxCgroup | None = None
        fifo: tuple[Path, int, int] | None = None  # extension output: path, read end, our write end
        assignment: tuple[int, int] | None = None  # the generic sandbox's end and ours
        passed: tuple[int, ...] = ()
        try:
            if slot is not None:
                assignment = _socketpair(fds)
                passed = assignment[:1]
                spec = dataclasses.replace(spec, command=(*spec.command, str(assignment[0])))
            if spec.workspace_dir is not None:
                # The folder only: what is inside is the sandbox's own (or was written for it).
                os.chown(spec.workspace_dir, uid, uid, follow_symlinks=False)
            if spec.extension_output:
                path = self._extension_fifo(uid)
                reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                fifo = (path, reader, os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            if self._cgroups is not None:
                group = self._cgroups.create(
                    f"{uid}-{next(self._serial)}",
                    Limits(spec.memory_mb * 1024 * 1024, pids=spec.pids_limit, cpu_cores=spec.cpu_cores),
                )
            info_r, info_w = _pipe(fds)
            block_r, block_w = _pipe(fds)
            out_r, out_w = _pipe(fds)
            data_fds = {}
            for dest, content in _ETC_FILES.items():
                r, w = _pipe(fds)
                os.write(w, content.encode())
                _close(fds, w)
                data_fds[dest] = r
            seccomp_fd = seccomp.filter_fd()
            fds.append(seccomp_fd)
            argv = self._argv(
                spec, info_fd=info_w, block_fd=block_r, seccomp_fd=seccomp_fd, data_fds=data_fds,
                fifo=fifo[0] if fifo else None,
            )  # fmt: skip
            proc = subprocess.Popen(
                argv,
                env={},
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                pass_fds=(info_w, block_r, seccomp_fd, *data_fds.values(), *passed),
                start_new_session=True,  # a Ctrl-C meant for the service must not reach sandboxes
                user=uid,  # a distinct unprivileged host uid; root running bwrap stays root
                group=uid,
                extra_groups=[],
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            if fifo is not None:
                _close_fifo(fifo)
            self._uid_pool.release(uid)
            if group is not None:
                group.remove(timeout=0)
            raise
        for fd in (info_w, block_r, out_w, seccomp_fd, *data_fds.values(), *passed):
            _close(fds, fd)
        sandbox = BwrapSandbox(proc, uid, out_r, self._uid_pool, group, self._executor)
        sandbox._fifo = fifo
        if assignment is not None:
            fds.remove(assignment[1])  # the sandbox's from here: released with it
            sandbox.slot, sandbox.assignment_fd = slot, assignment[1]
        if fifo is not None:
            sandbox.extension_output_fd = fifo[1]
        try:
            info = _read_all(info_r)
            _close(fds, info_r)
            if not info:
                proc.wait()
                raise SandboxError(f"bwrap failed to start: {_drain(out_r).strip() or proc.returncode}")
            sandbox._attach_child(json.loads(info)["child-pid"])
            if group is not None:
                group.attach(sandbox.child_pid)  # before the release: all it forks is inside
            sandbox.listener = listen_in_netns(sandbox.child_pid, RUNTIME_API_HOST, RUNTIME_API_PORT)
            if spec.allow_network:
                sandbox.proxy_listener = listen_in_netns(sandbox.child_pid, PROXY_HOST, PROXY_PORT)
            os.write(block_w, b"go")
        except BaseException:
            sandbox.kill()  # before the block pipe closes: EOF on --block-fd means "go"
            for fd in fds:
                os.close(fd)
            proc.wait()
            sandbox._release()
            if fifo is not None:
                os.close(fifo[1])  # the caller would have owned it
            raise
        _close(fds, block_w)
        os.set_blocking(out_r, False)
        return sandbox

    def _argv(
        self,
        spec: SandboxSpec,
        *,
        info_fd: int,
        block_fd: int,
        seccomp_fd: int,
        data_fds: dict[str, int],
        fifo: Path | None = None,
    ) -> list[str]:
        # rlimit backstops, set by the sandbox's first process on itself: root here may lack
        # CAP_SYS_RESOURCE to set them on the already uid-switched child, and preexec_fn is unsafe
        # in a threaded service. No core dumps (a host core handler would see them).
        argv = (
            [
                self._prlimit,
                "--core=0",
                f"--nofile={spec.open_files_limit}",
                f"--fsize={spec.tmp_size_mb * 1024 * 1024}",
                "--",
            ]
            if self._prlimit
            else []
        )
        argv += [
            self._bwrap or "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_GID),
            "--hostname", spec.hostname,
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        argv += self._root_links
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--perms", "1777", "--size", str(_SHM_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
        for dest, fd in data_fds.items():
            argv += ["--ro-bind-data", str(fd), dest]
        for path in _ETC_RO_BINDS:
            argv += ["--ro-bind-try", path, path]
        argv += ["--ro-bind", str(spec.code_dir), "/var/task"]
        argv += ["--ro-bind", str(spec.runtime_dir), "/var/runtime"] if spec.runtime_dir else ["--dir", "/var/runtime"]
        argv += ["--ro-bind", str(spec.opt_dir), "/opt"] if spec.opt_dir else ["--dir", "/opt"]
        for extra in spec.extra_ro_binds:
            argv += ["--ro-bind", str(extra), str(extra)]
        argv += ["--perms", "1777", "--size", str(spec.tmp_size_mb * 1024 * 1024), "--tmpfs", "/tmp"]
        if spec.workspace_dir is not None:
            argv += ["--bind", str(spec.workspace_dir), WORKSPACE_PATH]
        if fifo is not None:
            argv += ["--bind", str(fifo), EXTENSION_OUTPUT_PATH]  # a FIFO: all it allows is writing to us
        argv += ["--chdir", spec.cwd, "--clearenv"]
        for key, value in spec.env.items():
            argv += ["--setenv", key, value]
        argv += ["--seccomp", str(seccomp_fd), "--info-fd", str(info_fd), "--block-fd", str(block_fd)]
        argv += ["--remount-ro", "/", "--", *spec.command]
        return argv


class BwrapSandbox:
    """A running bwrap sandbox. The caller owns `listener` and `output_fd` once `start` returns."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        uid: int,
        output_fd: int,
        uid_pool: UidPool,
        group: SandboxCgroup | None,
        executor: ThreadPoolExecutor,
    ):
        self._proc = proc
        self._group = group
        self._executor = executor
        self._final: tuple[LimitEvents, int | None] | None = None  # (limit counters, peak) read at exit
        self._uid = uid
        self._uid_pool = uid_pool
        self.output_fd = output_fd
        self.extension_output_fd: int | None = None
        self._fifo: tuple[Path, int, int] | None = None
        self.listener: socket.socket | None = None
        self.proxy_listener: socket.socket | None = None
        self.child_pid = 0
        self._child_pidfd: int | None = None
        self._command_pid: int | None = None
        self._exit: asyncio.Future[int] | None = None
        self._released = False
        # A generic sandbox (`prestart.py`): its slot, and the socket its assignment is written to.
        self.slot: Slot | None = None
        self.assignment_fd: int | None = None
        self._discarded = False

    @property
    def uid(self) -> int:
        return self._uid

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def group(self) -> SandboxCgroup | None:
        return self._group

    def running(self) -> bool:
        return self._proc.poll() is None and not self._released

    def discard(self) -> None:
        """Kill and release a sandbox no environment owns (a generic one nobody took). Once only."""
        if self._discarded:
            return
        self._discarded = True
        if self._child_pidfd is not None:  # the pid namespace's init, even if bwrap is gone already
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._child_pidfd, signal.SIGKILL)
        self.kill()
        with contextlib.suppress(ChildProcessError):
            self._proc.wait()
        if self._child_pidfd is not None:  # ours to reap (we are its subreaper) unless bwrap did; by pidfd: no
            with contextlib.suppress(ChildProcessError, OSError):  # reused pid can be waited for by mistake
                os.waitid(os.P_PIDFD, self._child_pidfd, os.WEXITED)
        os.close(self.output_fd)
        for listener in (self.listener, self.proxy_listener):
            if listener is not None:
                listener.close()
        self._release()

    def _attach_child(self, child_pid: int) -> None:
        self.child_pid = child_pid
        with contextlib.suppress(ProcessLookupError):
            self._child_pidfd = os.pidfd_open(child_pid)

    def connect(self, port: int, timeout: float) -> socket.socket:
        # The pidfd of the sandbox's pid 1 names its network namespace for setns() and cannot name
        # another process once it is gone (Linux 5.8+).
        if self._child_pidfd is None or self._released:
            raise ConnectionRefusedError("the sandbox has ended")
        return connect_in_netns(self._child_pidfd, "127.0.0.1", port, timeout)

    def terminate_command(self) -> None:
        pid = self._find_command_pid()
        if pid is None or self._released:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            pidfd = os.pidfd_open(pid)
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            finally:
                os.close(pidfd)

    def kill(self) -> None:
        if self._proc.returncode is not None:
            return
        if self._child_pidfd is not None:
            # The pid namespace's init: when it dies the kernel kills every process in the sandbox.
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._child_pidfd, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def wait(self) -> int:
        if self._exit is None:
            loop = asyncio.get_running_loop()
            self._exit = loop.create_future()
            pidfd = os.pidfd_open(self._proc.pid)

            def on_exit() -> None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                status = self._proc.wait()
                self._reap_orphan(loop, attempts=40)
                self._exit.set_result(128 - status if status < 0 else status)  # type: ignore[union-attr]

            loop.add_reader(pidfd, on_exit)
        return await asyncio.shield(self._exit)

    def _reap_orphan(self, loop: asyncio.AbstractEventLoop, attempts: int) -> None:
        """After a normal exit bwrap leaves the sandbox's pid 1 unreaped; as subreaper we reap it."""
        try:
            pid, _ = os.waitpid(self.child_pid, os.WNOHANG) if self.child_pid else (-1, 0)
        except ChildProcessError:
            pid = -1  # already reaped by bwrap's monitor
        if pid == 0 and attempts > 0:
            loop.call_later(0.05, self._reap_orphan, loop, attempts - 1)
            return
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.assignment_fd is not None:
            os.close(self.assignment_fd)  # never assigned: the preload exits on EOF
            self.assignment_fd = None
        if self.slot is not None:
            self.slot.release()
        if self._fifo is not None:
            _close_fifo(self._fifo, reader=False)  # the read end is the caller's
            self._fifo = None
        if self._child_pidfd is not None:
            os.close(self._child_pidfd)
            self._child_pidfd = None
        self._uid_pool.release(self._uid)
        if self._group is not None:
            # What the group knows is read now: it is removed (once its processes are gone) next.
            self._final = (self._group_events(self._group), self._group.memory_peak_bytes())
            try:
                self._executor.submit(self._group.remove)
            except RuntimeError:  # the backend is closing: no waiting now; Cgroups.close sweeps it
                self._group.remove(timeout=0)

    def oom_killed(self) -> bool:
        return self.limit_events().oom_kills > 0

    def limit_events(self) -> LimitEvents:
        if self._final is not None:
            return self._final[0]
        return self._group_events(self._group) if self._group is not None else LimitEvents()

    @staticmethod
    def _group_events(group: SandboxCgroup) -> LimitEvents:
        return LimitEvents(oom_kills=group.oom_kills(), pids_max=group.pids_max_events())

    def memory_peak_bytes(self) -> int | None:
        if self._final is not None:
            return self._final[1]
        if self._group is not None:
            return self._group.memory_peak_bytes()
        pid = self._command_pid or self._find_command_pid()
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, ValueError):
            self._command_pid = None
        return None

    def _find_command_pid(self) -> int | None:
        try:
            with open(f"/proc/{self.child_pid}/task/{self.child_pid}/children") as children:
                first = children.read().split()
        except OSError:
            return None
        self._command_pid = int(first[0]) if first else None
        return self._command_pid


def _root_layout() -> Iterator[str]:
    """Mirror the host's top-level lib/bin links (merged /usr) or bind the real folders read-only."""
    for name in _TOP_LEVEL_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            yield from ("--symlink", os.readlink(path), f"/{name}")
        elif path.is_dir():
            yield from ("--ro-bind", str(path), str(path))


def _close_fifo(fifo: tuple[Path, int, int], *, reader: bool = True) -> None:
    path, read_end, write_end = fifo
    os.close(write_end)  # the reader sees end-of-file once every writer inside is gone too
    if reader:
        os.close(read_end)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _socketpair(fds: list[int]) -> tuple[int, int]:
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pair = theirs.detach(), ours.detach()
    fds += pair
    return pair


def _pipe(fds: list[int]) -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    fds += [r, w]
    return r, w


def _close(fds: list[int], fd: int) -> None:
    fds.remove(fd)
    os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _drain(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536).decode(errors="replace")
    except BlockingIOError:
        return ""
