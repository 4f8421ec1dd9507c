"""What the escape-and-abuse tests share: their service, the after-attack health check, and ways to find a
sandbox on the host (its runtime names itself with `tag`, which `ps -o comm` shows).

Each test module gets its own service over tests/security/template.yaml with `service = module_service()`
(this overrides conftest's `service` for that module). The service always runs with HOST_SECRET=hunter2
in its environment: no test may ever find that value inside a sandbox.

The tests follow reference/sandbox.md §7, one per checklist item that applies to what is built.
Pending, not built yet: #5 with the network on (egress must still miss host loopback/abstract sockets), #25 Docker.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyseccomp
import pytest
from conftest import ServiceProcess, lambda_client
from support import invoke, wait_for

TEMPLATE = Path(__file__).resolve().parent / "template.yaml"
HOST_SECRET = "hunter2"
SERVICE_ENV = {"HOST_SECRET": HOST_SECRET, "SANDBOX_EVENT_RETRY_DELAY": "0.2"}
# A CPU quota that leaves the host a CPU: docs/security.md's advice where the host must stay responsive,
# which the fork bomb tests assert. (With the default, all of a 2-CPU machine, a host fork + exec waited
# over 5 s while a bomb spun, and in another run 4 checks of the host took all of the bomb's 6 s.)
ONE_CPU_LESS = str(max(0.5, len(os.sched_getaffinity(0)) - 1))
# Syscall numbers for the raw probes, from libseccomp on the host (the sandbox has no pyseccomp).
NUMBERS = {
    name: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    for name in [
        *("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "unshare", "mount", "syslog"),
        *("bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "keyctl", "add_key", "request_key"),
        "init_module",
    ]
}


def module_service(name: str = "service", **env: str):
    """A module-scoped fixture (`service`, unless named otherwise) over the security template (plus `env`),
    stopped at the end of the module; stop() also checks that no sandbox process outlived it."""

    @pytest.fixture(scope="module", name=name)
    def service() -> Iterator[ServiceProcess]:
        running = ServiceProcess(TEMPLATE, env={**SERVICE_ENV, **env})
        yield running
        assert running.stop() == 0

    return service


@functools.cache
def _client(url: str):
    return lambda_client(url)


def call(service: ServiceProcess, name: str, event: object = None, **kwargs: object) -> tuple[dict, object]:
    """Invoke synchronously; the boto3 response and the decoded JSON payload."""
    response, payload = invoke(_client(service.url), name, {} if event is None else event, **kwargs)
    return response, json.loads(payload) if payload else None


def probe(service: ServiceProcess, name: str, *, function: str = "probe", tag: str = "", **args: object) -> dict:
    """Run one probe of tests/functions/abuse/app.py; the probe itself must complete."""
    response, result = call(service, function, {"probe": name, "tag": tag, "args": args})
    assert "FunctionError" not in response, result
    return result  # type: ignore[return-value]


def assert_unharmed(service: ServiceProcess) -> None:
    """After an attack: the service process lives, /health answers, and a normal invoke works."""
    assert service.proc.poll() is None, f"the service died:\n{service.logs()[-4000:]}"
    assert service.health()["status"] == "healthy"
    ping = uuid.uuid4().hex
    response, result = call(service, "hello", {"ping": ping})
    assert "FunctionError" not in response, result
    assert result == {"hello": ping}


def new_tag(prefix: str) -> str:
    """A process name no other process has (at most 13 characters, leaving room for a suffix)."""
    return f"{prefix[:6]}-{uuid.uuid4().hex[:6]}"


def tagged(tag: str) -> list[tuple[int, int]]:
    """(host uid, host pid) of every process whose comm is `tag`."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,comm="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    return [(int(row[0]), int(row[1])) for row in rows if len(row) == 3 and row[2] == tag]


def sandbox_uid(tag: str, timeout: float = 10) -> int:
    """The host uid of the sandbox whose runtime named itself `tag`."""
    found = wait_for(lambda: tagged(tag), timeout, f"a process named {tag}")
    uids = {uid for uid, _ in found}  # type: ignore[union-attr]
    assert len(uids) == 1, found
    return uids.pop()


def processes_of(uid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.split(None, 1)[0] == str(uid)]


def cgroup_parents(service: ServiceProcess) -> dict[str, Path]:
    """The service's own cgroup folders (sandbox-runtime-<service pid>), one per controller."""
    groups = service.health()["pools"]["backend"]["extra"]["cgroups"]["groups"]
    return {controller: Path(path) for controller, path in groups.items()}


def assert_sandbox_gone(service: ServiceProcess, uid: int, timeout: float = 5) -> None:
    """No process of the sandbox's host uid remains, nor any of its cgroups (named <uid>-<serial>)."""
    parents = cgroup_parents(service)
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(uid)
        groups = [str(group) for parent in parents.values() for group in parent.glob(f"{uid}-*")]
        if not left and not groups:
            return
        assert time.monotonic() < deadline, f"{timeout}s on, uid {uid} still has processes {left}, groups {groups}"
        time.sleep(0.05)


@dataclass
class Run:
    """An invocation in flight: its future (response, payload) and its sandbox's host uid and cgroup name."""

    future: Future
    uid: int
    group: str  # <uid>-<serial>, the folder under each of the service's cgroup parents


@contextlib.contextmanager
def running(service: ServiceProcess, name: str, tag: str, event: dict | None = None) -> Iterator[Run]:
    """Invoke `name` (LogType Tail) in the background and find its sandbox: the cgroup folder whose first
    processes include the one named `tag` (cheap even while a fork bomb keeps `ps` busy). The sandbox may
    have been started for the invoke or taken pre-started, so a new folder alone proves nothing. The
    response carries `elapsed`."""
    parents = cgroup_parents(service)

    def timed() -> tuple[dict, object]:
        started = time.monotonic()
        response, result = call(service, name, {**(event or {}), "tag": tag}, LogType="Tail")
        response["elapsed"] = time.monotonic() - started
        return response, result

    def found() -> Run | None:
        groups = [p for p in parents["pids"].iterdir() if p.is_dir() and _runs(p, tag)]
        assert len(groups) < 2, f"processes named {tag} in several sandboxes: {groups}"
        return Run(future, int(groups[0].name.split("-")[0]), groups[0].name) if groups else None

    with ThreadPoolExecutor(1) as executor:
        future = executor.submit(timed)
        yield wait_for(found, 10, f"the sandbox of {name}")  # type: ignore[misc]


def _runs(group: Path, tag: str) -> bool:
    """Whether one of the group's first processes (the runtime, not what it forked) is named `tag`.
    cgroup v1 lists them sorted by pid."""
    try:
        pids = (group / "cgroup.procs").read_text().split()[:16]
    except OSError:
        return False
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == tag:
                return True
        except OSError:
            continue
    return False


def report(tail: str, request_id: str) -> dict[str, str]:
    """The fields of the invocation's REPORT line in a log tail."""
    line = next(line for line in tail.splitlines() if line.startswith(f"REPORT RequestId: {request_id}"))
    return dict(re.findall(r"([A-Za-z ]+): ([^\t]+)", line.removeprefix("REPORT ")))


class PidsWatch:
    """Samples a pids cgroup every 10 ms in a thread of its own, so the peak and the refused forks are seen
    however slowly the test's own checks run while a bomb starves the host (each took about 1 s when
    they did the sampling). Stops when the group is gone or on `stop()`."""

    def __init__(self, group: Path) -> None:
        self.group = group
        self.peak = 0
        self.refused = 0
        self.samples = 0
        self.limited_at: float | None = None  # time.monotonic() of the first sample with a refused fork
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                current = int((self.group / "pids.current").read_text())
                refused = int((self.group / "pids.events").read_text().split()[1])
            except (FileNotFoundError, ProcessLookupError):
                return  # the sandbox is over and its group removed
            self.peak, self.refused, self.samples = (
                max(self.peak, current),
                max(self.refused, refused),
                self.samples + 1,
            )
            if refused and self.limited_at is None:
                self.limited_at = time.monotonic()
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def checks_of_the_host(self, service: ServiceProcess, done: Callable[[], bool], fork_timeout: float) -> list[float]:
        """Check the host again and again until `done()` or the group is gone: a fork + exec within
        `fork_timeout` seconds, and the service's /health. The monotonic time each check began, for
        `at_the_limit`."""
        started: list[float] = []
        while not done() and self.group.exists():
            started.append(time.monotonic())
            assert subprocess.run(["true"], timeout=fork_timeout).returncode == 0
            assert service.health()["status"] == "healthy"
            time.sleep(0.05)
        return started

    def at_the_limit(self, started: list[float]) -> int:
        """How many of the checks started at `started` (monotonic times, each while the group still existed)
        began once the bomb had reached its limit: what shows the host unharmed while it was at its worst."""
        return 0 if self.limited_at is None else sum(1 for at in started if at >= self.limited_at)
