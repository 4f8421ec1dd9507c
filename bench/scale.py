"""Many warm environments at once: warm latency with 200 idle environments against 1, and what each costs.

Three services, each a subprocess like the others (`procs.start_service`), with uid ranges of their own:

- **one**: `bench-echo` with 1 pre-started environment (`SANDBOX_POOL_SIZE=1`);
- **functions**: the echo function 200 times under 200 names, 1 pre-started environment each: 200 warm
  environments the way most services would hold them;
- **environments**: `bench-echo` with `SANDBOX_POOL_SIZE=200` (and `SANDBOX_MAX_CONCURRENCY=200`): one
  function's pool of 200 environments.

Steps:

1. `one` alone, the others not started: warm p50 on a keep-alive connection (the machine before).
2. `functions` and `environments` start together; the time until all their environments are READY.
3. Memory of every environment, all idle (`bench.memory`: each process's RSS, PSS and USS from
   smaps_rollup), and the services' own RSS, descriptors and threads.
4. Warm latency, raw `http.client` on one keep-alive connection per target, timed as in `warm.py`, the
   targets taking turns invoke by invoke (the order rotates every round): `one`; `functions` round-robin
   (each invoke goes to the next of its 200 functions, so every environment answers in turn); `functions`,
   always its first function; `environments` (sequential invokes: its most recently used environment
   answers while 199 stay idle). Each p50 is compared with `one`'s from the same rounds.
   (Each service also keeps its pre-started generic sandboxes, `SANDBOX_GENERIC_POOL_SIZE`, as configured by
   default: idle sandboxes like the others, counted among them in the memory figures.)
5. Memory again, every environment idle after answering its share of step 4.

6. `one` alone again, as in step 1: its p50 against step 1's is the machine's part (400 more idle
   environments exist). Measured minutes apart, it is noisier than the step-4 ratios, which are what the
   target (<= 1.5x) is compared with. (Step 4's `one` is slower than step 1's by itself: taking turns with
   three other targets, no process finds its caches warm; that is why only same-step numbers are compared.)
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from . import memory
from .clients import RawClient
from .procs import FUNCTION, TEMPLATE, Server, health, service_ready, start_service, write_template
from .stats import percentile, summary_ms

ENVIRONMENTS = 200
BUDGET_MB = 20.0  # an idle warm environment, sum of its processes' RSS
KINDS = ("bwrap (outer)", "sandbox init", "runtime")  # an environment's processes, outermost first

Log = Callable[[str], None]


def _ready_environments(server: Server) -> int:
    return sum(pool["environments"].get("ready", 0) for pool in health(server)["pools"]["functions"].values())


def _all_ready(server: Server, count: int) -> bool:
    return _ready_environments(server) >= count


def _timed_round_robin(client: RawClient, names: list[str]) -> Callable[[], float]:
    paths = [f"/2015-03-31/functions/{name}/invocations" for name in names]
    turn = iter(range(1 << 62))

    def timed() -> float:
        client.path = paths[next(turn) % len(paths)]
        return client.timed()

    return timed


def rotate(targets: dict[str, Callable[[], float]], *, warmup: int, samples: int) -> dict[str, list[float]]:
    """`samples` rounds in which every target is invoked once, the first of the round rotating."""
    names = list(targets)
    for _ in range(warmup):
        for name in names:
            targets[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()  # as in warm.py: the client's own collections would land on whichever target runs
    try:
        for i in range(samples):
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                out[name].append(targets[name]())
    finally:
        gc.enable()
    return out


def _sequential(timed: Callable[[], float], *, warmup: int, samples: int) -> list[float]:
    return rotate({"one": timed}, warmup=warmup, samples=samples)["one"]


def environment_memory(server: Server, uids: range) -> dict[str, Any]:
    """Every environment of the service: the sum over its processes, and each kind of process, in MB
    (median and max over the environments)."""
    envs = memory.environments(server.pid, uids)
    totals = [memory.total(procs) for procs in envs.values()]
    # Pre-started generic sandboxes (SANDBOX_GENERIC_POOL_SIZE) are idle sandboxes of the service too, not told
    # apart from its environments here: counted in, a few among hundreds.
    generic = health(server)["pools"].get("generic_sandboxes") or {}
    out: dict[str, Any] = {"environments": len(envs), "generic_ready": generic.get("ready", 0)}
    if not totals:
        return out
    for key in ("rss", "pss", "uss"):
        values = [getattr(t, key) / 2**20 for t in totals]
        out[key] = {"median": statistics.median(values), "max": max(values), "min": min(values)}
    out["processes"] = statistics.median(t.processes for t in totals)
    kinds: dict[str, dict[str, list[float]]] = {}
    for procs in envs.values():
        if len(procs) != len(KINDS):
            continue  # an environment caught starting or stopping
        for kind, proc in zip(KINDS, procs, strict=True):
            for key, value in proc.usage.mb().items():
                kinds.setdefault(kind, {}).setdefault(key, []).append(value)
    out["by_process"] = {
        kind: {key: statistics.median(values) for key, values in per.items()} for kind, per in kinds.items()
    }
    return out


def service_footprint(server: Server) -> dict[str, Any]:
    usage = memory.process_usage(server.pid)
    return {**usage.mb(), "threads": usage.threads, "fds": memory.fd_count(server.pid)}


def run(workdir: Path, uid_base: int, params: dict[str, Any], log: Log) -> dict[str, Any]:
    count = params.get("scale_environments", ENVIRONMENTS)
    warmup, samples = params["scale_warmup"], params["scale_samples"]
    ranges = {
        "one": range(uid_base, uid_base + 10),
        "functions": range(uid_base + 10, uid_base + 10 + count + 50),
        "environments": range(uid_base + 60 + count, uid_base + 110 + 2 * count),
    }
    names = [f"bench-scale{i}" for i in range(count)]
    write_template(workdir / "scale.yaml", dict.fromkeys(names), f"Generated by bench (scale), {count} functions.")
    servers: list[Server] = []
    clients: list[RawClient] = []

    def service(name: str, template: Path, pool: int, env: dict[str, str] | None = None) -> Server:
        uids = ranges[name]
        server = start_service(
            f"scale-{name}", template, workdir, pool_size=pool, uid_range=(uids[0], uids[-1]), env=env
        )
        servers.append(server)
        return server

    def client(server: Server, function: str) -> RawClient:
        clients.append(RawClient(server.port, function))
        return clients[-1]

    try:
        one = service("one", TEMPLATE, 1)
        one.ready(lambda: service_ready(one, FUNCTION, 1))
        one_client = client(one, FUNCTION)
        log(f"scale: 1 environment alone, {samples} invokes")
        before = _sequential(one_client.timed, warmup=warmup, samples=samples)

        log(f"scale: starting {count} functions x 1 environment and 1 function x {count} environments")
        started = time.monotonic()
        budget = {"SANDBOX_MAX_ENVIRONMENTS": str(count + 8)}
        functions = service("functions", workdir / "scale.yaml", 1, budget)
        environments = service("environments", TEMPLATE, count, {**budget, "SANDBOX_MAX_CONCURRENCY": str(count)})
        ready_s = {}
        for name, server in (("functions", functions), ("environments", environments)):
            server.ready(partial(_all_ready, server, count), timeout=600)
            ready_s[name] = time.monotonic() - started
        log(f"scale: all ready after {ready_s['functions']:.1f}s and {ready_s['environments']:.1f}s; memory")
        time.sleep(1)  # settled: nothing starting, every runtime blocked in its /next
        idle_after_init = {
            "functions": environment_memory(functions, ranges["functions"]),
            "environments": environment_memory(environments, ranges["environments"]),
        }

        log(f"scale: warm latency, {samples} rounds of 4 invokes (1 env, 200 functions round-robin, same, 200 envs)")
        rr_client = client(functions, names[0])
        same_client = client(functions, names[0])
        envs_client = client(environments, FUNCTION)
        one_client.reconnect()  # idle for longer than the server's keep-alive while the others started
        timings = rotate(
            {
                "one": one_client.timed,
                "functions_round_robin": _timed_round_robin(rr_client, names),
                "functions_same": same_client.timed,
                "environments": envs_client.timed,
            },
            warmup=max(warmup, count),  # every function answers at least once before the clock starts
            samples=samples,
        )
        log(f"scale: 1 environment alone again, {samples} invokes, {2 * count} idle environments beside it")
        after = _sequential(one_client.timed, warmup=warmup, samples=samples)
        time.sleep(1)
        result: dict[str, Any] = {
            "count": count,
            "before": summary_ms(before),
            "after": summary_ms(after),
            **{name: summary_ms(values) for name, values in timings.items()},
            "ready_seconds": ready_s,
            "one_invocations": 2 * (warmup + samples) + max(warmup, count) + samples,
            "memory_after_init": idle_after_init,
            "memory": {
                "functions": environment_memory(functions, ranges["functions"]),
                "environments": environment_memory(environments, ranges["environments"]),
                "one": environment_memory(one, ranges["one"]),
            },
            "services": {
                "one": service_footprint(one),
                "functions": service_footprint(functions),
                "environments": service_footprint(environments),
            },
            "ready_at_end": {
                "functions": _ready_environments(functions),
                "environments": _ready_environments(environments),
            },
        }
        result["p50_ratio_by_block"] = _blocks(timings["one"], timings["functions_round_robin"])
        return result
    finally:
        for c in clients:
            c.close()
        for server in servers:
            server.stop()


def _blocks(base: list[float], other: list[float], blocks: int = 5) -> list[float]:
    size = max(1, len(base) // blocks)
    return [
        percentile(other[i : i + size], 50) / percentile(base[i : i + size], 50)
        for i in range(0, size * blocks, size)
        if base[i : i + size]
    ]
