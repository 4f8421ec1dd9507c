"""Response streaming, end to end: InvokeWithResponseStream through boto3 (`response["EventStream"]`), streamed
/response bodies (chunked, errors in trailers) from a custom runtime, and every pairing of a streaming or buffered
caller with a streaming or buffered runtime.

`stream` (tests/functions/stream/bootstrap) streams the way the Node.js runtime client does; what the Runtime API
answered to its response it prints as `STREAM-REPORT <request id> <json>`, which the tests read from the service log.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError
from conftest import ServiceProcess
from support import request_id, wait_for

from runtime_api import eventstream

TEMPLATE = Path(__file__).resolve().parent / "functions" / "streaming.yaml"
STREAM_LIMIT = 200 * 1024 * 1024  # 209715200
BUFFERED_LIMIT = 6 * 1024 * 1024 + 100  # 6291556


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    running = ServiceProcess(TEMPLATE)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(service: ServiceProcess):
    return service.client()


def stream(client, name: str, event: object = None, **kwargs: object) -> tuple[dict, list[dict]]:
    """InvokeWithResponseStream: the boto3 response and every event, as boto3 yields them."""
    if event is not None:
        kwargs["Payload"] = json.dumps(event).encode()
    response = client.invoke_with_response_stream(FunctionName=name, **kwargs)
    return response, list(response["EventStream"])


def payload(events: list[dict]) -> bytes:
    return b"".join(event["PayloadChunk"]["Payload"] for event in events if "PayloadChunk" in event)


def complete(events: list[dict]) -> dict:
    """The InvokeComplete event, which must be the last one and the only one."""
    assert "InvokeComplete" in events[-1], events[-1]
    assert sum("InvokeComplete" in event for event in events) == 1
    return events[-1]["InvokeComplete"]


def report(service: ServiceProcess, rid: str) -> dict:
    """What the stream runtime printed about its response to `rid`."""
    prefix = f"STREAM-REPORT {rid} "

    def find() -> dict | None:
        for event in service.log_events():
            line = event.get("event", "")
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        return None

    return wait_for(find, 10, f"the runtime's report for {rid}")  # type: ignore[return-value]


# -- the framing ------------------------------------------------------------------------------------


def test_encoder_round_trips_through_botocore():
    data = eventstream.payload_chunk(b"\x00binary\xff") + eventstream.invoke_complete("Unhandled", "boom", "bG9n")
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    chunk, done = list(buffer)
    assert chunk.headers == {
        ":event-type": "PayloadChunk",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert chunk.payload == b"\x00binary\xff"
    assert done.headers[":event-type"] == "InvokeComplete"
    assert done.headers[":content-type"] == "application/json"
    assert json.loads(done.payload) == {"ErrorCode": "Unhandled", "ErrorDetails": "boom", "LogResult": "bG9n"}
    buffer.add_data(eventstream.invoke_complete())
    assert json.loads(next(buffer).payload) == {}


def test_encoder_checksums_are_checked_by_botocore():
    message = bytearray(eventstream.payload_chunk(b"payload"))
    total, headers_length, prelude_crc = (int.from_bytes(message[i : i + 4], "big") for i in (0, 4, 8))
    assert total == len(message)
    assert prelude_crc == zlib.crc32(bytes(message[:8]))
    assert int.from_bytes(message[-4:], "big") == zlib.crc32(bytes(message[:-4]))
    message[12 + headers_length] ^= 0xFF  # one payload byte
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(message))
    with pytest.raises(ChecksumMismatch):
        list(buffer)


def test_the_wire_is_an_event_stream(service):
    request = urllib.request.Request(
        f"{service.url}/2021-11-15/functions/stream/response-streaming-invocations",
        data=json.dumps({"scenario": "lines", "count": 2}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
        headers = response.headers
        body = response.read()
    assert headers["Content-Type"] == "application/vnd.amazon.eventstream"
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["X-Amz-Executed-Version"] == "$LATEST"
    assert uuid.UUID(headers["x-amzn-RequestId"]).version == 4
    buffer = EventStreamBuffer()
    buffer.add_data(body)
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages][-1] == "InvokeComplete"
    assert {m.headers[":event-type"] for m in messages[:-1]} == {"PayloadChunk"}
    assert all(m.headers[":message-type"] == "event" for m in messages)
    lines = b"".join(m.payload for m in messages[:-1]).splitlines()
    assert [json.loads(line)["i"] for line in lines] == [0, 1]
    assert json.loads(messages[-1].payload) == {}


# -- a streaming runtime, a streaming caller ---------------------------------------------------------


def test_chunks_reach_boto3_as_the_function_produces_them(client):
    response = client.invoke_with_response_stream(
        FunctionName="stream", Payload=json.dumps({"scenario": "lines", "count": 4, "delay": 0.4}).encode()
    )
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert response["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    assert uuid.UUID(request_id(response)).version == 4
    arrived: list[float] = []
    produced: list[float] = []
    pending = b""
    events = []
    for event in response["EventStream"]:
        events.append(event)
        if "PayloadChunk" in event:
            pending += event["PayloadChunk"]["Payload"]
            *lines, pending = pending.split(b"\n")
            for line in lines:
                arrived.append(time.time())
                produced.append(json.loads(line)["produced"])
    assert pending == b""
    assert len(arrived) == 4
    # The first line was in the caller's hands before the function had produced the last one.
    assert arrived[0] < produced[3]
    assert all(produced[i] <= arrived[i] for i in range(4))
    assert complete(events) == {}


def test_error_trailers_end_the_stream_with_the_error(client, service):
    response, events = stream(client, "stream", {"scenario": "fail", "count": 2})
    assert response["StatusCode"] == 200
    assert [json.loads(line)["i"] for line in payload(events).splitlines()] == [0, 1]
    done = complete(events)
    assert done["ErrorCode"] == "Unhandled"
    assert json.loads(done["ErrorDetails"]) == {
        "errorType": "Error",
        "errorMessage": "it broke mid-stream",
        "trace": ["at handler (stream.js:1:1)"],
    }
    assert "LogResult" not in done
    assert report(service, request_id(response))["status"] == 202


def test_log_tail_comes_with_invoke_complete(client):
    response, events = stream(client, "stream", {"scenario": "lines", "count": 2}, LogType="Tail")
    rid = request_id(response)
    lines = base64.b64decode(complete(events)["LogResult"]).decode().splitlines()
    start = lines.index(f"START RequestId: {rid} Version: $LATEST")
    assert lines[start + 1 : start + 3] == ["producing chunk 0", "producing chunk 1"]
    assert lines[-2] == f"END RequestId: {rid}"
    assert lines[-1].startswith(f"REPORT RequestId: {rid}\tDuration: ")


def test_a_caller_that_goes_away_does_not_stop_the_function(service):
    """As on Lambda: the function streams on to its end, and the environment serves the next invocation."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request(
        "POST",
        "/2021-11-15/functions/stream/response-streaming-invocations",
        body=json.dumps({"scenario": "lines", "count": 4, "delay": 0.3}),
    )
    response = conn.getresponse()
    rid = response.headers["x-amzn-RequestId"]
    assert response.read1(1)  # the first chunk is on its way
    conn.close()
    assert report(service, rid)["status"] == 202
    ended = [e for e in service.log_events() if e.get("event", "").startswith(f"REPORT RequestId: {rid}")]
    assert len(ended) == 1
    _, events = stream(service.client(), "stream", {"scenario": "lines", "count": 1})
    assert complete(events) == {}


def test_a_slow_caller_slows_the_runtime_down(client, service):
    """Backpressure: what the caller has not read is not piled up in the service; the runtime's writes wait."""
    size = 64 * 1024 * 1024  # far more than the socket buffers and the service's own window hold
    response = client.invoke_with_response_stream(
        FunctionName="stream", Payload=json.dumps({"scenario": "size", "size": size}).encode()
    )
    events = iter(response["EventStream"])
    received = len(next(events)["PayloadChunk"]["Payload"])
    time.sleep(1.5)
    resumed = time.time()
    rest = list(events)
    assert received + len(payload(rest)) == size
    assert complete(rest) == {}
    seen = report(service, request_id(response))
    assert seen["status"] == 202
    assert seen["finished"] > resumed  # the runtime could only finish once the caller read on


def test_a_response_behind_another_request_on_its_connection(client, service):
    response, events = stream(client, "stream", {"scenario": "pipelined"})
    assert payload(events) == b"first second"
    assert complete(events) == {}
    ping, answer = report(service, request_id(response))["answers"]
    assert ping == {"status": 200, "body": "pong"}
    assert answer == {"status": 202, "body": '{"status":"OK"}\n'}


def test_runtime_crash_mid_stream_is_an_exit_error(client):
    response, events = stream(client, "stream", {"scenario": "crash", "count": 1})
    assert json.loads(payload(events))["i"] == 0
    done = complete(events)
    assert done["ErrorCode"] == "Unhandled"
    error = json.loads(done["ErrorDetails"])
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"] == f"RequestId: {request_id(response)} Error: Runtime exited with error: exit status 3"
    assert complete(stream(client, "stream", {"scenario": "lines", "count": 1})[1]) == {}  # a fresh environment


def test_response_cut_short_is_truncated(client):
    response, events = stream(client, "stream", {"scenario": "cut", "count": 2})
    assert len(payload(events).splitlines()) == 2
    error = json.loads(complete(events)["ErrorDetails"])
    assert error["errorType"] == "Runtime.TruncatedResponse"
    assert request_id(response) in error["errorMessage"]
    assert complete(stream(client, "stream", {"scenario": "lines", "count": 1})[1]) == {}  # the runtime carries on


def test_timeout_mid_stream(client):
    response, events = stream(client, "stream-short", {"scenario": "hang", "count": 1})
    assert len(payload(events).splitlines()) == 1
    error = json.loads(complete(events)["ErrorDetails"])
    assert error == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id(response)} Error: Task timed out after 1.00 seconds",
    }


# -- limits -----------------------------------------------------------------------------------------


def test_a_stream_of_the_largest_allowed_size_is_delivered(client, service):
    response, events = stream(client, "stream", {"scenario": "size", "size": STREAM_LIMIT})
    assert len(payload(events)) == STREAM_LIMIT
    assert complete(events) == {}
    assert report(service, request_id(response))["status"] == 202


def test_a_stream_past_200_mb_ends_with_response_size_too_large(client, service):
    response, events = stream(client, "stream", {"scenario": "size", "size": STREAM_LIMIT + 1})
    assert len(payload(events)) == STREAM_LIMIT  # everything up to the limit
    done = complete(events)
    assert done["ErrorCode"] == "Unhandled"
    assert json.loads(done["ErrorDetails"]) == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": f"Response payload size exceeded maximum allowed payload size ({STREAM_LIMIT} bytes).",
    }
    seen = report(service, request_id(response))
    assert seen["status"] == 413
    assert seen["body"] == (
        f'{{"errorMessage":"Exceeded maximum allowed payload size ({STREAM_LIMIT} bytes).",'
        '"errorType":"RequestEntityTooLarge"}\n'
    )
    assert complete(stream(client, "stream", {"scenario": "lines", "count": 1})[1]) == {}  # still serving


def test_buffered_invoke_of_a_stream_keeps_the_6_mb_limit(client, service):
    response = client.invoke(FunctionName="stream", Payload=json.dumps({"scenario": "size", "size": BUFFERED_LIMIT}))
    assert "FunctionError" not in response
    assert len(response["Payload"].read()) == BUFFERED_LIMIT

    response = client.invoke(
        FunctionName="stream", Payload=json.dumps({"scenario": "size", "size": BUFFERED_LIMIT + 1})
    )
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read()) == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": f"Response payload size exceeded maximum allowed payload size ({BUFFERED_LIMIT} bytes).",
    }
    assert report(service, request_id(response))["status"] == 413


# -- a streaming runtime, a buffered caller ---------------------------------------------------------


def test_buffered_invoke_collects_the_stream(client, service):
    response = client.invoke(FunctionName="stream", Payload=json.dumps({"scenario": "lines", "count": 3}))
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert [json.loads(line)["i"] for line in response["Payload"].read().splitlines()] == [0, 1, 2]
    assert report(service, request_id(response))["status"] == 202


def test_buffered_invoke_of_a_stream_that_fails_is_a_function_error(client):
    response = client.invoke(
        FunctionName="stream", Payload=json.dumps({"scenario": "fail", "count": 2, "error_type": "TypeError"})
    )
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read()) == {
        "errorType": "TypeError",
        "errorMessage": "it broke mid-stream",
        "trace": ["at handler (stream.js:1:1)"],
    }


def test_an_unknown_response_mode_is_refused(client, service):
    response = client.invoke(FunctionName="stream", Payload=json.dumps({"scenario": "mode", "mode": "bogus"}))
    assert response["FunctionError"] == "Unhandled"
    assert response["Payload"].read() == b""
    seen = report(service, request_id(response))
    assert seen["status"] == 400
    assert (
        seen["body"] == '{"errorMessage":"Invalid function response mode","errorType":"InvalidFunctionResponseMode"}\n'
    )


# -- a buffered runtime, a streaming caller ---------------------------------------------------------


def test_a_buffered_function_arrives_as_payload_chunks(client):
    response, events = stream(client, "echo", {"hello": "stream"})
    assert response["StatusCode"] == 200
    assert json.loads(payload(events)) == {"hello": "stream"}
    assert complete(events) == {}


def test_a_buffered_function_error_is_in_invoke_complete(client):
    response, events = stream(client, "fail", {"value": 7})
    assert payload(events) == b""
    done = complete(events)
    assert done["ErrorCode"] == "Unhandled"
    error = json.loads(done["ErrorDetails"])
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad value: 7"
    assert error["requestId"] == request_id(response)


def test_a_buffered_response_over_6_mb_streams_in_full(client):
    """The limit is the invocation's, not the runtime's: 200 MB for InvokeWithResponseStream."""
    _, events = stream(client, "big", {"size": 7 * 1024 * 1024})
    assert json.loads(payload(events)) == "x" * (7 * 1024 * 1024)
    assert complete(events) == {}


# -- before the function runs: the usual error shapes ------------------------------------------------


def test_errors_before_streaming_are_the_usual_shapes(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke_with_response_stream(FunctionName="missing")
    with pytest.raises(client.exceptions.TooManyRequestsException) as throttled:
        client.invoke_with_response_stream(FunctionName="stream-none")
    assert throttled.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    with pytest.raises(ClientError) as event:
        client.invoke_with_response_stream(FunctionName="echo", InvocationType="Event")
    assert event.value.response["Error"]["Code"] == "ValidationException"
    assert "[RequestResponse, DryRun]" in event.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke_with_response_stream(FunctionName="echo", Payload=b"{not json")
    with pytest.raises(client.exceptions.RequestTooLargeException):
        client.invoke_with_response_stream(FunctionName="echo", Payload=json.dumps("x" * (6 * 1024 * 1024)))


def test_dry_run_and_name_forms(client):
    assert client.invoke_with_response_stream(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204
    arn = "arn:aws:lambda:us-east-1:123456789012:function:echo"
    response, events = stream(client, arn, {"n": 1}, Qualifier="$LATEST")
    assert response["ExecutedVersion"] == "$LATEST"
    assert json.loads(payload(events)) == {"n": 1}
