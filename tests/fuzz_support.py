"""Shared by the fuzzing tests (tests/test_fuzz_*.py): how many examples to run, and the service
process's resource usage, to tell a leak from noise."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from support import fd_targets, generic_sandboxes_settled

# SANDBOX_FUZZ_EXAMPLES scales every fuzzing test: the defaults keep CI bounded, a larger value
# (e.g. 500) is a longer hunt: `SANDBOX_FUZZ_EXAMPLES=500 scripts/test tests/test_fuzz_*.py`.
SCALE = os.environ.get("SANDBOX_FUZZ_EXAMPLES")


def examples(default: int) -> int:
    return int(SCALE) if SCALE else default


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,  # no .hypothesis folder in the repository; a failure prints its reproducer
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


# Each live environment or session holds a few descriptors (its sandbox's pidfd and pipes, the Runtime
# API listener and connection): measured 5-6.
_PER_SANDBOX_FDS = 8
_RSS_SLACK_KB = 64 * 1024
# A fuzzed CreateFunction of an Image function connects the Docker backend, once: its client (docker-py's
# connections to the engine, and the modules it imports) stays for the service's life.
_DOCKER_CLIENT_FDS = 16  # measured 13: its connection pool to the engine
_DOCKER_CLIENT_KB = 48 * 1024


class Snapshot:
    """The service process's descriptors, memory and live sandboxes at one moment."""

    def __init__(self, service: Any) -> None:
        generic_sandboxes_settled(service)  # a cold start's replacement holds descriptors once started
        self.fds, self.rss_kb = usage(service.proc.pid)
        self.fd_targets = fd_targets(service.proc.pid)
        health = service.health()
        self.pools = health["pools"]
        self.docker = "docker" in health["pools"]["backends"]
        self.sandboxes = health["pools"]["environments"]["live"] + health["sessions"]["active"]

    def __str__(self) -> str:
        docker = ", Docker backend connected" if self.docker else ""
        return f"{self.fds} fds, {self.rss_kb} KB RSS, {self.sandboxes} live sandboxes{docker}"


def assert_no_leak(service: Any, before: Snapshot, settle: float = 10) -> Snapshot:
    """Descriptors beyond what the sandboxes alive now account for, or memory that kept growing, are a leak.
    What is still settling is not (a session closed a moment ago, whose sandbox is still ending; a pooled
    session sandbox starting to replace one taken): a leak is what is still there `settle` seconds on."""
    deadline = time.monotonic() + settle
    while True:
        after = Snapshot(service)
        docker = after.docker and not before.docker
        allowed = before.fds + _PER_SANDBOX_FDS * max(0, after.sandboxes - before.sandboxes) + 4
        allowed += _DOCKER_CLIENT_FDS if docker else 0
        if after.fds <= allowed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after.fds <= allowed, (
        f"descriptors leaked: before {before}, after {after}: {describe_fds(service.proc.pid, before.fd_targets)}; "
        f"pools {after.pools}"
    )
    rss_allowed = before.rss_kb + _RSS_SLACK_KB + (_DOCKER_CLIENT_KB if docker else 0)
    assert after.rss_kb <= rss_allowed, f"memory grew: before {before}, after {after}"
    return after


def usage(pid: int) -> tuple[int, int]:
    """(open file descriptors, resident set size in KB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return fds, rss


def describe_fds(pid: int, before: dict[str, str]) -> str:
    """The descriptors opened since `before`, to name what leaked in a failure message; a socket by its
    addresses (from /proc/PID/net), as its inode alone says nothing."""
    sockets = _socket_addresses(pid)
    opened = []
    for fd, target in sorted(fd_targets(pid).items(), key=lambda item: int(item[0])):
        if before.get(fd) != target:
            inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
            opened.append(f"{fd}->{target} {sockets.get(inode, '')}".rstrip())
    return ", ".join(opened)


def _socket_addresses(pid: int) -> dict[str, str]:
    addresses = {}
    for table in ("tcp", "tcp6", "unix"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if table == "unix":  # Num RefCount Protocol Flags Type St Inode [Path]
                addresses[fields[6]] = f"unix {fields[7] if len(fields) > 7 else '(unnamed)'}"
            else:  # sl local rem st ... inode (field 9)
                addresses[fields[9]] = f"{table} {fields[1]} -> {fields[2]} state {fields[3]}"
    return addresses
