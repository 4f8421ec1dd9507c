"""Reliability under faults (issue 6, "Faults"): each fault, what the caller gets, and a normal invoke that
succeeds after it.

The misbehaving runtimes are `provided` bootstraps in tests/reliability/functions (misbehave: the event's
"fault" picks the misbehaviour; nonext: never asks for an event). Points the rest of the suite already covers
exactly are listed here, not tested twice:

- the runtime answers twice: the caller gets the first answer, the second /response and an /error after it get
  403 InvalidStateTransition (tests/test_runtime_api.py::test_second_response_and_error_after_response_are_403,
  ::test_response_after_error_is_403);
- an invalid request id on /response and /error is 400 InvalidRequestID
  (tests/test_runtime_api.py::test_wrong_request_id_is_400); unknown paths and wrong methods are 404 / 405
  (::test_ping_unknown_paths_and_wrong_methods);
- a runtime that exits mid-invoke (exit status, clean exit): tests/test_environments.py
  ::test_crash_is_runtime_exit_error_and_the_next_invoke_recovers; a python init slower than the init limit
  and than the function timeout: ::test_init_over_the_limit_and_over_the_timeout_is_sandbox_timedout;
- a handler that runs past its timeout: ::test_timeout_is_sandbox_timedout_and_the_next_invoke_gets_a_fresh_environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import ServiceProcess
from support import fd_targets, fill_disk, invoke, package, request_id, tiny_tmpfs, wait_for, wait_for_function

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "faults.yaml"
SERVICE_ENV = {"SANDBOX_INIT_TIMEOUT": "1"}


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    running = ServiceProcess(TEMPLATE, env=SERVICE_ENV)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(service: ServiceProcess):
    return service.client()


def pool(service: ServiceProcess, name: str) -> dict:
    return service.health()["pools"]["functions"][name]


def footprint(service: ServiceProcess) -> tuple[int, int, int]:
    """(live environments, sandboxes running, the service's open descriptors), once the first two agree and
    the descriptors are the same two reads in a row: a fault must leave no sandbox, environment or descriptor
    behind. (A runtime that opens a connection per request closes the one it posted its answer on after the
    caller has the answer; the service's end of it closes a moment later.)"""
    last: dict[str, str] = {}

    def settled() -> tuple[int, int, int] | None:
        nonlocal last
        live = service.health()["pools"]["environments"]["live"]
        uids = {uid for _, uid in sandboxes_of(service)}
        fds, last = last, fd_targets(service.proc.pid)
        return (live, len(uids), len(fds)) if live == len(uids) and fds == last else None

    return wait_for(settled, 10, "the sandboxes, environments and descriptors to settle")  # type: ignore[return-value]


def healthy(client) -> dict:
    """A normal invoke of the misbehaving runtime, behaving: it must succeed."""
    response, body = invoke(client, "misbehave", {})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response, body
    answer = json.loads(body)
    assert answer["ok"] is True
    return answer


# -- the sandbox is killed ----------------------------------------------------------------------


def test_sandbox_sigkilled_mid_invoke_is_runtime_exit_error_and_the_next_invoke_works(start_service):
    """Every process of the sandbox gets SIGKILL (an OOM killer, an operator's kill -9) while it runs an
    invocation: the caller gets Lambda's Runtime.ExitError, the next invoke a fresh environment."""
    service = start_service(TEMPLATE, env=SERVICE_ENV)  # its own: its uid range holds this sandbox only
    client = service.client()
    healthy(client)
    results: list[tuple[dict, bytes]] = []
    thread = threading.Thread(target=lambda: results.append(invoke(client, "misbehave", {"fault": "sleep"})))
    thread.start()
    wait_for(lambda: pool(service, "misbehave")["environments"].get("busy"), 10, "the invoke to be running")
    kill_sandboxes(service)
    thread.join(15)
    assert results, "the killed invocation got no answer"
    response, body = results[0]
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(body)
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"].startswith(f"RequestId: {request_id(response)} Error: Runtime exited with error: ")
    assert "signal: killed" in error["errorMessage"], error
    assert healthy(client)["count"] == 1  # a new environment
    wait_for(lambda: pool(service, "misbehave")["environments"] == {"ready": 1}, 5, "one environment, ready")

    # Killed while idle: once the service has noticed, the next invoke starts a new environment.
    kill_sandboxes(service)
    wait_for(lambda: pool(service, "misbehave")["environments"] == {}, 5, "the killed environment to be gone")
    assert healthy(client)["count"] == 1
    # Killed while idle and invoked at once, racing with the service noticing: an invocation assigned to it
    # before is run elsewhere, or, if the dying runtime had already fetched it, is Lambda's Runtime.ExitError
    # (the event may have started: running it again could run it twice). Either way the next one works.
    kill_sandboxes(service)
    response, body = invoke(client, "misbehave", {})
    if "FunctionError" in response:
        assert json.loads(body)["errorType"] == "Runtime.ExitError", body
    healthy(client)


def kill_sandboxes(service: ServiceProcess) -> None:
    """SIGKILL every process of this service's sandboxes (and nobody else's: uid ranges of services started by
    other test sessions may overlap)."""
    for pid, _ in sandboxes_of(service):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sandboxes_of(service: ServiceProcess) -> list[tuple[int, int]]:
    """(pid, uid) of the processes descending from the service that run as a sandbox uid."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
    ours, found = {service.proc.pid}, True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                found = True
    first, last = service.uid_range
    result = []
    for pid in ours - {service.proc.pid}:
        with contextlib.suppress(OSError):
            uid = os.stat(f"/proc/{pid}").st_uid
            if first <= uid <= last:
                result.append((pid, uid))
    return result


# -- init that never ends -------------------------------------------------------------------------


def test_bootstrap_that_never_calls_next_times_out_each_time_and_leaves_nothing(client, service):
    """Init ends at the first /next; this one never comes. Past the init limit (1 s here, 10 s on Lambda) the
    environment is stopped and init is tried once more inside the invocation, under the function's timeout (2 s),
    as Lambda does; that fails too: Sandbox.Timedout. Every invoke is a fresh attempt with the same answer."""
    healthy(client)
    before = footprint(service)
    cold = pool(service, "no-next")["cold_starts"]
    for attempt in (1, 2):
        started = time.monotonic()
        response, body = invoke(client, "no-next", {})
        took = time.monotonic() - started
        assert response["FunctionError"] == "Unhandled"
        assert json.loads(body) == {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id(response)} Error: Task timed out after 2.00 seconds",
        }
        assert 2.5 <= took < 10, took  # init limit, then the function timeout
        # Two environments per invoke: the one that timed out its init, the one that retried it.
        assert pool(service, "no-next")["cold_starts"] == cold + 2 * attempt
    wait_for(lambda: pool(service, "no-next")["environments"] == {}, 5, "no environment left for no-next")
    healthy(client)
    assert footprint(service) == before


# -- a runtime that talks nonsense ------------------------------------------------------------------


def test_garbage_from_the_runtime_is_refused_and_its_invocation_still_answers(client, service):
    """Bytes that are not HTTP, a bad request line, an oversized header section (400, connection closed),
    paths that are not the Runtime API's (404, the Invoke API included: a sandbox reaches its own endpoint
    only) and request ids that are not the invocation's (400): each is refused on its own connection, and
    the environment carries on with the invocation it holds."""
    before = healthy(client)
    usage = footprint(service)
    response, body = invoke(client, "misbehave", {"fault": "garbage"})
    assert "FunctionError" not in response, body
    seen = json.loads(body)
    assert seen["count"] == before["count"] + 1  # the same environment
    for what in ("not_http", "bad_request_line", "huge_header"):
        assert seen[what].startswith("HTTP/1.1 400 "), (what, seen[what])
        assert '"errorType":"BadRequest"' in seen[what]
    assert seen["wrong_paths"] == [404, 400, 404, 404]
    for what in ("unknown_id", "error_unknown_id"):
        assert seen[what]["status"] == 400
        assert json.loads(seen[what]["body"])["errorType"] == "InvalidRequestID"
    assert healthy(client)["count"] == before["count"] + 2
    assert footprint(service) == usage


def test_a_response_body_that_is_not_json_reaches_the_caller_as_it_was_posted(client):
    """Lambda passes a runtime's /response body through, whatever it is."""
    before = healthy(client)
    response, body = invoke(client, "misbehave", {"fault": "garbage-body"})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert body == b"\xff\xfe not JSON at all \x00"
    assert healthy(client)["count"] == before["count"] + 2


# -- a runtime that stops halfway -------------------------------------------------------------------


def test_runtime_that_stalls_mid_response_times_out_and_its_environment_is_replaced(client, service):
    """Headers and 10 of the 100 bytes its Content-Length declares, then nothing, the connection held open:
    the invocation ends at the function's timeout (3 s) with Sandbox.Timedout, and the environment is
    stopped; the next invoke gets a new one."""
    healthy(client)
    before = footprint(service)
    started = time.monotonic()
    response, body = invoke(client, "misbehave", {"fault": "stall"})
    took = time.monotonic() - started
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id(response)} Error: Task timed out after 3.00 seconds",
    }
    assert 3 <= took < 8, took
    assert healthy(client)["count"] == 1  # a new environment
    wait_for(lambda: pool(service, "misbehave")["environments"] == {"ready": 1}, 5, "one environment, ready")
    assert footprint(service) == before


# -- the caller goes away ---------------------------------------------------------------------------


def test_caller_that_disconnects_mid_invoke_does_not_leak_its_environment(client, service):
    """The caller's connection closes while its invocation runs: the function finishes (as on Lambda), and its
    environment goes back to the pool; the next invoke is warm on it."""
    before = healthy(client)
    wait_for(lambda: pool(service, "misbehave")["environments"] == {"ready": 1}, 5, "one environment, ready")
    cold = pool(service, "misbehave")["cold_starts"]
    usage = footprint(service)
    payload = json.dumps({"fault": "sleep", "seconds": 1}).encode()
    with socket.create_connection(("127.0.0.1", service.port)) as conn:
        conn.sendall(
            b"POST /2015-03-31/functions/misbehave/invocations HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        wait_for(lambda: pool(service, "misbehave")["environments"].get("busy"), 5, "the invoke to be running")
    # Gone before the answer; the function sleeps on.
    wait_for(lambda: pool(service, "misbehave")["environments"] == {"ready": 1}, 10, "the environment back, ready")
    after = healthy(client)
    assert after["count"] == before["count"] + 2  # the abandoned invocation ran to its end in the same one
    assert pool(service, "misbehave")["cold_starts"] == cold
    assert footprint(service) == usage


# -- the data folder's disk is full -----------------------------------------------------------------


def test_full_disk_under_the_data_folder_is_a_clean_error_and_existing_functions_keep_serving(start_service, tmp_path):
    """CreateFunction and UpdateFunctionCode store the package under SANDBOX_DATA_DIR: on a full disk they answer
    Lambda's CodeStorageExceededException (a 400 boto3 does not retry), nothing half-made is left, and what was
    deployed before serves on; once space is back, they work again."""
    with tiny_tmpfs(tmp_path / "data", "1m") as data:
        service = start_service(TEMPLATE, env={**SERVICE_ENV, "SANDBOX_DATA_DIR": str(data)})
        client = service.client()
        create = {"Runtime": "python3.11", "Role": "arn:aws:iam::123456789012:role/x", "Handler": "app.handler"}
        client.create_function(FunctionName="before", Code={"ZipFile": package(ECHO)}, **create)
        wait_for_function(client, "function_active_v2", "before")
        filler = fill_disk(data)

        with pytest.raises(ClientError) as created:
            client.create_function(FunctionName="after", Code={"ZipFile": package(ECHO + "\n# new\n")}, **create)
        assert created.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert created.value.response["Error"]["Code"] == "CodeStorageExceededException"
        with pytest.raises(ClientError) as updated:
            client.update_function_code(FunctionName="before", ZipFile=package(ECHO + "\n# v2\n"))
        assert updated.value.response["Error"]["Code"] == "CodeStorageExceededException"

        names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
        assert "after" not in names
        assert client.get_function(FunctionName="before")["Configuration"]["LastUpdateStatus"] == "Successful"
        response, body = invoke(client, "before", {"still": "here"})
        assert "FunctionError" not in response and json.loads(body) == {"still": "here"}
        healthy(client)
        assert "Traceback" not in service.logs()

        filler.unlink()  # space is back
        client.update_function_code(FunctionName="before", ZipFile=package(ECHO + "\n# v2\n"))
        wait_for_function(client, "function_updated_v2", "before")
        client.create_function(FunctionName="after", Code={"ZipFile": package(ECHO)}, **create)
        wait_for_function(client, "function_active_v2", "after")
        assert json.loads(invoke(client, "after", {"n": 1})[1]) == {"n": 1}
        service.stop()


ECHO = "def handler(event, context):\n    return event\n"


# -- the template is edited into something invalid ---------------------------------------------------


def test_template_edited_into_something_invalid_keeps_the_old_functions_and_says_why(start_service, tmp_path):
    """The template file is watched while serving (runtime_api/template_reload.py; valid edits are in
    tests/test_template_reload.py). An edit that does not load, as YAML or as SAM, changes nothing: the
    functions loaded before serve on, template.reload_failed gives the loader's message; fixing the file
    reloads it."""
    template = tmp_path / "template.yaml"
    original = TEMPLATE.read_text().replace("functions/", f"{HERE}/functions/")
    template.write_text(original)
    service = start_service(template, env=SERVICE_ENV)
    client = service.client()
    before = healthy(client)

    def failures() -> list[dict]:
        return [e for e in service.log_events() if e.get("event") == "template.reload_failed"]

    template.write_text(original + "  Broken: [unclosed\n")  # not YAML
    failed = wait_for(failures, 10, "the failed reload to be logged")[0]
    assert failed["level"] == "error"
    assert str(template) in failed["detail"] or failed["template"] == str(template)
    assert healthy(client)["count"] == before["count"] + 1  # the same environment serves on

    # YAML, but not a template that loads: a function whose code folder does not exist.
    template.write_text(original.replace(f"{HERE}/functions/misbehave/", f"{HERE}/functions/nowhere/"))
    wait_for(lambda: len(failures()) >= 2, 10, "the second failed reload to be logged")
    assert "nowhere" in failures()[1]["detail"], failures()[1]
    assert healthy(client)["count"] == before["count"] + 2
    assert not [e for e in service.log_events() if e.get("event") == "template.reloaded"]
    assert "Traceback" not in service.logs()

    template.write_text(original.replace("Timeout: 3", "Timeout: 4"))  # fixed: reloaded
    wait_for(
        lambda: [e for e in service.log_events() if e.get("event") == "template.reloaded"], 10, "the fixed template"
    )
    assert client.get_function(FunctionName="misbehave")["Configuration"]["Timeout"] == 4
    assert healthy(client)["count"] == 1  # redeployed: a new environment
