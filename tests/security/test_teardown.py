"""Leftovers after the service stops (reference/sandbox.md §7 #24): no process of its sandbox uids (the
harness's stop() checks it), no cgroup folder, no state folder, even with warm environments, a background
child left by a handler and a sandbox killed at its timeout behind it."""

from __future__ import annotations

from pathlib import Path

from harness import SERVICE_ENV, TEMPLATE, call, cgroup_parents, new_tag, probe, running
from support import generic_sandboxes_settled, wait_for


def test_stop_leaves_nothing_behind(start_service):
    service = start_service(TEMPLATE, env=SERVICE_ENV)
    parents = cgroup_parents(service)
    assert set(parents) == {"memory", "pids", "cpu"}
    for controller, parent in parents.items():
        assert parent.name == f"sandbox-runtime-{service.proc.pid}", parent
        assert parent.is_relative_to(Path("/sys/fs/cgroup") / controller) and parent.is_dir()
    state_dir = Path(next(e["state_dir"] for e in service.log_events() if e.get("event") == "service.ready"))
    assert state_dir.is_dir() and (state_dir / "code").is_dir()

    call(service, "hello")  # a warm environment
    child = probe(service, "background")["child"]  # a warm environment with a child of its own, in a new session
    with running(service, "spin", new_tag("spin")) as run:
        run.future.result()  # a sandbox killed at its timeout
    groups = lambda: [g for g in parents["pids"].iterdir() if g.is_dir()]  # noqa: E731

    assert generic_sandboxes_settled(service)["ready"] == 2
    wait_for(lambda: len(groups()) == 2 + 2, 5, "only the two warm environments' and the generic sandboxes' groups")
    assert child > 0

    assert service.stop() == 0  # and no process in the service's uid range outlived it
    for parent in parents.values():
        wait_for(lambda p=parent: not p.exists(), 5, f"{parent} to be removed")
    assert not list(Path("/sys/fs/cgroup").glob(f"*/**/sandbox-runtime-{service.proc.pid}"))
    assert not state_dir.exists()
    assert str(state_dir) not in Path("/proc/self/mountinfo").read_text()  # the generic sandboxes' slots
