"""What processes cost in memory, read from /proc (as root: another uid's smaps_rollup needs it).

- **RSS**: resident pages of a process, shared ones (the interpreter's code, libc) counted in full in every
  process that maps them. The sum of RSS over an environment's processes is what the budget in
  docs/performance.md ("≤ 20 MB per idle warm environment") is compared against: the worst case, as if
  nothing were shared with another environment.
- **PSS**: each shared page divided by the number of processes mapping it; the sum over all processes is the
  machine's real use. With many environments of one interpreter, an environment's PSS tends to its USS.
- **USS**: the pages only this process maps (private clean + private dirty): what ending it gives back.

An environment is every process of its sandbox, found as the processes below the service running as the
environment's sandbox uid (each sandbox has a distinct host uid): bwrap's outer process, the sandbox's pid 1
(bwrap's init inside the pid namespace) and the runtime (the bootstrap's python). `prlimit` exec's into bwrap,
so it is not a process of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

_KB = 1024


@dataclass
class Usage:
    """Memory of one process, or a sum over several, in bytes."""

    rss: int = 0
    pss: int = 0
    uss: int = 0
    processes: int = 0
    threads: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.rss + other.rss,
            self.pss + other.pss,
            self.uss + other.uss,
            self.processes + other.processes,
            self.threads + other.threads,
        )

    def mb(self) -> dict[str, float]:
        return {"rss_mb": self.rss / 2**20, "pss_mb": self.pss / 2**20, "uss_mb": self.uss / 2**20}


@dataclass
class Proc:
    pid: int
    ppid: int
    uid: int
    name: str
    usage: Usage = field(default_factory=Usage)


def process_usage(pid: int) -> Usage:
    """RSS, PSS and USS of one process from /proc/PID/smaps_rollup, and its thread count. Raises OSError
    when it is gone."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
        for line in rollup:
            key, _, rest = line.partition(b":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == b"kB":
                values[key.decode()] = int(parts[0]) * _KB
    threads = 0
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Threads:"):
                threads = int(line.split()[1])
    return Usage(
        rss=values.get("Rss", 0),
        pss=values.get("Pss", 0),
        uss=values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
        processes=1,
        threads=threads,
    )


def _stat(pid: int) -> tuple[int, int, str]:
    """(ppid, uid, name) of a process."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        data = stat.read()
    name = data[data.index(b"(") + 1 : data.rindex(b")")].decode(errors="replace")
    ppid = int(data[data.rindex(b")") + 2 :].split()[1])
    return ppid, os.stat(f"/proc/{pid}").st_uid, name


def descendants(root: int) -> list[Proc]:
    """Every process below `root` (not `root` itself), with its memory."""
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid, uid, name = _stat(int(entry))
        except (OSError, ValueError):
            continue
        table[int(entry)] = Proc(int(entry), ppid, uid, name)
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: list[Proc] = []
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        proc = table[pid]
        try:
            proc.usage = process_usage(pid)
        except OSError:
            continue  # ended meanwhile
        found.append(proc)
        stack += children.get(pid, ())
    return found


def environments(service_pid: int, uids: Iterable[int] | range) -> dict[int, list[Proc]]:
    """The sandbox processes below the service, by sandbox uid (one uid per live sandbox)."""
    wanted = set(uids)
    by_uid: dict[int, list[Proc]] = {}
    for proc in descendants(service_pid):
        if proc.uid in wanted:
            by_uid.setdefault(proc.uid, []).append(proc)
    for procs in by_uid.values():
        procs.sort(key=lambda p: _depth(p, procs))
    return by_uid


def _depth(proc: Proc, group: list[Proc]) -> int:
    pids = {p.pid: p for p in group}
    depth = 0
    while proc.ppid in pids:
        proc = pids[proc.ppid]
        depth += 1
    return depth


def total(procs: Iterable[Proc]) -> Usage:
    out = Usage()
    for proc in procs:
        out = out + proc.usage
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
