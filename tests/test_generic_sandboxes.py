"""Pre-started generic sandboxes (sandbox/prestart.py): a cold start takes a sandbox whose interpreter is
already up and assigns it to the function. The function must not be able to tell: everything it can
observe is compared with a service that starts every sandbox from nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ServiceProcess
from support import generic_sandboxes_settled, invoke, wait_for

FUNCTIONS_DIR = Path(__file__).parent / "functions"
FUNCTIONS = ("fp-plain", "fp-other", "fp-layered", "fp-startup", "fp-networked", "fp-isolated")


def _generic(service: ServiceProcess) -> dict:
    return service.health()["pools"]["generic_sandboxes"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/functions/generic.yaml, with fp-other's code a copy of the others' plus one file."""
    folder = tmp_path_factory.mktemp("generic")
    other = shutil.copytree(FUNCTIONS_DIR / "generic", folder / "other")
    (other / "only_b.py").write_text("ONLY_IN_B = True\n")
    text = (FUNCTIONS_DIR / "generic.yaml").read_text()
    text = text.replace("OTHER_CODE", str(other)).replace("CodeUri: generic", f"CodeUri: {FUNCTIONS_DIR}/generic")
    text = text.replace("ContentUri: generic_layer/", f"ContentUri: {FUNCTIONS_DIR}/generic_layer/")
    path = folder / "generic.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def generic(template: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(template)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def from_nothing(template: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(template, env={"SANDBOX_GENERIC_POOL_SIZE": "0"})
    yield running
    assert running.stop() == 0


def _fingerprint(service: ServiceProcess, name: str) -> dict:
    response, payload = invoke(service.client(), name, {})
    assert "FunctionError" not in response, payload
    return json.loads(payload)


def _differences(left: dict, right: dict) -> dict:
    return {
        key: (left.get(key), right.get(key)) for key in left.keys() | right.keys() if left.get(key) != right.get(key)
    }


def test_the_pool_is_reported_and_keyed_by_what_is_fixed_at_start(generic, from_nothing):
    pool = generic_sandboxes_settled(generic)
    assert pool["enabled"] and pool["problem"] is None and pool["size"] == 2
    # fp-other's /tmp size and fp-startup's start-up variables differ from the rest; network, memory,
    # code and layers are assigned later, so they share one key.
    assert pool["keys"] == 3 and pool["ready"] == 6
    assert _generic(from_nothing) == {"enabled": False, "problem": None}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_function_cannot_tell_a_generic_sandbox_from_a_fresh_one(generic, from_nothing, name):
    taken = generic_sandboxes_settled(generic)["taken"]
    assigned = _fingerprint(generic, name)
    assert _generic(generic)["taken"] == taken + 1  # this cold start was a generic sandbox
    fresh = _fingerprint(from_nothing, name)
    assert _differences(assigned["environ"], fresh["environ"]) == {}
    assert _differences(assigned, fresh) == {}
    # And what it saw is its own: a sanity check that the comparison compares something.
    assert assigned["environ"]["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert assigned["cwd"] == "/var/task" and "app.py" in assigned["tree"]["/var/task"]
    assert {"ro", "nosuid", "nodev"} <= set(assigned["mounts"]["/var/task"])


def test_each_function_sees_its_own_code_layers_and_settings(generic):
    other, layered = _fingerprint(generic, "fp-other"), _fingerprint(generic, "fp-layered")
    startup, networked = _fingerprint(generic, "fp-startup"), _fingerprint(generic, "fp-networked")
    isolated = _fingerprint(generic, "fp-isolated")
    assert "only_b.py" in other["tree"]["/var/task"] and "only_b.py" not in layered["tree"]["/var/task"]
    assert layered["tree"]["/opt"] == ["python"] and other["tree"]["/opt"] == []
    assert other["tmp_bytes"] == 1024 * 1024 * 1024 and other["memory_limit_in_mb"] == "512"
    # Read by the interpreter only as it starts: the generic sandbox started with them.
    assert startup["warnoptions"] == ["ignore::DeprecationWarning"]
    assert startup["encodings"][0] == "UTF-8" and startup["environ"]["LANG"] == "C.UTF-8"
    assert startup["tz"][0] == ["CET", "CEST"]
    assert networked["proxy_listening"] and "HTTP_PROXY" in networked["environ"]
    assert not isolated["proxy_listening"] and "HTTP_PROXY" not in isolated["environ"]


def test_the_functions_memory_limit_is_applied_on_assignment(generic):
    """Generic sandboxes start under the smallest limit; assignment sets the function's."""
    generic_sandboxes_settled(generic)
    response, payload = invoke(generic.client(), "fp-large", {"mb": 300})
    assert "FunctionError" not in response, payload
    assert json.loads(payload) == {"allocated_mb": 300}
    response, payload = invoke(generic.client(), "fp-small", {"mb": 300})
    assert response.get("FunctionError") == "Unhandled"
    assert json.loads(payload)["errorType"] == "Runtime.OutOfMemory"
    assert _generic(generic)["missed"] == 0


def test_a_taken_sandbox_is_replaced(generic):
    before = generic_sandboxes_settled(generic)
    for round in range(3):  # more than the pool holds, one after the other; each update makes a cold start
        generic.client().update_function_configuration(FunctionName="fp-isolated", Description=str(round))
        wait_for(
            lambda: (
                generic.client().get_function_configuration(FunctionName="fp-isolated")["LastUpdateStatus"]
                == "Successful"
            ),
            30,
            "the update",
        )
        invoke(generic.client(), "fp-isolated", {})
    after = generic_sandboxes_settled(generic)
    assert after["problem"] is None
    assert after["ready"] == before["ready"]
    assert after["taken"] >= before["taken"] + 3


def _preloads(service: ServiceProcess) -> list[int]:
    """Host pids of the generic sandboxes' runtimes still waiting for a function (an assigned one is the
    same process, by then in /var/task)."""
    out = subprocess.run(["ps", "-ww", "-eo", "uid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    first, last = service.uid_range
    return [
        int(pid)
        for uid, pid, args in rows
        if first <= int(uid) <= last
        and os.path.basename(args.split()[0]).startswith("python")  # not bwrap, whose argv has the command too
        and "preload import run" in args
        and _cwd(int(pid)) == "/var/runtime"
    ]


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def test_a_burst_beyond_the_pool_is_served(generic):
    """More cold starts at once than there are ready sandboxes: the rest start from nothing."""
    generic_sandboxes_settled(generic)
    names = ["fp-plain", "fp-layered", "fp-networked", "fp-isolated", "fp-small"]
    for name in names:  # each gets a new version of its configuration: its next invoke is cold
        generic.client().update_function_configuration(FunctionName=name, Description="burst")
    for name in names:
        wait_for(
            lambda n=name: (
                generic.client().get_function_configuration(FunctionName=n)["LastUpdateStatus"] == "Successful"
            ),
            30,
            f"the update of {name}",
        )
    before = _generic(generic)
    with ThreadPoolExecutor(len(names)) as executor:
        answers = list(executor.map(lambda n: invoke(generic.client(), n, {"mb": 1}), names))
    assert all("FunctionError" not in response for response, _ in answers), answers
    after = generic_sandboxes_settled(generic)
    assert after["problem"] is None
    assert after["taken"] - before["taken"] >= 2
    assert after["taken"] - before["taken"] + after["missed"] - before["missed"] == len(names)


def test_a_dead_generic_sandbox_is_never_assigned(generic):
    generic_sandboxes_settled(generic)
    victims = _preloads(generic)
    assert len(victims) == 6
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    generic.client().update_function_configuration(FunctionName="fp-plain", Description="after the kill")
    wait_for(
        lambda: (
            generic.client().get_function_configuration(FunctionName="fp-plain")["LastUpdateStatus"] == "Successful"
        ),
        30,
        "the update",
    )
    assert _fingerprint(generic, "fp-plain")["environ"]["AWS_LAMBDA_FUNCTION_NAME"] == "fp-plain"
    # The dead ones are dropped (their uids and groups released) and replaced.
    wait_for(lambda: len(_preloads(generic)) == 6 and not set(_preloads(generic)) & set(victims), 30, "replacements")


def test_a_killed_services_slots_are_unmounted_by_the_next(template, tmp_path):
    """SIGKILL leaves the slots tmpfs and the code mounted on it; the next service on the host unmounts
    them and removes the dead service's state folder."""
    first = ServiceProcess(template, log_dir=tmp_path)
    generic_sandboxes_settled(first)
    invoke(first.client(), "fp-plain", {})  # one slot filled with code
    state_dir = next(e["state_dir"] for e in first.log_events() if e.get("event") == "service.ready")
    mounts = lambda: [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if state_dir in line]  # noqa: E731
    assert len(mounts()) == 2  # the slots and fp-plain's code
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert len(mounts()) == 2 and Path(state_dir).is_dir()
    second = ServiceProcess(template, log_dir=tmp_path)
    try:
        assert mounts() == [] and not Path(state_dir).exists()
    finally:
        assert second.stop() == 0
        first._log.close()


def test_without_slots_every_sandbox_starts_from_nothing(template, tmp_path):
    """Where the slots cannot be made (here a file is in their way; elsewhere no CAP_SYS_ADMIN or no mount
    API), the service says why, once, and serves every function from sandboxes started for it."""
    # Outside pytest's 0700 folders: sandbox uids traverse the state folder to its staged code.
    state = Path(tempfile.mkdtemp(prefix="sandbox-runtime-test-state-"))
    (state / "slots").write_text("in the way")
    service = ServiceProcess(template, env={"SANDBOX_STATE_DIR": str(state)}, log_dir=tmp_path)
    try:
        pool = service.health()["pools"]["generic_sandboxes"]
        assert pool["enabled"] is False and "slots" in pool["problem"], pool
        [warning] = [e for e in service.log_events() if e.get("event") == "generic_sandboxes.unavailable"]
        assert warning["reason"] == pool["problem"]
        assert _fingerprint(service, "fp-plain")["environ"]["AWS_LAMBDA_FUNCTION_NAME"] == "fp-plain"
    finally:
        assert service.stop() == 0
        shutil.rmtree(state)
