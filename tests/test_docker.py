"""The Docker isolation: container images (PackageType Image) and code folders in hardened containers,
served by the same Invoke and Runtime APIs as bwrap sandboxes, in the same service.

The engine-free checks (a missing engine is a clear error) always run; the rest need an engine
(tests/docker_support.py) and use an image built offline with `docker import`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import FUNCTIONS, REPO, ServiceProcess, sandbox_processes
from docker_support import containers_of_service, python_image, require_docker
from support import invoke, request_id, tail, wait_for

TEMPLATE = FUNCTIONS / "docker.yaml"


@pytest.fixture(scope="module")
def service():
    require_docker()
    python_image()
    running = ServiceProcess(TEMPLATE, env={"SANDBOX_EVENT_RETRY_DELAY": "0.2"})
    yield running
    assert running.stop() == 0
    assert containers_of_service(running.proc.pid) == [], "containers outlived the service"


@pytest.fixture(scope="module")
def client(service):
    return service.client()


def _payload(response: dict, raw: bytes) -> dict:
    assert "FunctionError" not in response, raw
    return json.loads(raw)


def test_image_function_runs_its_image(service, client):
    """The image's ENTRYPOINT starts the runtime, its CMD is the handler (_HANDLER), its ENV and
    WORKDIR apply, the function's own variables win, and it runs as an unprivileged sandbox uid."""
    response, raw = invoke(client, "image", {"n": 1}, LogType="Tail")
    result = _payload(response, raw)
    assert result["event"] == {"n": 1}
    assert result["handler"] == "app.handler"
    assert result["greeting"] == "from-the-image"
    assert result["custom"] == "yes-custom"
    assert result["path"] == "/usr/bin:/bin"  # the image's PATH, not Lambda's default for zip functions
    assert result["cwd"] == "/var/task"
    assert result["function_name"] == "image"
    assert result["memory"] == "256"
    assert service.uid_range[0] <= result["uid"] <= service.uid_range[1]
    log = tail(response)
    assert f"image handler running as {result['uid']}" in log
    assert f"REPORT RequestId: {request_id(response)}" in log


def test_image_config_overrides_the_image(client):
    """ImageConfig.Command replaces the image's CMD and WorkingDirectory its WORKDIR."""
    response, raw = invoke(client, "image-override", {})
    assert _payload(response, raw) == {"other": True, "handler": "app.other"}


def test_a_missing_image_is_named(client):
    """The service never pulls: a function whose image is not on the engine says so, and only it fails."""
    with pytest.raises(client.exceptions.InvalidRuntimeException) as caught:
        client.invoke(FunctionName="missing-image", Payload=b"{}")
    message = caught.value.response["Error"]["Message"]
    assert "sandbox-runtime-test/not-there:1" in message and "never pulls" in message


def test_docker_and_bwrap_functions_share_one_service(service, client):
    """A code folder runs on Docker when its metadata asks for it, next to bwrap functions."""
    response, raw = invoke(client, "zip-on-docker", {})
    context = _payload(response, raw)
    assert context["function_name"] == "zip-on-docker"
    response, raw = invoke(client, "zip-on-bwrap", {"same": "service"})
    assert _payload(response, raw) == {"same": "service"}
    backends = service.health()["pools"]["backends"]
    assert backends["docker"]["available"] and backends["bwrap"]["available"]
    assert backends["docker"]["extra"]["base_image"].startswith("sandbox-runtime/base:")


def test_warm_container_is_reused(client):
    """Like bwrap environments, a container answers invocation after invocation."""
    first = _payload(*invoke(client, "zip-on-docker", {}))
    second = _payload(*invoke(client, "zip-on-docker", {}))
    assert first["log_stream_name"] == second["log_stream_name"]


def test_crash_is_an_exit_error_and_the_next_invoke_gets_a_new_container(client):
    response, raw = invoke(client, "image", {"exit": 3})
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(raw)
    assert error["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in error["errorMessage"]
    response, raw = invoke(client, "image", {"after": "crash"})
    assert _payload(response, raw)["event"] == {"after": "crash"}


def test_timeout_kills_the_container(service, client):
    response, raw = invoke(client, "docker-sleep", {"seconds": 30})
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(raw)["errorType"] == "Sandbox.Timedout"
    # The killed container is removed; what remains is at most the warm ones of other functions.
    assert wait_for(lambda: len(containers_of_service(service.proc.pid)) <= 8, 10, "the container removed")
    response, raw = invoke(client, "docker-sleep", {"seconds": 0})
    assert _payload(response, raw)["slept"] == 0


def test_containers_of_a_killed_service_are_removed_by_the_next(start_service):
    """A service that dies without cleaning up (SIGKILL) leaves containers; the next one on this host
    removes them before serving."""
    require_docker()
    python_image()
    first = start_service(TEMPLATE)
    _payload(*invoke(first.client(), "image", {}))
    assert containers_of_service(first.proc.pid)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    start_service(TEMPLATE)
    assert containers_of_service(first.proc.pid) == []
    wait_for(lambda: not sandbox_processes(first.uid_range), 10, "the killed service's sandboxes gone")


# -- without an engine --------------------------------------------------------------------------------


def test_docker_isolation_without_an_engine_is_a_clear_startup_error(tmp_path):
    """SANDBOX_ISOLATION=docker with no engine: one line that says what to do, exit 2, no traceback."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "runtime_api", "serve", "--template", str(FUNCTIONS / "template.yaml")],
        env={"PATH": "/usr/bin:/bin", "SANDBOX_ISOLATION": "docker", "SANDBOX_DOCKER_HOST": "unix:///nonexistent.sock"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Docker is not available" in result.stderr
    assert "unix:///nonexistent.sock" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_image_functions_without_an_engine_are_unavailable_not_fatal(start_service):
    """With bwrap as the default, an unreachable engine only takes the functions that need it."""
    service = start_service(TEMPLATE, env={"SANDBOX_DOCKER_HOST": "unix:///nonexistent.sock"})
    client = service.client()
    with pytest.raises(client.exceptions.InvalidRuntimeException) as caught:
        client.invoke(FunctionName="image", Payload=b"{}")
    assert "Docker is not available" in caught.value.response["Error"]["Message"]
    response, raw = invoke(client, "zip-on-bwrap", {"still": "works"})
    assert _payload(response, raw) == {"still": "works"}
    assert "image" in service.health()["pools"]["unavailable"]
