"""Event invocations survive the service: stopped (SIGTERM), killed (SIGKILL) and restarted on the same
data folder, every accepted event is delivered once, with its request id and its age; an unwritable data
folder refuses Event invokes cleanly and nothing else. The real service, real sandboxes, boto3.

Delivery is observed through the service log: `record` logs a `RECORD {...}` line with its request id
and event (tests/functions/durability). `held` is the same function, held back with a reserved
concurrency of 0 (set through the API on a template function, so it lasts until the service stops).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import sqlite3
import time
import zipfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import FUNCTIONS, ServiceProcess
from support import fill_disk, invoke, logged_records, request_id, tiny_tmpfs, wait_for, wait_for_function

TEMPLATE = Path(__file__).resolve().parent / "durability.yaml"
ENV = {"SANDBOX_EVENT_RETRY_DELAY": "0.2", "SANDBOX_SHUTDOWN_TIMEOUT": "10"}
ARN = "arn:aws:lambda:us-east-1:123456789012:function"
ROLE = "arn:aws:iam::123456789012:role/test"

pytestmark = pytest.mark.slow


def start(start_service, data_dir: Path, **env: str) -> ServiceProcess:
    return start_service(TEMPLATE, env={**ENV, "SANDBOX_DATA_DIR": str(data_dir), **env})


def started(service: ServiceProcess, request: str) -> bool:
    return any(str(e.get("event", "")).startswith(f"START RequestId: {request}") for e in service.log_events())


def stored(data_dir: Path) -> dict[str, dict]:
    """The rows of the event store, by request id."""
    path = data_dir / "events.db"
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return {row["request_id"]: dict(row) for row in db.execute("SELECT * FROM events")}


def send(client, function: str, event: object) -> str:
    response = client.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(event).encode())
    assert response["StatusCode"] == 202
    return request_id(response)


def hold(client, function: str = "held") -> None:
    client.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=0)


def test_queued_events_are_kept_on_sigterm_and_delivered_after_the_restart(start_service, tmp_path):
    data = tmp_path / "data"
    first = start(start_service, data)
    client = first.client()
    hold(client)
    queued = {send(client, "held", {"n": n}): n for n in range(4)}
    running = send(client, "record", {"seconds": 2, "n": "running"})
    assert set(queued) | {running} <= set(stored(data)), "accepted events are stored before the 202"
    wait_for(lambda: started(first, running), 15, "the running event's attempt")

    assert first.stop() == 0
    # The attempt already running finished within the deadline (and left the store); the rest was kept.
    assert [r["request_id"] for r in logged_records(first, "record")] == [running]
    assert logged_records(first, "held") == []
    assert set(stored(data)) == set(queued)

    second = start(start_service, data)
    wait_for(lambda: len(logged_records(second, "held")) >= len(queued), 30, "the kept events after the restart")
    wait_for(lambda: not stored(data), 10, "the delivered events to leave the store")
    delivered = logged_records(second, "held")
    assert sorted((r["request_id"], r["event"]["n"]) for r in delivered) == sorted(queued.items())
    assert logged_records(second, "record") == [], "an event delivered before the stop is not delivered again"


def test_event_age_counts_from_the_first_acceptance_across_a_restart(start_service, tmp_path):
    data = tmp_path / "data"
    first = start(start_service, data)
    client = first.client()
    # An API function (its settings are kept across restarts) with a 60 s maximum age and a destination.
    for name in ("aged", "aged-sink"):
        client.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.record",
            Code={"ZipFile": _package(FUNCTIONS / "durability" / "app.py")},
        )
        wait_for_function(client, "function_active_v2", name)
    client.put_function_event_invoke_config(
        FunctionName="aged",
        MaximumEventAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": f"{ARN}:aged-sink"}},
    )
    hold(client, "aged")
    hold(client, "held")  # a template function: the default maximum age, 6 hours
    ages = {
        send(client, "aged", {"age": "expired"}): 120,
        send(client, "aged", {"age": "young"}): 20,
        send(client, "held", {"age": "expired"}): 7 * 3600,
        send(client, "held", {"age": "young"}): 5 * 3600,
    }
    assert first.stop() == 0
    assert set(stored(data)) == set(ages)
    # Time passes while the service is down: the events were accepted this long ago.
    with contextlib.closing(sqlite3.connect(data / "events.db")) as db, db:
        for request, age in ages.items():
            db.execute("UPDATE events SET enqueued_at = ? WHERE request_id = ?", (time.time() - age, request))

    second = start(start_service, data)
    client = second.client()
    client.delete_function_concurrency(FunctionName="aged")  # it was held back in the first run (and kept)
    wait_for(lambda: logged_records(second, "aged") and logged_records(second, "held"), 30, "the young events")
    wait_for(lambda: logged_records(second, "aged-sink"), 30, "the expired event's record at the destination")
    wait_for(lambda: not stored(data), 10, "every event to leave the store")
    assert [r["event"]["age"] for r in logged_records(second, "aged")] == ["young"]
    assert [r["event"]["age"] for r in logged_records(second, "held")] == ["young"]
    [failure] = [r["event"] for r in logged_records(second, "aged-sink")]
    expired = next(request for request, age in ages.items() if age == 120)
    assert failure["requestContext"]["requestId"] == expired
    assert failure["requestContext"]["condition"] == "EventAgeExceeded"
    assert failure["requestContext"]["approximateInvokeCount"] == 0
    assert failure["requestPayload"] == {"age": "expired"}
    reasons = [e for e in second.log_events() if e.get("event") == "event.failed"]
    assert {e["request_id"] for e in reasons} == {r for r, age in ages.items() if age in (120, 7 * 3600)}


def test_failed_attempts_count_across_a_restart(start_service, tmp_path):
    data = tmp_path / "data"
    first = start(start_service, data, SANDBOX_EVENT_RETRY_DELAY="60")  # the retry waits past the stop
    failing = send(first.client(), "failing", {"n": 1})
    wait_for(lambda: stored(data).get(failing, {}).get("attempts") == 1, 15, "the first failed attempt")
    assert first.stop() == 0
    assert stored(data)[failing]["attempts"] == 1

    second = start(start_service, data)
    wait_for(lambda: not stored(data), 15, "the event to be given up")
    # Three attempts in all (two retries by default): one before the restart, two after.
    assert [r["request_id"] for r in logged_records(first, "failing")] == [failing]
    assert [r["request_id"] for r in logged_records(second, "failing")] == [failing, failing]
    [gave_up] = [e for e in second.log_events() if e.get("event") == "event.failed"]
    assert gave_up["request_id"] == failing and "every attempt" in gave_up["reason"]


def test_accepted_events_survive_a_crash(start_service, tmp_path):
    data = tmp_path / "data"
    first = start(start_service, data)
    client = first.client()
    hold(client)
    queued = {send(client, "held", {"n": n}) for n in range(3)}
    interrupted = send(client, "record", {"seconds": 3, "n": "interrupted"})
    wait_for(lambda: started(first, interrupted), 15, "the attempt the crash interrupts")

    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # stop() also checks no sandbox outlived it
    assert set(stored(data)) == queued | {interrupted}

    second = start(start_service, data)
    delivered = lambda: len(logged_records(second, "held")) >= 3 and logged_records(second, "record")  # noqa: E731
    wait_for(delivered, 30, "the events after the crash")
    wait_for(lambda: not stored(data), 10, "the delivered events to leave the store")
    assert sorted(r["request_id"] for r in logged_records(second, "held")) == sorted(queued)
    # At least once: the attempt the crash cut short runs again, under the same request id.
    assert [r["request_id"] for r in logged_records(second, "record")] == [interrupted]


def test_an_event_whose_function_is_gone_is_discarded_at_the_restart(start_service, tmp_path):
    data = tmp_path / "data"
    first = start(start_service, data)
    hold(first.client())
    orphan = send(first.client(), "held", {"n": "orphan"})
    assert first.stop() == 0
    # The next run serves a template without `held`.
    template = tmp_path / "template.yaml"
    text = TEMPLATE.read_text().replace("../functions/durability/", str(FUNCTIONS / "durability") + "/")
    template.write_text(text.split("  Held:")[0])
    second = start_service(template, env={**ENV, "SANDBOX_DATA_DIR": str(data)})
    wait_for(lambda: not stored(data), 10, "the orphan to leave the store")
    [discarded] = [e for e in second.log_events() if e.get("event") == "event.discarded"]
    assert discarded["request_id"] == orphan and discarded["function"] == "held"
    assert "no longer exists" in discarded["reason"]


def test_a_full_data_folder_refuses_event_invokes_cleanly(start_service, tmp_path):
    with tiny_tmpfs(tmp_path / "data", "2m") as data:
        service = start(start_service, data)
        client = service.client()
        send(client, "record", {"n": "before"})
        wait_for(lambda: logged_records(service, "record"), 15, "the first event")
        filler = fill_disk(data)

        big = {"n": "full", "padding": "x" * 300_000}  # more than the store's file has room for
        with pytest.raises(ClientError) as refused:
            client.invoke(FunctionName="record", InvocationType="Event", Payload=json.dumps(big).encode())
        error = refused.value.response
        assert error["Error"]["Code"] == "ServiceException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert "not accepted" in error["Error"]["Message"] and "disk full" in error["Error"]["Message"]
        assert "Traceback" not in service.logs()
        assert service.health()["events"]["store_problem"]
        # Everything else is served.
        response, raw = invoke(client, "record", {"n": "sync"})
        assert response["StatusCode"] == 200 and "FunctionError" not in response
        assert json.loads(raw) == {"n": "sync"}

        filler.unlink()
        accepted = send(client, "record", big)
        wait_for(lambda: accepted in [r["request_id"] for r in logged_records(service, "record")], 15, "the event")
        assert service.health()["events"]["store_problem"] is None
        assert [r["event"]["n"] for r in logged_records(service, "record")] == ["before", "sync", "full"]
        assert service.stop() == 0


def _package(source: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(source, "app.py")
    return buffer.getvalue()
