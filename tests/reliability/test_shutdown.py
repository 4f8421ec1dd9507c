"""SIGTERM drains the service within SANDBOX_SHUTDOWN_TIMEOUT: new connections are refused, invokes in
flight get their answers, an invoke still running at the deadline gets a clean error answer, no sandbox
process is left (ServiceProcess.stop checks), and the process exits 0 in time. A second signal skips the
wait. The real service, real sandboxes, boto3 (durability.yaml's `record`: it sleeps `seconds`)."""

from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ServiceProcess
from support import invoke, wait_for

TEMPLATE = Path(__file__).resolve().parent / "durability.yaml"
MARGIN = 3.0  # seconds past the deadline a stop may take: the sandboxes' end, the app's own shutdown

pytestmark = pytest.mark.slow


def start(start_service, timeout: float) -> ServiceProcess:
    return start_service(TEMPLATE, env={"SANDBOX_SHUTDOWN_TIMEOUT": str(timeout)})


def invoke_in_background(service: ServiceProcess, seconds: float) -> Future:
    client = service.client()
    invoke(client, "record", {"seconds": 0})  # warm: the next invoke starts at once
    pool = ThreadPoolExecutor(1)
    future = pool.submit(invoke, client, "record", {"seconds": seconds})
    pool.shutdown(wait=False)
    return future


def started(service: ServiceProcess, count: int) -> bool:
    return sum(str(e.get("event", "")).startswith("START RequestId:") for e in service.log_events()) >= count


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def signal_and_time(service: ServiceProcess, *signals: int, between: float = 0.5) -> float:
    """Send the signals (`between` seconds apart); how long the process took to exit after the first."""
    begun = time.monotonic()
    for index, sig in enumerate(signals):
        if index:
            time.sleep(between)
        service.proc.send_signal(sig)
    service.proc.wait(60)
    return time.monotonic() - begun


def test_sigterm_lets_an_invoke_in_flight_finish(start_service):
    service = start(start_service, timeout=10)
    answer = invoke_in_background(service, 2)
    wait_for(lambda: started(service, 2), 10, "the invoke to start")
    time.sleep(0.5)
    service.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(service.port), 2, "the listener to close")
    response, raw = answer.result(timeout=15)
    assert response["StatusCode"] == 200 and "FunctionError" not in response, raw
    assert json.loads(raw) == {"seconds": 2}
    service.proc.wait(10)
    assert service.stop() == 0


def test_an_invoke_past_the_deadline_gets_an_answer_and_the_service_exits_in_time(start_service):
    service = start(start_service, timeout=2)
    answer = invoke_in_background(service, 20)
    wait_for(lambda: started(service, 2), 10, "the invoke to start")
    took = signal_and_time(service, signal.SIGTERM)
    assert 2 <= took < 2 + MARGIN, took
    response, raw = answer.result(timeout=5)
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    error = json.loads(raw)
    assert error["errorType"] == "Runtime.ExitError"
    assert "the service is shutting down" in error["errorMessage"]
    assert service.stop() == 0


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_stops_at_once(start_service, second):
    service = start(start_service, timeout=30)
    answer = invoke_in_background(service, 20)
    wait_for(lambda: started(service, 2), 10, "the invoke to start")
    took = signal_and_time(service, signal.SIGTERM, second, between=0.5)
    assert took < 0.5 + MARGIN, took
    response, raw = answer.result(timeout=5)
    assert response["FunctionError"] == "Unhandled" and "shutting down" in json.loads(raw)["errorMessage"]
    assert service.stop() == 0
