"""The Invoke API over HTTP with boto3: results, name forms, invocation types, and service errors."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

ARN = "arn:aws:lambda:us-east-1:123456789012:function:echo"


def payload(response) -> object:
    return json.loads(response["Payload"].read())


def test_request_response_returns_the_handlers_result(client):
    response = client.invoke(FunctionName="echo", Payload=json.dumps({"hello": "world", "n": [1, 2.5]}))
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert payload(response) == {"hello": "world", "n": [1, 2.5]}
    request_id = response["ResponseMetadata"]["RequestId"]
    assert uuid.UUID(request_id).version == 4


def test_no_payload_is_an_empty_object(client):
    assert payload(client.invoke(FunctionName="echo")) == {}


def test_one_parameter_handler(client):
    assert payload(client.invoke(FunctionName="one-param", Payload=b'"x"')) == {"got": "x"}


@pytest.mark.parametrize(
    "name",
    [
        "echo",
        "Echo",  # the template's logical id
        "echo:$LATEST",
        "123456789012:function:echo",
        "123456789012:function:echo:$LATEST",
        ARN,
        f"{ARN}:$LATEST",
    ],
)
def test_every_name_form_reaches_the_function(client, name):
    assert payload(client.invoke(FunctionName=name, Payload=b'{"form": 1}')) == {"form": 1}


def test_qualifier_parameter(client):
    response = client.invoke(FunctionName="echo", Qualifier="$LATEST", Payload=b"{}")
    assert response["ExecutedVersion"] == "$LATEST"


def test_unknown_qualifier_is_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.invoke(FunctionName="echo", Qualifier="prod")
    assert info.value.response["Error"]["Message"] == f"Function not found: {ARN}:prod"


def test_conflicting_qualifiers_are_rejected(client):
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.invoke(FunctionName="echo:$LATEST", Qualifier="prod")


def test_unknown_function_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.invoke(FunctionName="does-not-exist")
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Message"] == (
        "Function not found: arn:aws:lambda:us-east-1:123456789012:function:does-not-exist:$LATEST"
    )
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ResourceNotFoundException"


def test_function_in_another_region_is_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.invoke(FunctionName="arn:aws:lambda:eu-west-1:123456789012:function:echo")
    assert "not reachable in this region" in info.value.response["Error"]["Message"]


def test_malformed_name_is_a_validation_error(client):
    with pytest.raises(ClientError) as info:
        client.invoke(FunctionName="bad name!")
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_non_json_body_is_invalid_request_content(client):
    with pytest.raises(client.exceptions.InvalidRequestContentException) as info:
        client.invoke(FunctionName="echo", Payload=b"{not json")
    assert info.value.response["Error"]["Message"].startswith("Could not parse request body into json")


def test_non_utf8_body_is_invalid_request_content(client):
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="echo", Payload=b'"\xff\xfe"')


def test_json_nested_deeper_than_the_parsers_recursion_is_invalid_request_content(client):
    # Found by tests/test_fuzz_invoke.py: the stdlib fallback (for big integers) raised RecursionError: a 500.
    for nested in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        with pytest.raises(client.exceptions.InvalidRequestContentException) as info:
            client.invoke(FunctionName="echo", Payload=nested)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_oversized_request_is_rejected_before_running(client):
    body = json.dumps("x" * (6 * 1024 * 1024)).encode()  # 6291458 bytes: just over 6291456
    with pytest.raises(client.exceptions.RequestTooLargeException) as info:
        client.invoke(FunctionName="echo", Payload=body)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "6291456" in info.value.response["Error"]["Message"]


def test_largest_allowed_request_passes(client):
    body = json.dumps("y" * (6 * 1024 * 1024 - 2)).encode()
    assert len(body) == 6 * 1024 * 1024
    assert len(client.invoke(FunctionName="echo", Payload=body)["Payload"].read()) == len(body)


def test_function_error_is_200_with_unhandled(client):
    response = client.invoke(FunctionName="fail", Payload=b'{"value": 42}')
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = payload(response)
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad value: 42"
    assert error["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert error["stackTrace"][0].startswith('  File "/var/task/app.py", line ')
    assert "in fail" in error["stackTrace"][0]


def test_dry_run_validates_without_running(client):
    response = client.invoke(FunctionName="echo", InvocationType="DryRun")
    assert response["StatusCode"] == 204
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="missing", InvocationType="DryRun")


def test_invalid_invocation_type(client):
    with pytest.raises(ClientError) as info:
        client.invoke(FunctionName="echo", InvocationType="Sometimes")
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_log_tail_holds_this_invocations_log(client):
    response = client.invoke(FunctionName="logs", LogType="Tail", Payload=b'{"lines": 2}')
    tail = base64.b64decode(response["LogResult"]).decode()
    request_id = response["ResponseMetadata"]["RequestId"]
    lines = tail.splitlines()
    start = lines.index(f"START RequestId: {request_id} Version: $LATEST")
    assert lines[start + 1 : start + 4] == ["line 0", "line 1", "to stderr"]
    assert lines[-2] == f"END RequestId: {request_id}"
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    assert "\tBilled Duration: " in lines[-1] and "\tMemory Size: 256 MB\t" in lines[-1]
    assert "\tMax Memory Used: " in lines[-1]


def test_log_tail_is_the_last_4_kb(client):
    response = client.invoke(FunctionName="logs", LogType="Tail", Payload=b'{"lines": 2000}')
    tail = base64.b64decode(response["LogResult"])
    assert len(tail) == 4096
    assert tail.rstrip().splitlines()[-1].startswith(b"REPORT RequestId: ")


def test_no_tail_without_asking(client):
    assert "LogResult" not in client.invoke(FunctionName="logs")


def test_client_context_reaches_the_handler(client):
    context = {"custom": {"user": "ada"}, "env": {"platform": "test"}, "client": {"app_title": "t"}}
    response = client.invoke(
        FunctionName="context-info", ClientContext=base64.b64encode(json.dumps(context).encode()).decode()
    )
    info = payload(response)
    assert info["client_context_custom"] == {"user": "ada"}
    assert info["client_context_env"] == {"platform": "test"}


def test_invalid_client_context(client):
    with pytest.raises(client.exceptions.InvalidRequestContentException) as info:
        client.invoke(FunctionName="echo", ClientContext="not base64!")
    assert info.value.response["Error"]["Message"] == "Client context must be a valid Base64-encoded JSON object."
    nested = base64.b64encode(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}").decode()  # was a 500 (RecursionError)
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="echo", ClientContext=nested)


def test_unknown_route_has_an_aws_error_shape(service):
    request = urllib.request.Request(f"{service.url}/2015-03-31/nothing-here", method="GET")
    try:
        urllib.request.urlopen(request)
    except urllib.error.HTTPError as error:
        assert error.code == 404
        assert error.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert error.headers["x-amzn-RequestId"]
    else:
        raise AssertionError("expected 404")


def test_invoke_answers_every_name_form_and_method_as_the_router_would(service):
    """Invoke is answered in front of the Starlette app (app.InvokeFastPath): the same answers as the
    routed version, for the path, the query string and the methods it does not take."""

    def call(path: str, method: str = "POST", **headers: str) -> tuple[int, Any, bytes]:
        request = urllib.request.Request(f"{service.url}{path}", data=b'{"k": 1}', method=method, headers=headers)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    status, headers, body = call("/2015-03-31/functions/echo/invocations?Qualifier=%24LATEST&x=1")
    assert (status, json.loads(body)) == (200, {"k": 1})
    assert headers["X-Amz-Executed-Version"] == "$LATEST" and uuid.UUID(headers["x-amzn-RequestId"]).version == 4
    assert headers["Content-Type"] == "application/json" and headers["Content-Length"] == "8"
    status, headers, body = call("/2015-03-31/functions/echo/invocations?Qualifier=nope")
    assert status == 404 and headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert headers["x-amzn-RequestId"]
    status, headers, _ = call("/2015-03-31/functions//invocations")
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    status, headers, _ = call("/2015-03-31/functions/echo/invocations", method="PUT")
    assert status == 405 and headers["x-amzn-ErrorType"] == "MethodNotAllowedException"
    status, headers, _ = call("/2015-03-31/functions/invocations")  # GetFunction's path, for a function so named
    assert status == 405 and headers["x-amzn-ErrorType"] == "MethodNotAllowedException"


def test_event_invocation_returns_202_and_runs(client, service):
    before = service.health()["events"]["delivered"]
    response = client.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"async": true}')
    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    deadline = time.monotonic() + 10
    while service.health()["events"]["delivered"] <= before:
        assert time.monotonic() < deadline, "event never delivered"
        time.sleep(0.05)


def test_failing_event_is_retried_twice(client, service):
    before = service.health()["events"]["failed"]
    response = client.invoke(FunctionName="flaky", InvocationType="Event")
    request_id = response["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 15
    while service.health()["events"]["failed"] <= before:
        assert time.monotonic() < deadline, "event never gave up"
        time.sleep(0.05)
    starts = [e for e in service.log_events() if e.get("event", "").startswith(f"START RequestId: {request_id}")]
    assert len(starts) == 3  # the first attempt and two retries, all under the same request id


def test_invoke_async_is_an_event_invocation(client, service):
    before = service.health()["events"]["delivered"]
    response = client.invoke_async(FunctionName="echo", InvokeArgs=b'{"legacy": true}')
    assert response["Status"] == 202
    deadline = time.monotonic() + 10
    while service.health()["events"]["delivered"] <= before:
        assert time.monotonic() < deadline, "event never delivered"
        time.sleep(0.05)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke_async(FunctionName="missing", InvokeArgs=b"{}")
