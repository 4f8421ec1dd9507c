"""Operability: GET /metrics (Prometheus text, parsed with prometheus_client's own parser) after real
invocations and sessions, and the optional heartbeat posting to a small HTTP server of the test's own."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jsonschema
import pytest
from conftest import FUNCTIONS, ServiceProcess, free_port
from prometheus_client.parser import text_string_to_metric_families
from support import generic_sandboxes_settled, package, wait_for, wait_for_function

SE = "/workspace/se"
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
# Touches every page of far more memory than its MemorySize (128 MB): the kernel kills it.
HOG = """def handler(event, context):
    hoard = []
    for _ in range(event["mb"]):
        block = bytearray(1024 * 1024)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        hoard.append(block)
    return len(hoard)
"""


def scrape(service: ServiceProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = httpx.get(f"{service.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def exported(samples: dict, name: str, **labels: str) -> float:
    """The sample's value; it must be there (a gauge at 0 is a value, not an absence)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} is not exported: {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def invoke(client, name: str, payload: dict | None = None) -> dict:
    response = client.invoke(FunctionName=name, Payload=json.dumps(payload or {}))
    response["Payload"].read()
    return response


def test_invocation_metrics(start_service):
    service = start_service(env={"SANDBOX_MAX_ENVIRONMENTS": "7"})
    client = service.client()
    before = scrape(service)
    assert value(before, "sandbox_invocations_total", function="echo", outcome="success") == 0
    assert value(before, "sandbox_environments_limit") == 7

    for _ in range(3):
        assert "FunctionError" not in invoke(client, "echo", {"n": 1})
    assert invoke(client, "fail", {"value": 1})["FunctionError"] == "Unhandled"
    assert invoke(client, "sleep", {"seconds": 3})["FunctionError"] == "Unhandled"  # Timeout: 1
    assert invoke(client, "crash", {"status": 3})["FunctionError"] == "Unhandled"

    samples = scrape(service)
    assert value(samples, "sandbox_invocations_total", function="echo", outcome="success") == 3
    assert value(samples, "sandbox_invocation_duration_seconds_count", function="echo") == 3
    assert value(samples, "sandbox_invocation_duration_seconds_bucket", function="echo", le="+Inf") == 3
    assert value(samples, "sandbox_invocation_duration_seconds_sum", function="echo") > 0
    # SANDBOX_POOL_SIZE=0: the first echo was a cold start, the other two warm.
    assert value(samples, "sandbox_cold_starts_total", function="echo") == 1
    assert value(samples, "sandbox_init_duration_seconds_count", function="echo") == 1
    assert value(samples, "sandbox_invocations_total", function="fail", outcome="function_error") == 1
    assert value(samples, "sandbox_invocations_total", function="sleep", outcome="Sandbox.Timedout") == 1
    assert value(samples, "sandbox_invocation_duration_seconds_count", function="sleep") == 1
    assert value(samples, "sandbox_invocations_total", function="crash", outcome="Runtime.ExitError") == 1
    assert value(samples, "sandbox_invocations_total", function="echo", outcome="function_error") == 0
    # Environments: each function's first invoke started one (no pre-starts with SANDBOX_POOL_SIZE=0);
    # the timeout and the crash ended theirs, for those reasons.
    for name in ("echo", "fail", "sleep", "crash"):
        assert value(samples, "sandbox_environment_starts_total", function=name, kind="cold") == 1, name
        assert value(samples, "sandbox_environment_starts_total", function=name, kind="prestart") == 0, name
    assert value(samples, "sandbox_environment_stops_total", function="sleep", reason="timeout") == 1
    assert value(samples, "sandbox_environment_stops_total", function="crash", reason="exit") == 1
    assert value(samples, "sandbox_environment_stops_total", function="echo", reason="exit") == 0
    assert exported(samples, "sandbox_concurrent_executions", function="echo") == 0  # answered, all of them
    # States, read from the pools when scraped: echo's one environment is idle and ready.
    assert value(samples, "sandbox_environments", function="echo", state="ready") == 1
    assert 1 <= value(samples, "sandbox_environments_live") <= 7
    assert value(samples, "sandbox_functions") >= 10
    assert value(samples, "sandbox_service_info", version=service.health()["version"]) == 1
    assert service.health()["problems"] == []  # a failing function is not a problem of the service's


def test_health_and_the_state_metrics_with_docker_unreachable(start_service):
    """/health names what is wrong (Docker, here: the functions that need it cannot run), in the shape its
    OpenAPI schema gives; the backends, limits, generic sandboxes, sessions and unavailable functions are
    gauges that say the same in numbers."""
    service = start_service(FUNCTIONS / "docker.yaml", env={"SANDBOX_DOCKER_HOST": "unix:///nonexistent.sock"})
    generic_sandboxes_settled(service)
    health = service.health()
    schema = httpx.get(f"{service.url}/openapi.json", timeout=30).json()["paths"]["/health"]["get"]
    jsonschema.validate(health, schema["responses"]["200"]["content"]["application/json"]["schema"])
    pools = health["pools"]
    docker = pools["backends"]["docker"]
    assert docker["available"] is False and "unix:///nonexistent.sock" in docker["detail"], docker
    assert pools["backends"]["bwrap"]["available"] is True
    assert health["problems"] == [
        f"the docker sandbox backend is unavailable: {docker['detail']}",
        "5 function version(s) cannot run here (pools.unavailable)",
    ]
    samples = scrape(service)
    assert exported(samples, "sandbox_backend_available", backend="bwrap") == 1
    assert exported(samples, "sandbox_backend_available", backend="docker") == 0
    assert exported(samples, "sandbox_cgroup_limits") == int(pools["limits"]["cgroups"])
    assert exported(samples, "sandbox_functions_unavailable") == len(pools["unavailable"]) == 5
    assert exported(samples, "sandbox_sessions_available") == int(health["sessions"]["available"])
    generic = pools["generic_sandboxes"]
    assert generic["enabled"], generic  # this host can have them (tests/test_generic_sandboxes.py)
    assert exported(samples, "sandbox_generic_sandboxes", state="ready") == generic["ready"]
    assert exported(samples, "sandbox_generic_sandboxes", state="starting") == generic["starting"] == 0
    assert exported(samples, "sandbox_generic_sandboxes_taken_total") == generic["taken"]
    assert exported(samples, "sandbox_generic_sandboxes_missed_total") == generic["missed"]
    assert exported(samples, "sandbox_events_store_ok") == 1


def test_out_of_memory_and_throttles_are_counted(start_service):
    """Runtime.OutOfMemory is an outcome of its own and ends the environment (reason oom); reserved
    concurrency 0 throttles every invoke (outcome throttled)."""
    service = start_service()
    client = service.client()
    client.create_function(
        FunctionName="hog", Runtime="python3.12", Role=ROLE, Handler="app.handler", MemorySize=128,
        Code={"ZipFile": package(HOG)},
    )  # fmt: skip
    wait_for_function(client, "function_active_v2", "hog")
    response = invoke(client, "hog", {"mb": 400})
    assert response["FunctionError"] == "Unhandled"
    client.put_function_concurrency(FunctionName="hog", ReservedConcurrentExecutions=0)
    for _ in range(2):
        with pytest.raises(client.exceptions.TooManyRequestsException) as caught:
            invoke(client, "hog", {"mb": 1})
        assert caught.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    samples = scrape(service)
    assert value(samples, "sandbox_invocations_total", function="hog", outcome="Runtime.OutOfMemory") == 1
    assert value(samples, "sandbox_invocations_total", function="hog", outcome="throttled") == 2
    assert value(samples, "sandbox_invocation_duration_seconds_count", function="hog") == 1  # throttles: none
    assert value(samples, "sandbox_environment_stops_total", function="hog", reason="oom") == 1
    assert value(samples, "sandbox_environment_starts_total", function="hog", kind="cold") == 1


def test_concurrent_executions(start_service):
    service = start_service()
    client = service.client()
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(invoke(client, "parallel", {"seconds": 2})))
    thread.start()
    try:
        wait_for(
            lambda: value(scrape(service), "sandbox_concurrent_executions", function="parallel") == 1, 10, "running"
        )
        assert service.health()["pools"]["functions"]["parallel"]["concurrent_executions"] == 1
        assert exported(scrape(service), "sandbox_concurrent_executions", function="echo") == 0
    finally:
        thread.join(30)
    assert "FunctionError" not in answer
    assert exported(scrape(service), "sandbox_concurrent_executions", function="parallel") == 0


def test_event_queue_metrics(start_service):
    """Attempts count as invocations; the queue counts deliveries, give-ups and retries by cause."""
    service = start_service(env={"SANDBOX_EVENT_RETRY_DELAY": "0.1"})
    client = service.client()
    client.invoke(FunctionName="fail", InvocationType="Event", Payload=b"{}")
    wait_for(lambda: value(scrape(service), "sandbox_events_failed_total") == 1, 20, "the event to be given up")
    client.put_function_concurrency(FunctionName="echo", ReservedConcurrentExecutions=0)
    client.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")
    wait_for(
        lambda: value(scrape(service), "sandbox_events_retries_total", cause="throttled") >= 2, 20, "throttled retries"
    )
    assert exported(scrape(service), "sandbox_events_pending") == 1
    client.delete_function_concurrency(FunctionName="echo")
    wait_for(lambda: value(scrape(service), "sandbox_events_delivered_total") == 1, 20, "the event to be delivered")
    samples = scrape(service)
    assert value(samples, "sandbox_invocations_total", function="fail", outcome="function_error") == 3
    assert value(samples, "sandbox_events_retries_total", cause="function_error") == 2
    throttled = value(samples, "sandbox_invocations_total", function="echo", outcome="throttled")
    assert throttled == value(samples, "sandbox_events_retries_total", cause="throttled") >= 2
    assert value(samples, "sandbox_invocations_total", function="echo", outcome="success") == 1
    assert exported(samples, "sandbox_events_pending") == 0
    assert exported(samples, "sandbox_events_running") == 0
    events = service.health()["events"]
    assert events["retries"] == {"function_error": 2, "throttled": throttled}
    assert (events["delivered"], events["failed"], events["pending"]) == (1, 1, 0)


def test_throttled_invocations_are_counted(start_service):
    service = start_service(env={"SANDBOX_MAX_CONCURRENCY": "1", "SANDBOX_QUEUE_TIMEOUT": "0"})
    client = service.client()
    invoke(client, "echo")  # its one environment, started
    outcomes = []

    def call() -> None:
        try:
            invoke(client, "sleep", {"seconds": 0.5})
            outcomes.append("ok")
        except client.exceptions.TooManyRequestsException:
            outcomes.append("throttled")

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = scrape(service)
    throttled = outcomes.count("throttled")
    assert throttled >= 1
    assert value(samples, "sandbox_invocations_total", function="sleep", outcome="throttled") == throttled


def test_in_flight_invocations_rise_and_fall(start_service):
    """The gauge a HorizontalPodAutoscaler scales on: present (0) before any invocation, one per invocation
    still running, 0 again once they are answered, whatever their outcome."""
    service = start_service()
    client = service.client()
    assert ("sandbox_invocations_in_flight", ()) in scrape(service)
    assert value(scrape(service), "sandbox_invocations_in_flight") == 0
    outcomes = []

    def call(name: str, seconds: float) -> None:
        outcomes.append(invoke(client, name, {"seconds": seconds}).get("FunctionError"))

    def in_flight(count: int) -> None:
        wait_for(lambda: value(scrape(service), "sandbox_invocations_in_flight") == count, 20, f"{count} in flight")

    threads = [threading.Thread(target=call, args=("parallel", 5)) for _ in range(3)]
    for thread in threads:
        thread.start()
    in_flight(3)
    threads.append(threading.Thread(target=call, args=("sleep", 3)))  # Timeout: 1, answered Sandbox.Timedout
    threads[-1].start()
    in_flight(4)
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == [None, None, None, "Unhandled"]
    assert value(scrape(service), "sandbox_invocations_in_flight") == 0


@pytest.fixture(scope="module")
def session_service() -> Iterator[ServiceProcess]:
    running = ServiceProcess(FUNCTIONS / "sessions.yaml", env={"SANDBOX_SESSION_POOL_SIZE": "0"})
    yield running
    assert running.stop() == 0


def test_session_metrics(session_service):
    service = session_service
    before = scrape(service)
    session_id = f"m-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=service.url, timeout=60) as http:
        assert http.post(f"{SE}/session/{session_id}").status_code == 200
        assert value(scrape(service), "sandbox_sessions_live") == value(before, "sandbox_sessions_live") + 1
        assert http.post(f"{SE}/execute/{session_id}", json={"command": "echo hi"}).json()["success"]
        assert http.post(f"{SE}/execute/{session_id}", json={"command": "exit 3"}).status_code == 200
        code = "def handler(event, context):\n    return 42\n"
        assert http.post(f"{SE}/execute_code/{session_id}", json={"code": code}).json()["success"]
        assert http.delete(f"{SE}/session/{session_id}").status_code == 200
    after = scrape(service)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sandbox_sessions_created_total") == 1
    assert moved("sandbox_sessions_closed_total") == 1
    assert value(after, "sandbox_sessions_live") == value(before, "sandbox_sessions_live")
    assert value(after, "sandbox_sessions_limit") > 0
    assert moved("sandbox_session_duration_seconds_count", reason="closed") == 1
    assert moved("sandbox_session_executions_total", outcome="success") == 2
    assert moved("sandbox_session_executions_total", outcome="exit_error") == 1
    assert moved("sandbox_session_execution_duration_seconds_count", kind="execute") == 2
    assert moved("sandbox_session_execution_duration_seconds_count", kind="execute_code") == 1
    # The lifecycle log carries the session's id and durations.
    events = [e for e in service.log_events() if e.get("session_id") == session_id]
    by_name = {e["event"]: e for e in events}
    assert by_name["session.created"]["duration_ms"] >= 0
    assert by_name["session.closed"]["lifetime_s"] >= 0
    assert all("duration_ms" in e for e in events if e["event"] == "session.execution")


class _Receiver(ThreadingHTTPServer):
    def __init__(self, status: int = 200) -> None:
        self.beats: list[dict] = []
        self.status = status
        super().__init__(("127.0.0.1", free_port()), _BeatHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/beat"


class _BeatHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.beats.append({"path": self.path, "type": self.headers["Content-Type"], **json.loads(body)})
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_heartbeat_posts_status_and_capacity(start_service):
    receiver = _Receiver()
    try:
        service = start_service(
            env={
                "SANDBOX_HEARTBEAT_URL": receiver.url,
                "SANDBOX_HEARTBEAT_INTERVAL": "0.3",
                "SANDBOX_MAX_ENVIRONMENTS": "9",
                "SANDBOX_MAX_SESSIONS": "4",
            }
        )
        wait_for(lambda: len(receiver.beats) >= 3, 10, "three heartbeats")
        beat = receiver.beats[-1]
        assert beat["path"] == "/beat"
        assert beat["type"].startswith("application/json")
        assert beat["status"] == "healthy"
        assert beat["version"] == service.health()["version"]
        assert beat["functions"] == service.health()["functions"]
        assert beat["environments"]["limit"] == 9
        assert beat["sessions"] == {"live": 0, "limit": 4}
        assert abs(beat["timestamp"] - time.time()) < 30
        assert receiver.beats[-1]["timestamp"] > receiver.beats[0]["timestamp"]
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_a_failing_heartbeat_does_not_hurt_the_service(start_service):
    refusing = f"http://127.0.0.1:{free_port()}/beat"  # nothing listens there
    service = start_service(env={"SANDBOX_HEARTBEAT_URL": refusing, "SANDBOX_HEARTBEAT_INTERVAL": "0.1"})
    time.sleep(1)  # some ten failed beats
    assert "FunctionError" not in invoke(service.client(), "echo", {"ok": True})
    assert service.health()["status"] == "healthy"
    failures = [e for e in service.log_events() if e.get("event") == "heartbeat.failed"]
    assert len(failures) == 1  # once per state change, not at every beat
    assert failures[0]["level"] == "warning"
    assert failures[0]["url"] == refusing

    receiver = _Receiver(status=500)  # answers, but with an error: a change of state, logged once more
    try:
        service2 = start_service(env={"SANDBOX_HEARTBEAT_URL": receiver.url, "SANDBOX_HEARTBEAT_INTERVAL": "0.1"})
        wait_for(lambda: len(receiver.beats) >= 3, 10, "three heartbeats")
        failures = [e for e in service2.log_events() if e.get("event") == "heartbeat.failed"]
        assert len(failures) == 1 and "500" in failures[0]["error"]
    finally:
        receiver.shutdown()
        receiver.server_close()
