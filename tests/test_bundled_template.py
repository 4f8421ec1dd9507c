"""The repository's own template.yaml, served as shipped: each example does what its Description says.
(The README's examples against it are run by test_docs.py.)"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import BUNDLED_TEMPLATE, ServiceProcess

API_EVENT = Path(__file__).resolve().parent / "fixtures" / "cli" / "apigateway-aws-proxy.json"

# What each bundled function's Description promises; the tests below check exactly these promises.
DESCRIPTIONS = {
    "hello": "Greets the name in the event.",
    "echo": "Returns its event unchanged (a one-parameter handler).",
    "api": "An API Gateway proxy-style handler.",
    "error": "Raises an exception (X-Amz-Function-Error Unhandled).",
    "timeout": "Sleeps past its 1 s timeout (Sandbox.Timedout).",
}


@pytest.fixture(scope="module")
def bundled() -> Iterator[ServiceProcess]:
    running = ServiceProcess(BUNDLED_TEMPLATE)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(bundled: ServiceProcess):
    return bundled.client()


def result(response) -> object:
    return json.loads(response["Payload"].read())


def log_tail(response) -> list[str]:
    return base64.b64decode(response["LogResult"]).decode().splitlines()


class _IgnoreTags(yaml.SafeLoader):
    pass


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_the_template_ships_these_functions(bundled):
    template = yaml.load(BUNDLED_TEMPLATE.read_text(), Loader=_IgnoreTags)
    shipped = {
        resource["Properties"]["FunctionName"]: resource["Properties"]["Description"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert shipped == DESCRIPTIONS  # a new or reworded example needs its test here
    assert template["Parameters"]["Greeting"]["Default"] == "Hello"
    assert bundled.health()["functions"] == len(DESCRIPTIONS)


def test_hello_greets_the_name_with_the_default_greeting(client):
    response = client.invoke(FunctionName="hello", Payload=json.dumps({"name": "Ada"}))
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert result(response) == {"message": "Hello, Ada!", "request_id": response["ResponseMetadata"]["RequestId"]}
    assert result(client.invoke(FunctionName="hello", Payload=b"{}"))["message"] == "Hello, world!"
    assert result(client.invoke(FunctionName="HelloFunction", Payload=b'"Ada"'))["message"] == "Hello, world!"


@pytest.mark.parametrize(
    "event",
    [{"a": [1, 2.5, None, True], "nested": {"ü": "✓"}}, [1, "two"], "text", 42, None],
    ids=["object", "list", "string", "number", "null"],
)
def test_echo_returns_its_event_unchanged(client, event):
    response = client.invoke(FunctionName="echo", Payload=json.dumps(event))
    assert "FunctionError" not in response, response
    assert result(response) == event


def test_api_answers_an_api_gateway_proxy_event(client):
    event = json.loads(API_EVENT.read_text())  # what `sam local generate-event apigateway aws-proxy` prints
    response = client.invoke(FunctionName="api", Payload=json.dumps(event))
    assert "FunctionError" not in response, response
    proxy = result(response)
    assert proxy == {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": proxy["body"],
        "isBase64Encoded": False,
    }
    assert json.loads(proxy["body"]) == {
        "path": "/path/to/resource",
        "method": "POST",
        "query": {"foo": "bar"},
        "function": "api",
    }
    event.update(queryStringParameters=None, httpMethod="GET", path="/")
    body = json.loads(result(client.invoke(FunctionName="api", Payload=json.dumps(event)))["body"])
    assert body == {"path": "/", "method": "GET", "query": {}, "function": "api"}


def test_error_is_unhandled_order_not_found(client):
    response = client.invoke(FunctionName="error", Payload=b'{"order_id": 7}', LogType="Tail")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = result(response)
    assert error["errorType"] == "OrderNotFound"
    assert error["errorMessage"] == "order 7 does not exist"
    assert error["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert error["stackTrace"] and "raise OrderNotFound" in error["stackTrace"][-1]
    lines = log_tail(response)
    assert "looking up order 7" in lines
    assert any(line.startswith("[ERROR] OrderNotFound: order 7 does not exist") for line in lines), lines


def test_timeout_is_sandbox_timedout_after_one_second(client):
    response = client.invoke(FunctionName="timeout", Payload=b"{}", LogType="Tail")
    request_id = response["ResponseMetadata"]["RequestId"]
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert result(response) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    sleeping = [line for line in log_tail(response) if line.startswith("sleeping; ")]
    assert len(sleeping) == 1 and 0 < int(sleeping[0].split()[1]) <= 1000, sleeping
    # The function is fine when it wakes up in time (and a timed-out environment does not poison the next call).
    again = client.invoke(FunctionName="timeout", Payload=b'{"seconds": 0.01}')
    assert "FunctionError" not in again, result(again)
    assert result(again) == "woke up"
