"""Cold start: the first invoke of a function that has no environment yet, against the floor of
`python3 -c pass` run inside the same bwrap sandbox flags (spawn → exit).

The floor sandbox is started by the service's own backend (`BwrapBackend.start`) from a
`SandboxSpec` made the way the service makes one (same interpreter, environment, code and runtime
binds, /tmp size): the same flags, uid switch and Runtime API listener. Only the command differs
(`-c pass` instead of the bootstrap).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from runtime_api.functions import FunctionSpec
from runtime_api.lambda_env import function_environment
from runtime_api.runtimes import _LAUNCH, RuntimeLaunch, RuntimeResolver, provision_runtime_dir
from sandbox import CodeStager, SandboxSpec, UidPool
from sandbox.bwrap import BwrapBackend

from .clients import EVENT, PAYLOAD, InvokeFailed
from .procs import FUNCTIONS
from .stats import summary_ms

RUNTIME = "python3.11"
_INIT_DURATION = re.compile(rb"Init Duration: ([0-9.]+) ms")


def spec_args(state: Path, label: str, *, network: bool = False) -> tuple[RuntimeLaunch, dict[str, Any]]:
    """How `Service._new_environment` makes a `SandboxSpec` for the echo function on python3.11, in a
    state folder of our own: the launch, and every spec field but the command."""
    launch = RuntimeResolver().resolve(RUNTIME)
    assert launch.interpreter is not None
    state.mkdir(mode=0o711)
    os.chmod(state, 0o711)  # as the service's state dir: traversable by the sandbox uid
    code = CodeStager(state / "code").stage(FUNCTIONS / "echo", name=label)
    # /var/runtime as the service lays it out (the bootstrap, byte-compiled), so the breakdown
    # can time importing it; `-c pass` never reads it, only binds it.
    runtime_dir = provision_runtime_dir(state / "runtime-cache", [launch.interpreter])
    function = FunctionSpec(name=label, handler="app.handler", runtime=RUNTIME, code_dir=code)
    return launch, {
        "env": function_environment(function, launch, region="us-east-1", network=network),
        "code_dir": code,
        "runtime_dir": runtime_dir,
        "extra_ro_binds": launch.extra_ro_binds,
        "cwd": launch.cwd,
        "tmp_size_mb": function.ephemeral_storage,
        "memory_mb": function.memory_size,
        "allow_network": network,
        "label": label,
    }


class BwrapFloor:
    """Runs a command in a sandbox started by the service's own backend with a function's spec (the
    same bwrap flags, uid switch and Runtime API listener), timing spawn → exit."""

    def __init__(self, workdir: Path, uid: int | None) -> None:
        launch, self._spec_args = spec_args(workdir / "floor-state", "bench-floor")
        assert launch.interpreter is not None
        self.interpreter = str(launch.interpreter)
        first = uid if uid is not None else 299000
        self._backend = BwrapBackend(uid_pool=UidPool(first, 16), cgroups=None, spawn_threads=1)
        self._loop = asyncio.new_event_loop()

    def close(self) -> None:
        self._backend.close()
        self._loop.close()

    def run(self, command: tuple[str, ...]) -> float:
        """Start a sandbox running `command`, wait for it to exit; seconds."""
        return self._loop.run_until_complete(self._run(SandboxSpec(command=command, **self._spec_args)))

    async def _run(self, spec: SandboxSpec) -> float:
        start = time.perf_counter()
        sandbox = await self._backend.start(spec)
        if sandbox.listener is not None:
            sandbox.listener.close()
        status = await sandbox.wait()
        elapsed = time.perf_counter() - start
        os.close(sandbox.output_fd)
        if status != 0:
            raise RuntimeError(f"bwrap floor failed with status {status}")
        return elapsed

    def python_pass(self) -> float:
        return self.run((self.interpreter, "-c", "pass"))

    def import_bootstrap(self) -> float:
        """The bootstrap's launch line up to (not including) `main()`: its imports (breakdown only)."""
        launch = _LAUNCH.rsplit(";", 1)[0]
        assert launch.endswith("import main"), _LAUNCH
        return self.run((self.interpreter, "-c", launch))


def python_pass_unsandboxed(interpreter: str) -> float:
    """`python3 -c pass` with no sandbox (for the breakdown only)."""
    start = time.perf_counter()
    subprocess.run([interpreter, "-c", "pass"], env={}, check=True)
    return time.perf_counter() - start


def cold_invoke(conn: http.client.HTTPConnection, function: str) -> tuple[float, float | None]:
    """The first invoke of `function`: client round trip (s) and the service's Init Duration (ms)."""
    headers = {"Content-Type": "application/json", "X-Amz-Log-Type": "Tail"}
    # A fresh connection, made before the clock starts: samples are seconds apart, longer than the
    # server keeps an idle connection.
    conn.close()
    conn.connect()
    start = time.perf_counter()
    conn.request("POST", f"/2015-03-31/functions/{function}/invocations", PAYLOAD, headers)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    if response.status != 200 or json.loads(body) != EVENT:
        raise InvokeFailed(f"cold invoke of {function}: HTTP {response.status}: {body[:300]!r}")
    tail = base64.b64decode(response.headers.get("X-Amz-Log-Result") or "")
    match = _INIT_DURATION.search(tail)
    return elapsed, float(match[1]) if match else None


def generic_ready(port: int, timeout: float = 30) -> None:
    """Wait until the service's generic sandboxes are all started again: a refill must not overlap the
    next measurement (of either side)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            generic = json.load(response)["pools"]["generic_sandboxes"]
        if not generic["enabled"] or (generic["starting"] == 0 and generic["ready"] >= generic["size"]):
            return
        time.sleep(0.005)
    raise InvokeFailed("the service's generic sandboxes did not refill within 30 s")


def measure(
    service_port: int, nothing_port: int, functions: list[str], floor: BwrapFloor, *, warmup: int
) -> dict[str, Any]:
    """Alternate, in an order that rotates every sample: a cold invoke of the next unused function on
    the service (taking a pre-started generic sandbox), one on the same service without generic
    sandboxes (`nothing_port`: started from nothing), and a floor sandbox; then one of the breakdown
    measurements in turn. Before each sample the generic sandboxes are left to refill. The first
    `warmup` rounds are dropped."""
    conns = {side: http.client.HTTPConnection("127.0.0.1", port, timeout=60)
             for side, port in (("service", service_port), ("from_nothing", nothing_port))}  # fmt: skip
    samples: dict[str, list[float]] = {"service": [], "from_nothing": [], "floor": [], "init": [], "init_nothing": []}
    parts: dict[str, Any] = {
        "bwrap_true": lambda: floor.run(("/usr/bin/true",)),
        "python_pass_unsandboxed": lambda: python_pass_unsandboxed(floor.interpreter),
        "bwrap_import_bootstrap": floor.import_bootstrap,
    }
    part_names = list(parts)
    sides = ["service", "from_nothing", "floor"]
    try:
        for i, function in enumerate(functions):
            taken: dict[str, tuple[float, float | None]] = {}
            for side in sides[i % 3 :] + sides[: i % 3]:
                generic_ready(service_port)
                taken[side] = (floor.python_pass(), None) if side == "floor" else cold_invoke(conns[side], function)
            name = part_names[i % len(part_names)]
            part = parts[name]()
            if i < warmup:
                continue
            for side in sides:
                samples[side].append(taken[side][0])
            for side, key in (("service", "init"), ("from_nothing", "init_nothing")):
                if (init := taken[side][1]) is not None:
                    samples[key].append(init / 1000)
            samples.setdefault(name, []).append(part)
    finally:
        for conn in conns.values():
            conn.close()
    return {
        "service": summary_ms(samples["service"]),
        "from_nothing": summary_ms(samples["from_nothing"]),
        "floor": summary_ms(samples["floor"]),
        "service_init_duration_ms": summary_ms(samples["init"]),
        "from_nothing_init_duration_ms": summary_ms(samples["init_nothing"]),
        **{name: summary_ms(samples.get(name, [])) for name in part_names},
        "interpreter": floor.interpreter,
    }
