"""Memory, process and CPU limits for sandboxes through cgroups (v1, or a delegated v2 subtree).

Each sandbox gets its own group, made before the sandbox is released from bwrap's --block-fd and
joined by the sandbox's pid 1 then, so everything it ever forks is inside. The group is the memory
bound for the sandbox's processes *and* its tmpfs pages, the fork-bomb bound, and the CPU share;
its counters tell whether the kernel OOM-killed something and how much memory was used at most.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    pids: int = 1024
    cpu_cores: float | None = None  # None: no CPU cap


class CgroupError(Exception):
    pass


class SandboxCgroup:
    """One sandbox's group (a folder per v1 hierarchy, or one v2 folder)."""

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self._dirs = dirs  # controller -> folder ("unified" for v2)
        self._peak_fd: int | None = None  # the memory peak's file, kept open: it is read after every invoke
        self._closed = False

    @classmethod
    def of_process(cls, pid: int, root: Path = _ROOT) -> SandboxCgroup | None:
        """The memory group another manager (Docker) put a process in, to read its counters; None if the
        process is gone or has no memory controller."""
        try:
            memberships = _memberships(Path(f"/proc/{pid}/cgroup"))
        except (OSError, ValueError):
            return None
        if "memory" in memberships:
            return cls(1, {"memory": root / "memory" / memberships["memory"].lstrip("/")})
        if "" in memberships and (root / "cgroup.controllers").exists():
            return cls(2, {"unified": root / memberships[""].lstrip("/")})
        return None

    def set_limits(self, limits: Limits) -> None:
        """New limits for a live group (a pre-started sandbox assigned to a function)."""
        if self.version == 1:
            _set_v1(self._dirs, limits)
        else:
            _set_v2(self._dirs["unified"], limits)

    def attach(self, pid: int) -> None:
        for folder in self._dirs.values():
            (folder / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        if self.version == 1:
            return _keyed(self._dirs["memory"] / "memory.oom_control").get("oom_kill", 0)
        return _keyed(self._dirs["unified"] / "memory.events").get("oom_kill", 0)

    def pids_max_events(self) -> int:
        """How many forks were refused at the group's process limit."""
        folder = self._dirs.get("pids" if self.version == 1 else "unified")
        return 0 if folder is None else _keyed(folder / "pids.events").get("max", 0)

    def memory_peak_bytes(self) -> int | None:
        """The group's memory high-water mark: one `pread` of a file opened once (the REPORT of every
        invoke reads it; opening it each time cost five more system calls)."""
        if self._closed:
            return None
        try:
            if self._peak_fd is None:
                path = (
                    self._dirs["memory"] / "memory.max_usage_in_bytes"
                    if self.version == 1
                    else self._dirs["unified"] / "memory.peak"
                )
                self._peak_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            return int(os.pread(self._peak_fd, 32, 0))
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the memory peak's file for good (the group itself stays until `remove`)."""
        self._closed = True
        fd, self._peak_fd = self._peak_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove the group once its processes are gone (the pid namespace tears down a moment after
        bwrap exits)."""
        self.close()
        deadline = time.monotonic() + timeout
        for folder in self._dirs.values():
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        return  # left behind; the next start's sweep removes it
                    time.sleep(0.005)


class Cgroups:
    """Makes sandbox groups under the service's own group, in a folder named for this process."""

    def __init__(self, version: int, parents: dict[str, Path]) -> None:
        self.version = version
        self._parents = parents
        for parent in parents.values():
            _sweep_dead_services(parent.parent)
            parent.mkdir(exist_ok=True)

    @classmethod
    def detect(cls, root: Path = _ROOT, self_cgroup: Path = Path("/proc/self/cgroup")) -> Cgroups:
        """cgroup v2 with memory and pids delegated to us, else v1 memory/pids/cpu; CgroupError if
        neither can be used (e.g. not root and nothing delegated)."""
        memberships = _memberships(self_cgroup)
        name = f"sandbox-runtime-{os.getpid()}"
        if (root / "cgroup.controllers").exists() and "" in memberships:
            return cls._v2(root / memberships[""].lstrip("/"), name)
        missing = [c for c in _V1_CONTROLLERS if not (root / c / "cgroup.procs").exists()]
        if missing:
            raise CgroupError(f"no usable cgroups: v1 controllers {', '.join(missing)} are not mounted")
        parents = {c: root / c / memberships.get(c, "/").lstrip("/") / name for c in _V1_CONTROLLERS}
        try:
            return cls(1, parents)
        except OSError as exc:
            raise CgroupError(f"cannot create cgroups: {exc}") from None

    @classmethod
    def _v2(cls, own: Path, name: str) -> Cgroups:
        try:
            available = (own / "cgroup.controllers").read_text().split()
            if not {"memory", "pids"} <= set(available):
                raise CgroupError(f"cgroup v2: memory and pids are not delegated to {own} (have: {available})")
            # No internal processes: the service moves into a leaf of its own, then delegates.
            leaf = own / "supervisor"
            leaf.mkdir(exist_ok=True)
            for pid in (own / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # a process that just exited
                    (leaf / "cgroup.procs").write_text(pid)
            wanted = [c for c in ("memory", "pids", "cpu") if c in available]
            (own / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
            return cls(2, {"unified": own / name})
        except OSError as exc:
            raise CgroupError(f"cgroup v2 at {own} is not writable: {exc}") from None

    def create(self, sandbox_id: str, limits: Limits) -> SandboxCgroup:
        dirs = {controller: parent / sandbox_id for controller, parent in self._parents.items()}
        for folder in dirs.values():
            folder.mkdir()
        group = SandboxCgroup(self.version, dirs)
        try:
            group.set_limits(limits)
        except OSError:
            group.remove(timeout=0)
            raise
        return group

    def close(self, timeout: float = 5.0) -> None:
        """Remove every group this service made (waiting a little for sandboxes still dying)."""
        for parent in self._parents.values():
            _remove_tree(parent, timeout)

    def describe(self) -> dict[str, object]:
        return {"version": self.version, "groups": {c: str(p) for c, p in self._parents.items()}}


def _set_v1(dirs: dict[str, Path], limits: Limits) -> None:
    memory = dirs["memory"]
    files = [memory / "memory.limit_in_bytes"]
    swap = memory / "memory.memsw.limit_in_bytes"
    if swap.exists():  # only with swap accounting; then swap must not extend the limit
        # memory + swap may never be below memory alone: when raising both, it goes first.
        files.insert(0 if limits.memory_bytes > int(swap.read_text()) else 1, swap)
    for path in files:
        path.write_text(str(limits.memory_bytes))
    (dirs["pids"] / "pids.max").write_text(str(limits.pids))
    if limits.cpu_cores is not None:
        (dirs["cpu"] / "cpu.cfs_period_us").write_text(str(_CPU_PERIOD_US))
        (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(limits.cpu_cores * _CPU_PERIOD_US)))


def _set_v2(folder: Path, limits: Limits) -> None:
    (folder / "memory.max").write_text(str(limits.memory_bytes))
    if (folder / "memory.swap.max").exists():
        (folder / "memory.swap.max").write_text("0")
    (folder / "memory.oom.group").write_text("1")  # an OOM kills the whole sandbox, not one process
    (folder / "pids.max").write_text(str(limits.pids))
    if limits.cpu_cores is not None and (folder / "cpu.max").exists():
        (folder / "cpu.max").write_text(f"{int(limits.cpu_cores * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")


_CGROUP2_OPTIONS = {"nsdelegate", "memory_localevents", "memory_recursiveprot", "memory_hugetlb_accounting"}
_MS_REMOUNT = 32


def favor_dynamic_modifications(mounts: Path = Path("/proc/mounts")) -> str | None:
    """Remount the cgroup2 hierarchy with `favordynmods`; the mount point changed, or None.

    Moving a process between cgroups takes a kernel-wide rwsem for writing, which waits for an RCU
    grace period when the machine was idle: 2 ms typically and 20 ms at p90 per sandbox start on
    our machines. `favordynmods` keeps that rwsem on its slower reader path instead (forks and
    exits anywhere on the host get slightly more expensive) and makes the attach ~0.1 ms. A
    host-wide trade-off, so only on request (SANDBOX_CGROUP_FAVORDYNMODS).
    """
    import ctypes

    for line in mounts.read_text().splitlines():
        _, target, kind, options, *_ = line.split()
        if kind != "cgroup2":
            continue
        current = set(options.split(","))
        if "favordynmods" in current:
            return None
        data = ",".join(sorted((current & _CGROUP2_OPTIONS) | {"favordynmods"}))
        if ctypes.CDLL(None, use_errno=True).mount(None, target.encode(), None, _MS_REMOUNT, data.encode()) != 0:
            raise CgroupError(f"cannot remount {target} with favordynmods: {os.strerror(ctypes.get_errno())}")
        return target
    return None


def _remove_tree(parent: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for child in [p for p in parent.glob("*") if p.is_dir()]:
        SandboxCgroup(1, {"group": child}).remove(max(0.0, deadline - time.monotonic()))
    with contextlib.suppress(OSError):
        parent.rmdir()


def _sweep_dead_services(folder: Path) -> None:
    """Remove groups left by services that were killed outright (named for their pid)."""
    for path in folder.glob("sandbox-runtime-*"):
        pid = path.name.removeprefix("sandbox-runtime-")
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        _remove_tree(path, timeout=0)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _memberships(self_cgroup: Path) -> dict[str, str]:
    """Controller -> our group path, from /proc/self/cgroup ("" is the v2 unified hierarchy)."""
    memberships: dict[str, str] = {}
    for line in self_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            memberships[controller] = path
    return memberships


def _keyed(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
    except OSError:
        pass
    return values
