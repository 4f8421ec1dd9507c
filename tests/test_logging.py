"""runtime_api/logs.py: the service log (SANDBOX_LOG_FORMAT=json) as an operator reads it. Every line an
invocation or a request produces carries its request id (`x-amzn-RequestId`), whatever the outcome;
what outlives a request (an environment, a session's sandbox) does not carry that request's id into
lines about later work; every line is a JSON object, stdlib loggers' (uvicorn's) included."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import FUNCTIONS, ServiceProcess
from project_support import write_template
from support import invoke, package, request_id, wait_for, wait_for_function

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
SE = "/workspace/se"
# Answers, then prints from a thread and exits: its environment ends between invocations, on its own.
DIES_LATER = """import os, threading, time
def _die():
    time.sleep(0.3)
    print("dying after the answer", flush=True)
    os._exit(5)
def handler(event, context):
    threading.Thread(target=_die).start()
    return "answered"
"""


def logged_by(service: ServiceProcess, action: Callable[[], Any], quiet: float = 0.5) -> tuple[Any, list[dict]]:
    """What `action` returns, and the events the service logged from its start until the log has been quiet
    for `quiet` seconds (nothing else runs meanwhile: these are the action's lines)."""
    before = len(service.log_events())
    result = action()
    count, still_since = -1, time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() - still_since < quiet:
        assert time.monotonic() < deadline, "the service log never went quiet"
        now = len(service.log_events())
        if now != count:
            count, still_since = now, time.monotonic()
        time.sleep(0.05)
    return result, service.log_events()[before:]


def assert_all_carry(events: list[dict], rid: str) -> None:
    assert events, "the action logged nothing"
    strays = [event for event in events if event.get("request_id") != rid]
    assert not strays, f"lines without request id {rid}: {strays}"


def platform_lines(events: list[dict]) -> list[str]:
    return [e["event"].split(" ", 1)[0] for e in events if e["event"].startswith(("START ", "END ", "REPORT "))]


@pytest.mark.parametrize(
    ("name", "event", "outcome"),
    [
        ("echo", {"cold": True}, None),  # echo's first invocation here: a cold start, its lines carry its id
        ("echo", {"warm": True}, None),
        ("logs", {"lines": 3}, None),
        ("fail", {"value": 1}, "ValueError"),
        ("sleep", {"seconds": 3}, "Sandbox.Timedout"),  # Timeout: 1
        ("crash", {"status": 3}, "Runtime.ExitError"),
        ("init-error", {}, "RuntimeError"),
    ],
    ids=["cold", "warm", "output", "function-error", "timeout", "crash", "init-error"],
)
def test_every_line_of_an_invocation_carries_its_request_id(service, name, event, outcome):
    (response, payload), events = logged_by(service, lambda: invoke(service.client(), name, event))
    if outcome is None:
        assert "FunctionError" not in response, payload
    else:
        assert json.loads(payload)["errorType"] == outcome, payload
    assert_all_carry(events, request_id(response))
    assert platform_lines(events) == ["START", "END", "REPORT"]
    # The environment the invocation's failure ended: that line is the invocation's too.
    ended = {"sleep": ["timeout"], "crash": ["exit"], "init-error": ["init_error"]}.get(name, [])
    assert [e["reason"] for e in events if e["event"] == "environment.stopped"] == ended, events
    if name == "init-error":  # what the init printed before it failed belongs to the invocation that waited
        assert any("init went wrong" in e["event"] for e in events), events
    if name == "logs":
        assert [e["event"] for e in events if e["event"].startswith("line ")] == ["line 0", "line 1", "line 2"]


def test_output_written_just_before_each_answer_stays_with_its_invocation(service):
    """Back-to-back invokes of one warm environment, each printing right before it answers (the answer goes
    out before the service reads what is left of that output in the pipe, and the next invocation may begin
    first): every line is logged once, in order, under the request id of the invocation that printed it."""
    client = service.client()
    invoke(client, "logs", {"lines": 1})  # warm
    rounds, lines = 100, 20
    ids, events = logged_by(
        service,
        lambda: [request_id(invoke(client, "logs", {"lines": lines, "prefix": f"burst{k}"})[0]) for k in range(rounds)],
    )
    for k, rid in enumerate(ids):
        mine = [e for e in events if e["event"].startswith(f"burst{k} ")]
        assert [e["event"] for e in mine] == [f"burst{k} {i}" for i in range(lines)], (k, mine)
        assert {e.get("request_id") for e in mine} == {rid}, (k, rid, mine)


def event_logged_until(service: ServiceProcess, name: str, last: str) -> tuple[dict, list[dict]]:
    """An Event invocation of `name` (its 202) and the lines logged until `last` is and the log is quiet."""

    def send() -> dict:
        before = len(service.log_events())
        accepted = service.client().invoke(FunctionName=name, InvocationType="Event", Payload=b'{"value": 2}')
        wait_for(lambda: any(e["event"] == last for e in service.log_events()[before:]), 20, last)
        return accepted

    accepted, events = logged_by(service, send)
    assert accepted["StatusCode"] == 202
    return accepted, events


def test_every_attempt_of_an_event_invocation_carries_its_request_id(service):
    accepted, events = event_logged_until(service, "fail", "event.failed")
    assert_all_carry(events, request_id(accepted))
    assert platform_lines(events) == ["START", "END", "REPORT"] * 3  # three attempts, one id
    assert [e["attempt"] for e in events if e["event"] == "event.retry"] == [1, 2]


def test_a_destination_invocation_is_logged_under_its_own_request_id(service):
    """The OnFailure record is an invocation of its own (a new request id), started from the failed one."""
    client = service.client()
    echo_arn = client.get_function(FunctionName="echo")["Configuration"]["FunctionArn"]
    client.put_function_event_invoke_config(
        FunctionName="flaky", MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": echo_arn}}
    )
    try:
        accepted, events = event_logged_until(service, "flaky", "event.delivered")  # the destination's
    finally:
        client.delete_function_event_invoke_config(FunctionName="flaky")
    failed = [e for e in events if e.get("function") == "flaky"]
    assert_all_carry(failed, request_id(accepted))
    assert [e["event"] for e in failed if not e["event"].startswith(("START ", "END ", "REPORT "))][-1:] == [
        "event.failed"
    ]
    routed = [e for e in events if e.get("function") == "echo"]
    assert routed and routed[0]["request_id"] != request_id(accepted)
    assert_all_carry(routed, routed[0]["request_id"])
    assert platform_lines(routed) == ["START", "END", "REPORT"]
    assert [e["event"] for e in routed].count("event.delivered") == 1


def test_an_environment_does_not_carry_the_request_that_started_it(service):
    """Its callbacks and tasks are not the cold start's request's: a line about it after that request
    (its own exit, what it prints after the answer) has no request id, rather than a wrong one."""
    client = service.client()
    name = f"dies-later-{int(time.monotonic() * 1000)}"
    client.create_function(
        FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": package(DIES_LATER)}
    )
    wait_for_function(client, "function_active_v2", name)
    (response, payload), events = logged_by(service, lambda: invoke(client, name, {}), quiet=1.0)
    assert json.loads(payload) == "answered"
    rid = request_id(response)
    answered = [e for e in events if e.get("request_id") == rid]
    assert platform_lines(answered) == ["START", "END", "REPORT"]
    after = [e for e in events if e.get("request_id") != rid]
    assert [e["event"] for e in after] == ["dying after the answer", "environment.stopped"], events
    assert all(e.get("request_id") is None for e in after), after
    assert after[1]["reason"] == "exit" and after[1]["status"] == 5


def test_a_hot_reload_is_logged_under_the_invocation_that_waited_for_it(start_service, tmp_path):
    """Lines logged in an Invoke request's own task (not named explicitly) carry its id too."""
    (tmp_path / "hot").mkdir()
    (tmp_path / "hot" / "app.py").write_text("def handler(event, context):\n    return 1\n")
    service = start_service(write_template(tmp_path, {"hot": "hot/"}))
    client = service.client()
    # Its END and REPORT follow its answer: the log goes quiet before the reload's window opens.
    assert logged_by(service, lambda: invoke(client, "hot", {}))[0][1] == b"1"
    (tmp_path / "hot" / "app.py").write_text("def handler(event, context):\n    return 2\n")
    (response, payload), events = logged_by(service, lambda: invoke(client, "hot", {}))
    assert payload == b"2"
    # The environment of the old code ends on its own time (the pool it belonged to drains): not this request's.
    replaced = [e for e in events if e.get("reason") == "replaced"]
    assert [e["event"] for e in replaced] == ["environment.stopped"] and "request_id" not in replaced[0]
    assert_all_carry([e for e in events if e not in replaced], request_id(response))
    assert [e["function"] for e in events if e["event"] == "function.reloaded"] == ["hot"]


def test_session_lines_carry_the_request_and_the_session(start_service):
    service = start_service(FUNCTIONS / "sessions.yaml", env={"SANDBOX_SESSION_POOL_SIZE": "0"})
    with httpx.Client(base_url=service.url, timeout=60) as http:
        created, events = logged_by(service, lambda: http.post(f"{SE}/session/lines"))
        assert created.status_code == 200, created.text
        assert_all_carry(events, created.headers["x-amzn-requestid"])
        assert [e["session_id"] for e in events if e["event"] == "session.created"] == ["lines"]
        # The agent is the parent of the execution's shell: killing it ends the session's sandbox.
        killed, events = logged_by(
            service, lambda: http.post(f"{SE}/execute/lines", json={"command": "kill -9 $PPID; sleep 5"})
        )
        assert killed.status_code == 410, killed.text
    by_name = {e["event"]: e for e in events}
    execution, ended = by_name["session.execution"], by_name["session.ended"]
    assert execution["request_id"] == killed.headers["x-amzn-requestid"] and execution["session_id"] == "lines"
    # Its sandbox's end is the session's own event, not the creating request's (that one is long answered).
    assert ended["session_id"] == "lines" and "request_id" not in ended, ended


def test_every_line_is_a_json_object(service):
    """uvicorn's own lines (stdlib logging) are rendered like ours: JSON, with their logger's name."""
    lines = [line for line in service.logs().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    assert any(e.get("logger") == "uvicorn.error" for e in service.log_events())
