"""The production image (Dockerfile): built by the local engine on a base made without a registry, run
with the privileges docs/deployment.md documents and no others, and driven with boto3 like any
deployment: Docker's HEALTHCHECK, a bundled function, a function created through the control plane
whose memory limit must hold inside the container, and SIGTERM ending the service cleanly.

Needs a Docker engine (tests/docker_support.py). The first build on an engine makes the base from the
Debian mirror and installs the locked wheels from PyPI (about 100 s here); later builds reuse Docker's
layer cache (a code change rebuilds in about 4 s), and the module then takes about 15 s, most of it
waiting for Docker's first health check, 10 s after the start.

The engine CI starts has no bridge network, so `-p 8000:8000` is replaced by `--network none`: the
container keeps a network namespace of its own, and the test reaches the service's port from a
thread that enters that namespace.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shlex
import subprocess
import time
import tomllib
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, assert_no_sandbox_left, claim_uid_range, lambda_client, release_uid_range
from docker_support import require_docker
from packaging.requirements import Requirement
from support import invoke, package, tail, wait_for_function

pytestmark = pytest.mark.timeout(900)  # the first build on an engine

TAG = "sandbox-runtime-test/service:latest"
DEPLOYMENT = REPO / "docs" / "deployment.md"
# What the image needs beyond Docker's defaults, and what it gives up, as docs/deployment.md documents
# them (test_documented_privileges holds the docs and the Dockerfile to exactly this list).
PRIVILEGES = [
    "--cgroupns", "private",
    "--cap-drop", "ALL",
    "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "SETUID", "--cap-add", "SETGID",
    "--cap-add", "CHOWN", "--cap-add", "DAC_OVERRIDE", "--cap-add", "FOWNER", "--cap-add", "KILL",
    "--security-opt", f"seccomp={REPO / 'docker-seccomp.json'}",
    "--security-opt", "systempaths=unconfined",
    "--security-opt", "no-new-privileges",
    "--stop-timeout", "45",
]  # fmt: skip
_PRIVILEGE_OPTIONS = {"--cgroupns", "--cap-drop", "--cap-add", "--security-opt", "--stop-timeout", "--userns", "--pid"}
_PRIVILEGE_FLAGS = {"--privileged"}
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

MEMORY_HOG = """
def handler(event, context):
    chunks = [b"\\x01" * (16 << 20) for _ in range(event["mb"] // 16)]  # touched pages, not just reserved
    return {"held_mb": 16 * len(chunks), "limit_mb": int(context.memory_limit_in_mb)}
"""


def _docker(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"docker {shlex.join(args)} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


def _privileges(args: list[str]) -> Counter[tuple[str, str]]:
    """The privilege-related (option, value) pairs of a `docker run` argument list (`--privileged`, host
    paths mounted in, capabilities, security options, namespaces); seccomp by file name."""
    pairs: Counter[tuple[str, str]] = Counter()
    args = [part for arg in args for part in (arg.split("=", 1) if arg.startswith("--") else [arg])]
    pairs.update((flag, "") for flag in args if flag in _PRIVILEGE_FLAGS)
    for option, value in itertools.pairwise(args):
        if option in {"-v", "--volume"} and value.startswith("/"):
            pairs["--volume", value] += 1
        elif option in _PRIVILEGE_OPTIONS:
            if value.startswith("seccomp="):
                value = "seccomp=" + Path(value.removeprefix("seccomp=")).name
            pairs[option, value] += 1
    return pairs


def _documented_run(text: str) -> list[str]:
    """The first `docker run` command in `text` (continuation lines joined, comment markers dropped)."""
    lines = [line.strip().removeprefix("#").strip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("docker run "))
    command = []
    for line in lines[start:]:
        command.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(command))


def test_documented_privileges():
    """The docs' and the Dockerfile's `docker run` grant exactly what this test runs the image with."""
    container_section = DEPLOYMENT.read_text().split("## In a container", 1)[1]
    assert _privileges(_documented_run(container_section)) == _privileges(PRIVILEGES)
    assert _privileges(_documented_run((REPO / "Dockerfile").read_text())) == _privileges(PRIVILEGES)


def test_requirements_lock_satisfies_pyproject():
    """requirements.lock pins, with hashes, a version of every run-time dependency that pyproject.toml
    accepts (scripts/lock rewrites it)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins: dict[str, str] = {}
    hashed: set[str] = set()
    name = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.split()[0].partition("==")
            pins[name.lower()] = version
        elif "--hash=sha256:" in line and name:
            hashed.add(name.lower())
    assert set(pins) == hashed, f"pinned without a hash: {set(pins) - hashed}"
    wanted = [Requirement(spec) for spec in project["project"]["dependencies"]]
    wanted += [Requirement(spec) for spec in project["build-system"]["requires"]]
    for requirement in wanted:
        pinned = pins.get(requirement.name.lower())
        assert pinned is not None, f"{requirement.name} is not in requirements.lock: run scripts/lock"
        assert requirement.specifier.contains(pinned), (
            f"requirements.lock has {requirement.name}=={pinned}, pyproject.toml wants {requirement}: run scripts/lock"
        )


def test_seccomp_profile_is_current():
    """docker-seccomp.json is what sandbox/seccomp.py makes of the sandboxes' deny-list today."""
    from sandbox.seccomp import service_container_profile

    written = json.loads((REPO / "docker-seccomp.json").read_text())
    assert written == service_container_profile(), "docker-seccomp.json is stale: run scripts/seccomp-profile"


@pytest.fixture(scope="module")
def image() -> str:
    require_docker()
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "scripts" / "image"), "--local-base", "--tag", TAG],
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, f"scripts/image failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    print(f"image built in {time.monotonic() - started:.1f} s")
    return TAG


class Container:
    def __init__(self, container_id: str, uid_range: tuple[int, int]) -> None:
        self.id = container_id
        self.uid_range = uid_range
        self.pid = int(_docker("inspect", "--format", "{{.State.Pid}}", container_id))
        # One thread that lives in the container's network namespace: sockets made there (boto3's,
        # urllib's) reach the service at 127.0.0.1:8000 inside the container, as -p 8000:8000 would.
        self._network = ThreadPoolExecutor(1, initializer=_enter_network_namespace, initargs=(self.pid,))

    def state(self) -> dict[str, Any]:
        return json.loads(_docker("inspect", "--format", "{{json .State}}", self.id))

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.id], capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr

    def inside(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`call(*args, **kwargs)` from within the container's network namespace."""
        return self._network.submit(call, *args, **kwargs).result(timeout=120)

    def health(self) -> dict[str, Any]:
        def get() -> dict[str, Any]:
            with urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=5) as response:
                return json.load(response)

        return self.inside(get)

    def close(self) -> None:
        self._network.shutdown()


def _enter_network_namespace(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the container's network namespace")
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    # Sandbox uids are host uids (the engine maps none): a block no other test service uses.
    uid_range = claim_uid_range()
    name = f"sandbox-runtime-test-{uuid.uuid4().hex[:8]}"
    container_id = _docker(
        "run", "--detach", "--name", name, "--network", "none",
        "--env", f"SANDBOX_UID_RANGE={uid_range[0]}-{uid_range[1]}",
        *PRIVILEGES, image,
    ).strip()  # fmt: skip
    running = Container(container_id, uid_range)
    try:
        yield running
    finally:
        running.close()
        subprocess.run(["docker", "rm", "--force", "--volumes", container_id], capture_output=True, timeout=60)
        assert_no_sandbox_left(uid_range, "the container")
        release_uid_range(uid_range)


@pytest.fixture(scope="module")
def client(container: Container):
    deadline = time.monotonic() + 90
    while (state := container.state()).get("Health", {}).get("Status") != "healthy":
        assert state["Running"], f"the container stopped ({state['ExitCode']}):\n{container.logs()}"
        assert state["Health"]["Status"] != "unhealthy", f"HEALTHCHECK failed: {state['Health']}\n{container.logs()}"
        assert time.monotonic() < deadline, f"not healthy after 90 s: {state['Health']}\n{container.logs()}"
        time.sleep(0.5)
    return lambda_client("http://127.0.0.1:8000")


@pytest.mark.slow
def test_healthy_with_cgroup_limits(container, client):
    """Docker's HEALTHCHECK passed; the service runs sandboxes under cgroup limits, as pid 1, as root;
    the image holds no compiler and its environment no pip."""
    health = container.health()
    assert health["status"] == "healthy"
    assert health["isolation"] == "bwrap"
    assert health["pools"]["limits"] == {"cgroups": True, "problem": None}
    assert health["pools"]["generic_sandboxes"]["enabled"] is True, health["pools"]["generic_sandboxes"]
    command = "id -u; cat /proc/1/comm; command -v gcc cc c++; /opt/sandbox-runtime/bin/python -m pip 2>&1; true"
    out = _docker("exec", container.id, "sh", "-c", command).splitlines()
    assert out[0] == "0"
    assert out[1] == "sandbox-runtime"  # the service itself (the entrypoint exec'd it), not a shell
    assert out[2:] == ["/opt/sandbox-runtime/bin/python: No module named pip"]  # and no compiler


@pytest.mark.slow
def test_bundled_function_answers_boto3(container, client):
    response, payload = container.inside(invoke, client, "hello", {"name": "Ada"}, LogType="Tail")
    assert "FunctionError" not in response, payload
    assert json.loads(payload)["message"] == "Hello, Ada!"
    assert "REPORT RequestId:" in tail(response)


@pytest.mark.slow
def test_memory_limit_holds_inside_the_container(container, client):
    """A function created through the control plane may hold what its MemorySize allows and is OOM-killed
    beyond it: the sandbox's cgroup limit applies inside the container (rlimits would not stop it)."""
    container.inside(
        client.create_function,
        FunctionName="memory-hog",
        Runtime="python3.11",
        Role="arn:aws:iam::123456789012:role/lambda-role",
        Handler="app.handler",
        Code={"ZipFile": package(MEMORY_HOG)},
        MemorySize=128,
        Timeout=30,
    )
    container.inside(wait_for_function, client, "function_active_v2", "memory-hog")
    response, payload = container.inside(invoke, client, "memory-hog", {"mb": 48})
    assert json.loads(payload) == {"held_mb": 48, "limit_mb": 128}, payload
    response, payload = container.inside(invoke, client, "memory-hog", {"mb": 512}, LogType="Tail")
    assert response.get("FunctionError") == "Unhandled", payload
    assert json.loads(payload)["errorType"] == "Runtime.OutOfMemory", payload
    response, payload = container.inside(invoke, client, "memory-hog", {"mb": 16})
    assert json.loads(payload) == {"held_mb": 16, "limit_mb": 128}, payload  # a fresh sandbox after the kill


@pytest.mark.slow
def test_sigterm_stops_the_service_cleanly(container, client):
    """`docker stop` sends SIGTERM to the service (pid 1): it stops its sandboxes and exits 0, well
    within the documented --stop-timeout, and no sandbox process is left on the host."""
    started = time.monotonic()
    _docker("stop", container.id, timeout=60)
    took = time.monotonic() - started
    state = container.state()
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False), container.logs()[-4000:]
    assert took < 20, f"docker stop took {took:.1f} s"
    assert '"event": "service.stopping"' in container.logs()  # its own shutdown, not a kill
    assert_no_sandbox_left(container.uid_range, "the stopped container", timeout=1)
