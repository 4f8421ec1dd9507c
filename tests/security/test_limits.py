"""Resource abuse (reference/sandbox.md §7 #9-#13): fork, thread and memory bombs, CPU spins, output floods,
daemons that try to outlive their invocation, open-file floods. Each is bounded by the sandbox's cgroups,
rlimits, timeout or log budget; the service and the host carry on, and nothing of the sandbox is left."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from harness import (
    ONE_CPU_LESS,
    SERVICE_ENV,
    TEMPLATE,
    PidsWatch,
    assert_sandbox_gone,
    assert_unharmed,
    call,
    cgroup_parents,
    module_service,
    new_tag,
    probe,
    report,
    running,
    tagged,
)
from support import request_id, tail, wait_for

service = module_service()
bomb_service = module_service("bomb_service", SANDBOX_CPU_QUOTA=ONE_CPU_LESS)  # the fork bomb's
PIDS_MAX = 1024


def test_health_reports_cgroup_limits(service):
    limits = service.health()["pools"]["limits"]
    assert limits == {"cgroups": True, "problem": None}


def test_fork_bomb_is_bounded(bomb_service):
    """#9: every process forks forever. The pids cgroup caps the tree (fork gets EAGAIN), the host can
    still fork and the service still answers meanwhile, and the timeout (or an OOM) kills it all."""
    service = bomb_service
    with running(service, "fork-bomb", new_tag("fork")) as run:
        watch = PidsWatch(cgroup_parents(service)["pids"] / run.group)
        checks = watch.checks_of_the_host(service, run.future.done, fork_timeout=5)
        response, result = run.future.result()
        watch.stop()
    assert result["errorType"] in ("Sandbox.Timedout", "Runtime.OutOfMemory"), result
    assert response["elapsed"] < 11
    # pids.events: forks the limit refused. At least one check began after that and passed: a fork of the
    # host's and a /health, each within 5 s. The bomb reaches the limit in about 0.3 s on a quiet machine but
    # took over 2.5 s in a full test run, hence its 6 s timeout; how many checks fit depends on the
    # machine's other load (about 55 in 3 s alone, 2 in a busy CI run).
    during = watch.at_the_limit(checks)
    assert watch.refused > 0 and during >= 1, (len(checks), during, watch.samples, watch.refused, watch.peak, result)
    assert 100 < watch.peak <= PIDS_MAX, watch.peak
    assert_sandbox_gone(service, run.uid)
    assert_unharmed(service)


def test_thread_bomb_stops_at_pids_max(service):
    """pids.max counts threads: starting 2000 fails just short of 1024 (the init and main thread count)."""
    seen = probe(service, "threads", count=2000)
    assert seen["error"] == "can't start new thread"
    assert PIDS_MAX - 16 <= seen["started"] < PIDS_MAX, seen
    assert_unharmed(service)


def test_open_files_are_limited(service):
    """RLIMIT_NOFILE is 1024 as on Lambda: opening 2000 files fails with EMFILE."""
    seen = probe(service, "open_files", count=2000)
    assert seen["RLIMIT_NOFILE"] == [1024, 1024]
    assert seen["error"] == "EMFILE" and 1000 <= seen["opened"] < 1024, seen
    assert_unharmed(service)


@pytest.mark.parametrize("kind", ["bytearray", "mmap"])
def test_memory_bomb_is_an_out_of_memory_error(service, kind):
    """#10: private and shared anonymous memory alike hit the memory cgroup: the kernel kills the runtime
    and the invoke reports Runtime.OutOfMemory with Max Memory Used at the function's MemorySize."""
    response, result = call(service, "memory-bomb", {"kind": kind}, LogType="Tail")
    rid = request_id(response)
    assert response["FunctionError"] == "Unhandled"
    assert result == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: signal: killed",
    }
    fields = report(tail(response), rid)
    assert fields["Memory Size"] == "128 MB"
    assert 120 <= int(fields["Max Memory Used"].split()[0]) <= 129, fields
    assert_unharmed(service)


@pytest.mark.parametrize("event", [{}, {"sleep": True}], ids=["busy-loop", "sleep-forever"])
def test_spin_is_killed_at_the_timeout(service, event):
    """#11: a busy loop, or a sleep forever, ends at the function's Timeout (2 s) with Sandbox.Timedout,
    and the sandbox is gone."""
    with running(service, "spin", new_tag("spin"), event) as run:
        response, result = run.future.result()
    rid = request_id(response)
    assert result["errorType"] == "Sandbox.Timedout"
    assert result["errorMessage"] == f"RequestId: {rid} Error: Task timed out after 2.00 seconds"
    assert 1.95 <= response["elapsed"] < 6, response["elapsed"]
    assert 1950 <= float(report(tail(response), rid)["Duration"].split()[0]) < 2600
    assert_sandbox_gone(service, run.uid)
    assert_unharmed(service)


def test_cpu_quota_caps_a_busy_loop(service, start_service):
    """#11: with SANDBOX_CPU_QUOTA=0.25 a one-second busy loop gets at most ~0.35 s of CPU; without the cap
    (the default 2 cores) the same loop gets most of a core."""
    capped = start_service(TEMPLATE, env={**SERVICE_ENV, "SANDBOX_CPU_QUOTA": "0.25"})
    ratio = probe(capped, "cpu_ratio", seconds=1.0)
    assert 0.05 < ratio <= 0.35, ratio
    assert probe(service, "cpu_ratio", seconds=1.0) >= 0.5
    assert_unharmed(capped)


def _memory_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M)[1]) for key in ("VmRSS", "VmHWM")}  # type: ignore[index]


def test_output_flood_is_cut_at_the_log_budget(service):
    """#12: ~200 MB of output as fast as a pipe takes it. The invoke answers; the tail keeps the real last
    lines, then says how much went unlogged, then END and REPORT; the service log gets a bounded share
    and an `environment.output_dropped` event, and the service's memory stays flat."""
    assert_unharmed(service)  # the service's memory at rest, with a hello environment already made
    before = _memory_kb(service.proc.pid)["VmRSS"]
    log_before = service.log_path.stat().st_size
    with running(service, "flood", new_tag("flood"), {"mb": 200}) as run:
        response, result = run.future.result()
    rid = request_id(response)
    assert "FunctionError" not in response, result
    assert result["written"] >= 200 * 1024 * 1024
    lines = tail(response).rstrip("\n").split("\n")
    assert lines[-6:-3] == ["flood-last-0", "flood-last-1", "flood-last-2"], lines[-8:]
    note = re.fullmatch(r"sandbox-runtime: (\d+) bytes of function output were not logged .*", lines[-3])
    assert note and int(note[1]) >= result["written"] - 2 * 1024 * 1024, lines[-3]
    assert lines[-2] == f"END RequestId: {rid}" and lines[-1].startswith(f"REPORT RequestId: {rid}\t")
    dropped = wait_for(
        lambda: [e for e in service.log_events() if e.get("event") == "environment.output_dropped"],
        5,
        "the output_dropped event",
    )
    assert dropped[0]["function"] == "flood" and dropped[0]["bytes"] == int(note[1])  # type: ignore[index]
    assert "bytes of function output were not logged" in service.logs()
    assert service.log_path.stat().st_size - log_before < 20 * 1024 * 1024
    assert _memory_kb(service.proc.pid)["VmHWM"] - before < 60 * 1024, (before, _memory_kb(service.proc.pid))
    assert_unharmed(service)


def test_daemon_does_not_outlive_the_timeout(service):
    """#13: the handler double-forks a setsid daemon that ignores TERM, HUP and INT, then hangs. At the
    timeout the whole sandbox goes: no process of its host uid is left, nor its cgroups."""
    tag = new_tag("daemon")
    with running(service, "daemon", tag) as run:
        ((daemon_uid, daemon_pid),) = wait_for(lambda: tagged(tag + "-d"), 5, "the daemon")  # type: ignore[misc]
        # The intermediate child (named `tag` too) exits at once; then only the runtime is left with it.
        wait_for(lambda: len(tagged(tag)) == 1, 5, "the intermediate child to exit")
        ((_, runtime_pid),) = tagged(tag)
        assert daemon_uid == run.uid
        sessions = [_session(pid) for pid in (daemon_pid, runtime_pid)]
        assert sessions[0] != sessions[1], sessions  # the daemon left the runtime's session
        _, result = run.future.result()
    assert result["errorType"] == "Sandbox.Timedout"
    assert_sandbox_gone(service, run.uid)
    assert not tagged(tag + "-d")
    assert_unharmed(service)


def _session(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def test_warm_environments_survive_their_neighbours_bombs(service):
    """The environments other functions keep warm were not disturbed by all of the above."""
    tag = new_tag("warm")
    probe(service, "identity", tag=tag)
    first = tagged(tag)
    for _ in range(3):
        call(service, "memory-bomb", LogType="None")
    time.sleep(0.2)
    probe(service, "identity")
    assert tagged(tag) == first
    assert_unharmed(service)
