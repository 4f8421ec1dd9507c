"""Pre-started generic sandboxes: a cold start without the sandbox's or the interpreter's start.

A generic sandbox is started like any other (its own uid, cgroup, seccomp filter, namespaces and
Runtime API listener), but for no function yet: empty slots at /var/task and /opt (`slots.py`), and
the spec's `Preload` command and start-up environment. Our runtime's preload (`bootstrap/preload.py`)
brings the interpreter up, imports the runtime, and waits on a pipe.

Taking one for a spec *assigns* it: the spec's staged code and layers are mounted into its slots, its
memory, process and CPU limits are written to its group, its egress listener is made if the spec
allows network, and its complete environment is written to the pipe. From there the runtime goes on
as if it had just started with that environment; the function cannot tell the difference, except
that its cold start is the handler's import and little else.

Sandboxes are kept ready per *key*, everything fixed at a sandbox's start (`key_of`); the service asks
for the keys of the functions it serves (`want`), and each taken sandbox is replaced in the
background. A generic sandbox serves one function once, as any other: it is never given back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import select
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from .cgroups import Limits
from .egress import PROXY_HOST, PROXY_PORT
from .netns import listen_in_netns
from .slots import Slot, SlotError, Slots
from .spec import SandboxSpec

if TYPE_CHECKING:
    from .bwrap import BwrapSandbox

# A generic sandbox's limits until it is assigned: a function's smallest memory size (its idle
# runtime needs a tenth of it) and no CPU cap (its start is a cold start's critical path).
_IDLE_MEMORY_MB = 128
# What a generic sandbox's runtime writes once it is up (`bootstrap/preload.py`), and how long a cold
# start waits for that from a sandbox taken before it was.
READY = b"R"
_READY_TIMEOUT = 10.0
_REFILL_DELAY = 0.1  # seconds after a take
_MAX_RESTART_DELAY = 60.0  # between replacements of ready sandboxes that keep dying

Key = Hashable
StartGeneric = Callable[[SandboxSpec, Slot], "BwrapSandbox"]


def key_of(spec: SandboxSpec) -> Key | None:
    """What a generic sandbox for `spec` has to have been started with; None if none can run it."""
    if spec.preload is None or spec.code_dir is None or spec.image is not None:
        return None
    if spec.workspace_dir is not None or spec.extension_output:
        return None
    return (
        spec.preload.command,
        tuple(sorted(spec.preload.env.items())),
        spec.runtime_dir,
        spec.extra_ro_binds,
        spec.cwd,
        spec.tmp_size_mb,
        spec.pids_limit,
        spec.open_files_limit,
        spec.hostname,
    )


def generic_spec(spec: SandboxSpec, slot: Slot) -> SandboxSpec:
    """The spec a generic sandbox for `spec`'s key starts with, its slots in place of code and layers."""
    assert spec.preload is not None
    return dataclasses.replace(
        spec,
        command=spec.preload.command,
        env=dict(spec.preload.env),
        code_dir=slot.task,
        opt_dir=slot.opt,
        memory_mb=_IDLE_MEMORY_MB,
        cpu_cores=None,
        allow_network=False,
        label="generic",
    )


class GenericPool:
    """Ready generic sandboxes per key. Thread-safe: `take` runs in the backend's spawn threads."""

    def __init__(
        self, start: StartGeneric, slots: Slots, executor: Executor, size: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._start = start
        self._loop = loop  # watches ready sandboxes' exits
        self._slots = slots
        self._executor = executor
        self.size = size
        self._lock = threading.Lock()
        self._ready: dict[Key, collections.deque[BwrapSandbox]] = {}
        self._starting: collections.Counter[Key] = collections.Counter()
        self._templates: dict[Key, SandboxSpec] = {}
        self._wanted: collections.Counter[Key] = collections.Counter()
        self._closed = False
        self._watching: dict[BwrapSandbox, int] = {}  # ready sandbox -> its pidfd (loop thread only)
        self._deaths: collections.Counter[Key] = collections.Counter()  # ready ones that died, in a row (loop)
        self.taken = 0
        self.missed = 0  # takes that found no ready sandbox (the caller started one from nothing)
        self.failed: str | None = None  # the last start or assignment failure

    def want(self, spec: SandboxSpec) -> None:
        """Keep sandboxes ready for `spec`'s key (counted: `unwant` as often to stop)."""
        key = key_of(spec)
        if key is None:
            return
        with self._lock:
            self._wanted[key] += 1
            self._templates.setdefault(key, spec)
        self._refill(key)

    def unwant(self, spec: SandboxSpec) -> None:
        key = key_of(spec)
        if key is None:
            return
        with self._lock:
            self._wanted[key] -= 1
            if self._wanted[key] > 0:
                return
            del self._wanted[key]
            self._templates.pop(key, None)
            spares = self._ready.pop(key, ())
        for sandbox in spares:
            self._submit(sandbox.discard)

    def take(self, spec: SandboxSpec) -> BwrapSandbox | None:
        """A ready sandbox assigned to `spec`, or None (start one from nothing)."""
        key = key_of(spec)
        if key is None:
            return None
        sandbox = None
        with self._lock:
            ready = self._ready.get(key)
            while ready and sandbox is None:
                candidate = ready.popleft()
                if candidate.running():
                    sandbox = candidate
                else:
                    self._submit(candidate.discard)
            if sandbox is None:
                self.missed += 1
        if sandbox is None:
            self._refill(key)
            return None
        self._loop.call_soon_threadsafe(self._unwatch, sandbox)  # its environment watches it from now on
        try:
            _assign(sandbox, spec)
        except Exception as exc:  # a broken spare must not fail the invoke: start one from nothing
            self.failed = f"assigning a generic sandbox failed: {exc}"
            sandbox.discard()
            self._refill(key)
            return None
        with self._lock:
            self.taken += 1
        self._loop.call_soon_threadsafe(self._deaths.pop, key, None)
        # The replacement's start (bwrap, its seccomp program, the Runtime API listener: Python work in this
        # process) would compete with this cold start's own for the CPU and the GIL: it starts a little later.
        self._loop.call_soon_threadsafe(self._loop.call_later, _REFILL_DELAY, self._refill, key)
        return sandbox

    def status(self) -> dict[str, object]:
        with self._lock:
            return {
                "size": self.size,
                "keys": len(self._wanted),
                "ready": sum(len(ready) for ready in self._ready.values()),
                "starting": sum(self._starting.values()),
                "taken": self.taken,
                "missed": self.missed,
                "problem": self.failed,
            }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spares = [sandbox for ready in self._ready.values() for sandbox in ready]
            self._ready.clear()
        for sandbox in spares:
            sandbox.discard()

    def _refill(self, key: Key) -> None:
        with self._lock:
            if self._closed or key not in self._wanted:
                return
            missing = self.size - len(self._ready.get(key, ())) - self._starting[key]
            self._starting[key] += max(0, missing)
            template = self._templates[key]
        for _ in range(missing):
            self._submit(self._start_one, key, template)

    def _start_one(self, key: Key, template: SandboxSpec) -> None:
        sandbox = None
        try:
            slot = self._slots.new()
            try:
                sandbox = self._start(generic_spec(template, slot), slot)
            except BaseException:
                slot.release()
                raise
        except Exception as exc:
            self.failed = f"starting a generic sandbox failed: {exc}"
        with self._lock:
            self._starting[key] -= 1
            if sandbox is not None and not self._closed and key in self._wanted:
                self._ready.setdefault(key, collections.deque()).append(sandbox)
                self._loop.call_soon_threadsafe(self._watch, key, sandbox)
                sandbox = None
        if sandbox is not None:  # no longer wanted while it started
            sandbox.discard()

    def _watch(self, key: Key, sandbox: BwrapSandbox) -> None:
        """On the loop: a ready sandbox that dies (killed from outside) is dropped and replaced at once,
        not found dead by the next cold start."""
        with self._lock:
            if not any(sandbox in ready for ready in self._ready.values()):
                return  # taken or discarded already
        try:
            pidfd = os.pidfd_open(sandbox.pid)
        except ProcessLookupError:
            self._on_exit(key, sandbox)
            return
        self._watching[sandbox] = pidfd
        self._loop.add_reader(pidfd, self._on_exit, key, sandbox)

    def _unwatch(self, sandbox: BwrapSandbox) -> None:
        if (pidfd := self._watching.pop(sandbox, None)) is not None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)

    def _on_exit(self, key: Key, sandbox: BwrapSandbox) -> None:
        self._unwatch(sandbox)
        with self._lock:
            ready = self._ready.get(key)
            dead = ready is not None and sandbox in ready
            if dead:
                ready.remove(sandbox)  # type: ignore[union-attr]
        if not dead:  # it was taken (its environment watches it) or discarded
            return
        self._submit(sandbox.discard)
        # Killed from outside, or a runtime that cannot start: replaced, but never in a tight loop.
        deaths = self._deaths[key] = self._deaths[key] + 1
        self.failed = f"{deaths} generic sandbox(es) in a row exited before they were taken"
        self._loop.call_later(min(_MAX_RESTART_DELAY, 0.05 * 2 ** (deaths - 1)), self._refill, key)

    def _submit(self, work: Callable[..., object], *args: object) -> None:
        try:
            self._executor.submit(work, *args)
        except RuntimeError:  # the executor is shutting down: do it here
            with contextlib.suppress(Exception):
                work(*args)


def _assign(sandbox: BwrapSandbox, spec: SandboxSpec) -> None:
    assert sandbox.slot is not None and sandbox.assignment_fd is not None and spec.code_dir is not None
    # Its runtime says when it is up; by then bwrap has made its mounts, so the check below is sound.
    # (Taken sooner than that, it is still well ahead of a sandbox started now.)
    ready, _, _ = select.select([sandbox.assignment_fd], [], [], _READY_TIMEOUT)
    if not ready or os.read(sandbox.assignment_fd, 1) != READY:
        raise SlotError(0, f"the generic sandbox's runtime was not up within {_READY_TIMEOUT:g} s")
    sandbox.slot.fill(spec.code_dir, spec.opt_dir)
    # The code must have propagated into the sandbox's own mount namespace (seen through its root).
    inside, staged = os.stat(f"/proc/{sandbox.child_pid}/root/var/task"), os.stat(spec.code_dir)
    if (inside.st_dev, inside.st_ino) != (staged.st_dev, staged.st_ino):
        raise SlotError(0, "the function's code did not reach the sandbox (mount propagation)")
    if sandbox.group is not None:
        sandbox.group.set_limits(Limits(spec.memory_mb * 1024 * 1024, pids=spec.pids_limit, cpu_cores=spec.cpu_cores))
    if spec.allow_network:
        sandbox.proxy_listener = listen_in_netns(sandbox.child_pid, PROXY_HOST, PROXY_PORT)
    assignment = json.dumps({"env": dict(spec.env)}).encode()
    fd, sandbox.assignment_fd = sandbox.assignment_fd, None
    try:
        view = memoryview(assignment)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
