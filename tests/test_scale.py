"""Many warm environments at once (docs/performance.md, "Memory and many environments"): each idle one
within its memory budget, every one answering, pre-starts paced, and pools that want more warm environments
than the machine's budget do not stop each other's.

The budget is the sum of the RSS of an idle environment's processes (bwrap's outer process, the sandbox's
init, the runtime), read from /proc/PID/smaps_rollup by `bench.memory`, the benchmark's own reader.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import yaml
from conftest import FUNCTIONS
from support import generic_sandboxes_settled, wait_for

from bench import memory

BUDGET_MB = 20.0
ENVIRONMENTS = 50
PRESTARTS = 4


def _template(directory: Path, count: int) -> Path:
    resources = {
        f"Echo{i}": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "FunctionName": f"echo{i}",
                "Runtime": "python3.11",
                "Handler": "app.echo",
                "CodeUri": str(FUNCTIONS / "python"),
                "MemorySize": 128,
                "Timeout": 5,
            },
        }
        for i in range(count)
    }
    path = directory / "template.yaml"
    path.write_text(yaml.safe_dump({"Transform": "AWS::Serverless-2016-10-31", "Resources": resources}))
    return path


def _states(service) -> dict[str, int]:
    states: dict[str, int] = {}
    for pool in service.health()["pools"]["functions"].values():
        for state, count in pool["environments"].items():
            states[state] = states.get(state, 0) + count
    return states


def test_fifty_warm_environments_each_within_the_memory_budget(start_service, tmp_path):
    service = start_service(
        _template(tmp_path, ENVIRONMENTS),
        env={
            "SANDBOX_POOL_SIZE": "1",
            "SANDBOX_SESSION_POOL_SIZE": "0",  # functions only: no agent session sandboxes
            "SANDBOX_PRESTART_CONCURRENCY": str(PRESTARTS),
            "SANDBOX_LOG_LEVEL": "info",
        },
    )
    most_starting = 0

    def all_ready() -> bool:
        nonlocal most_starting
        states = _states(service)
        most_starting = max(most_starting, states.get("starting", 0))
        return states.get("ready", 0) == ENVIRONMENTS

    wait_for(all_ready, 90, f"{ENVIRONMENTS} pre-started environments to be ready")
    assert most_starting <= PRESTARTS, "pre-starts are paced by SANDBOX_PRESTART_CONCURRENCY"

    client = service.client()
    for i in range(ENVIRONMENTS):
        response = client.invoke(FunctionName=f"echo{i}", Payload=json.dumps({"n": i}).encode())
        assert json.loads(response["Payload"].read()) == {"n": i}
    pools = service.health()["pools"]["functions"]
    assert all(pool["cold_starts"] == 0 for pool in pools.values()), "every invoke found its warm environment"
    wait_for(lambda: _states(service) == {"ready": ENVIRONMENTS}, 10, "every environment idle again")

    # Beside them, pre-started generic sandboxes wait for cold starts (SANDBOX_GENERIC_POOL_SIZE): idle sandboxes
    # too, held to the same budget.
    spares = generic_sandboxes_settled(service)["ready"]
    uids = range(service.uid_range[0], service.uid_range[1] + 1)
    environments = memory.environments(service.proc.pid, uids)
    assert len(environments) == ENVIRONMENTS + spares
    over = []
    for uid, procs in environments.items():
        assert [p.name for p in procs] == ["bwrap", "bwrap", "python3.11"], procs
        rss_mb = memory.total(procs).rss / 2**20
        if rss_mb > BUDGET_MB:
            over.append(f"uid {uid}: {rss_mb:.1f} MB ({', '.join(f'{p.name} {p.usage.mb()}' for p in procs)})")
    assert not over, f"idle environments over the {BUDGET_MB} MB budget (sum of RSS):\n" + "\n".join(over)
    # The service's own cost stays per environment small: a handful of descriptors, no thread each.
    own = memory.process_usage(service.proc.pid)
    assert memory.fd_count(service.proc.pid) <= 100 + 8 * ENVIRONMENTS
    assert own.threads < 32


def test_pre_starts_never_evict_other_functions_idle_environments(start_service, tmp_path):
    """10 functions want 2 warm environments each, the machine holds 15: once it is full, a cold start evicts
    one idle environment, and that function's pool must not evict another's to pre-start again (which evicted
    another's, and so on forever)."""
    service = start_service(
        _template(tmp_path, 10),
        env={"SANDBOX_POOL_SIZE": "2", "SANDBOX_SESSION_POOL_SIZE": "0", "SANDBOX_MAX_ENVIRONMENTS": "15"},
    )
    wait_for(lambda: _states(service) == {"ready": 15}, 60, "the machine's 15 places to be filled")
    pools = service.health()["pools"]["functions"]
    empty = next(name for name, pool in pools.items() if not pool["environments"])
    client = service.client()
    assert json.loads(client.invoke(FunctionName=empty, Payload=b'{"cold": 1}')["Payload"].read()) == {"cold": 1}
    wait_for(lambda: _states(service) == {"ready": 15}, 10, "15 environments ready again")
    time.sleep(3)  # a churn would keep stopping and starting environments meanwhile
    started = [e for e in service.log_events() if e.get("event") == "environment.started"]
    assert len(started) == 16, f"{len(started)} environments started for 15 places and one cold start"


def test_a_warm_environment_does_not_grow_with_invocations(start_service, tmp_path):
    """Each invocation's trace id once leaked ~140 bytes (glibc's setenv keeps every value): 430 KB per 3000."""
    env = {"SANDBOX_POOL_SIZE": "1", "SANDBOX_SESSION_POOL_SIZE": "0", "SANDBOX_GENERIC_POOL_SIZE": "0"}
    service = start_service(_template(tmp_path, 1), env=env)  # its one sandbox is the environment
    wait_for(lambda: _states(service) == {"ready": 1}, 30, "the pre-started environment")
    uids = range(service.uid_range[0], service.uid_range[1] + 1)
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)

    def invoke(times: int) -> None:
        for i in range(times):
            connection.request("POST", "/2015-03-31/functions/echo0/invocations", json.dumps({"i": i}))
            response = connection.getresponse()
            assert (response.status, json.loads(response.read())) == (200, {"i": i})

    def runtime_rss() -> int:
        (procs,) = memory.environments(service.proc.pid, uids).values()
        return procs[-1].usage.rss

    invoke(50)  # one-off costs first (the runtime loads ctypes once its first invocation is answered)
    before = runtime_rss()
    invoke(3000)
    connection.close()
    assert runtime_rss() - before < 150 * 1024
    assert service.health()["pools"]["functions"]["echo0"]["cold_starts"] == 0
