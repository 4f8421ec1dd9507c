"""The Runtime API's rules (reference/runtime-api.md §1), seen from inside a sandbox by custom runtimes:
`runtime-rules` (tests/functions/rules/bootstrap) drives one rule per event and reports what it saw; `runtime-probe`
and `curl` are runtimes written the way users write them; and the real awslambdaric and aws-lambda-powertools run
unchanged.

What a runtime learns only after it has answered (a second /response, a 413) it prints as
`RULES-REPORT <request id> <json>`; the tests read that line from the service log.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ServiceProcess
from support import invoke, request_id, tail, vendor, wait_for

FUNCTIONS = Path(__file__).resolve().parent / "functions"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
INVALID_REQUEST_ID = b'{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}\n'
NOT_ALLOWED = (
    "State transition from RuntimeResponseSentState to {} failed for runtime. Error: State transition is not allowed"
)


def rules(client, scenario: str, **event: object) -> tuple[dict, bytes]:
    return invoke(client, "runtime-rules", {"scenario": scenario, **event})


def late_report(service: ServiceProcess, rid: str) -> dict:
    """What runtime-rules printed for `rid` after answering it."""
    prefix = f"RULES-REPORT {rid} "

    def find() -> dict | None:
        for event in service.log_events():
            line = event.get("event", "")
            if event.get("function") == "runtime-rules" and line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        return None

    return wait_for(find, 10, f"the runtime's report for {rid}")  # type: ignore[return-value]


def error_body(result: dict) -> dict:
    assert result["headers"]["content-type"] == "application/json"
    return json.loads(result["body"])


# -- /next ------------------------------------------------------------------------------------------


def test_next_headers(client):
    context = {"custom": {"user": "ada"}, "env": {"platform": "test"}, "client": {"app_title": "t"}}
    started_ms = time.time() * 1000
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    response, body = invoke(client, "runtime-rules", {"scenario": "headers"}, ClientContext=encoded)
    finished_ms = time.time() * 1000
    seen = json.loads(body)
    headers = seen["next"]["headers"]
    assert seen["next"]["status"] == 200
    assert seen["event"] == {"scenario": "headers"}
    assert headers["lambda-runtime-aws-request-id"] == request_id(response)
    # The deadline is now + the function's 5 s timeout, set when the runtime fetched the event.
    assert started_ms + 5000 - 1 <= int(headers["lambda-runtime-deadline-ms"]) <= finished_ms + 5000 + 1
    assert headers["lambda-runtime-invoked-function-arn"] == ARN.format("runtime-rules")
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}(;.*)?", headers["lambda-runtime-trace-id"])
    assert headers["content-type"] == "application/json"
    assert json.loads(headers["lambda-runtime-client-context"]) == context
    assert "lambda-runtime-cognito-identity" not in headers


def test_next_without_client_context_and_with_a_qualifier(client):
    _, body = invoke(client, "runtime-rules", {"scenario": "headers"}, Qualifier="$LATEST")
    headers = json.loads(body)["next"]["headers"]
    assert "lambda-runtime-client-context" not in headers
    assert headers["lambda-runtime-invoked-function-arn"] == ARN.format("runtime-rules") + ":$LATEST"


def test_next_header_names_are_rendered_as_lambda_renders_them(client):
    """Lambda's Runtime API (Go) sends canonical header names; runtimes that look them up by exact name
    (as runtime-probe does) depend on it."""
    _, body = rules(client, "headers")
    names = [name for name, _ in json.loads(body)["next"]["raw_headers"]]
    for name in (
        "Lambda-Runtime-Aws-Request-Id",
        "Lambda-Runtime-Deadline-Ms",
        "Lambda-Runtime-Invoked-Function-Arn",
        "Lambda-Runtime-Trace-Id",
        "Content-Type",
    ):
        assert name in names, f"{name} not on the wire as such; got {names}"


def test_next_twice_while_running_re_renders_the_same_invocation(client):
    response, body = rules(client, "next-twice")
    seen = json.loads(body)
    again = seen["again"]
    assert again["status"] == 200
    assert again["headers"]["lambda-runtime-aws-request-id"] == request_id(response)
    assert json.loads(again["body"]) == {"scenario": "next-twice"}


# -- answering --------------------------------------------------------------------------------------


def test_wrong_request_id_is_400(client):
    response, body = rules(client, "wrong-id")
    assert "FunctionError" not in response
    seen = json.loads(body)
    for answer in ("response", "error"):
        assert seen[answer]["status"] == 400
        assert seen[answer]["headers"]["content-type"] == "application/json"
        assert seen[answer]["body"].encode() == INVALID_REQUEST_ID


def test_second_response_and_error_after_response_are_403(client, service):
    response, body = rules(client, "double-response")
    assert "FunctionError" not in response
    assert body == b'"first"'  # the caller gets the first answer
    report = late_report(service, request_id(response))
    assert report["first"]["status"] == 202
    assert json.loads(report["first"]["body"]) == {"status": "OK"}
    assert report["second"]["status"] == 403
    assert error_body(report["second"]) == {
        "errorMessage": NOT_ALLOWED.format("InvocationResponse"),
        "errorType": "InvalidStateTransition",
    }
    assert report["error_after"]["status"] == 403
    assert error_body(report["error_after"]) == {
        "errorMessage": NOT_ALLOWED.format("InvocationErrorResponse"),
        "errorType": "InvalidStateTransition",
    }


def test_response_after_error_is_403(client, service):
    response, body = rules(client, "error-then-response")
    assert response["FunctionError"] == "Unhandled"
    assert body == b'{"errorMessage": "first", "errorType": "First"}'
    report = late_report(service, request_id(response))
    assert report["first"]["status"] == 202
    assert report["response_after"]["status"] == 403
    assert error_body(report["response_after"])["errorType"] == "InvalidStateTransition"


def test_init_error_after_next_is_403(client):
    response, body = rules(client, "init-error-late")
    assert "FunctionError" not in response
    init_error = json.loads(body)["init_error"]
    assert init_error["status"] == 403
    assert error_body(init_error)["errorType"] == "InvalidStateTransition"
    # The environment carries on: the next invoke is served by it as usual.
    assert "FunctionError" not in rules(client, "headers")[0]


def test_ping_unknown_paths_and_wrong_methods(client):
    seen = json.loads(rules(client, "routes")[1])
    assert (seen["ping"]["status"], seen["ping"]["body"]) == (200, "pong")
    for unknown in ("unknown", "unknown_action"):
        assert seen[unknown]["status"] == 404
        assert seen[unknown]["body"].rstrip("\n") == "404 page not found"
    assert seen["post_next"]["status"] == 405
    assert seen["get_response"]["status"] == 405


@pytest.mark.parametrize("error_type", ["Whatever", "Function.Custom", "Runtime.Custom", None])
def test_error_body_passes_through_whatever_the_error_type(client, error_type):
    """The error type is sanitised for Lambda's own records only; the caller gets the body as posted."""
    posted = '{"errorMessage": "custom", "errorType": "X", "stackTrace": ["a"]}'
    response, body = rules(client, "error", error_type=error_type, body=posted)
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert body == posted.encode()


def test_error_cause_body_is_re_marshalled_without_the_cause(client):
    posted = {"errorMessage": "m", "errorType": "T", "stackTrace": ["s"], "errorCause": {"paths": ["p"]}}
    response, body = rules(
        client,
        "error",
        error_type="Runtime.Custom",
        body=json.dumps(posted),
        content_type="application/vnd.aws.lambda.error.cause+json",
    )
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body) == {"errorMessage": "m", "errorType": "T", "stackTrace": ["s"]}


def test_response_of_the_largest_allowed_size_is_delivered(client, service):
    response, body = rules(client, "size", size=6291556)
    assert "FunctionError" not in response
    assert len(body) == 6291556
    assert late_report(service, request_id(response))["response"]["status"] == 202


def test_oversized_response_is_413_to_the_runtime_and_too_large_to_the_caller(client, service):
    response, body = rules(client, "size", size=6291557)
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(body)
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert re.fullmatch(
        r"Response payload size( \(6291557 bytes\))? exceeded maximum allowed payload size \(6291556 bytes\)\.",
        error["errorMessage"],
    ), error["errorMessage"]
    seen = late_report(service, request_id(response))["response"]
    assert seen["status"] == 413
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["body"] == (
        '{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).",'
        '"errorType":"RequestEntityTooLarge"}\n'
    )
    assert json.loads(rules(client, "headers")[1])["event"] == {"scenario": "headers"}  # still serving


# -- runtimes as users write them -------------------------------------------------------------------


def test_runtime_probe_function_works_unchanged(client):
    response, body = invoke(client, "runtime-probe", {"probe": True})
    assert "FunctionError" not in response, body
    rid = request_id(response)
    seen = json.loads(body)
    assert seen["next_headers"]["Lambda-Runtime-Aws-Request-Id"] == rid
    assert seen["again"] == rid
    assert seen["wrong_id"]["status"] == 400
    assert seen["init_error_late"]["status"] == 403
    assert (seen["ping"]["status"], seen["ping"]["body"]) == (200, "pong")
    assert seen["unknown"]["status"] == 404
    assert seen["method"]["status"] == 405
    # What it prints after answering stays in its stdout buffer (it never flushes); runtime-rules covers that part.


def test_curl_shell_runtime(client):
    for n in (1, 2):  # the second one is served by the same loop
        response, body = invoke(client, "curl", {"n": n}, LogType="Tail")
        assert "FunctionError" not in response
        assert json.loads(body) == {"echo": {"n": n}, "handler": "curl.handler", "runtime": "shell"}
        assert f"handling {request_id(response)}" in tail(response).splitlines()


# -- awslambdaric and aws-lambda-powertools, unchanged ----------------------------------------------


@pytest.fixture(scope="module")
def vendored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A service over functions that bring their own awslambdaric or powertools."""
    root = tmp_path_factory.mktemp("vendored")
    ric = root / "ric"
    ric.mkdir()
    shutil.copy(FUNCTIONS / "ric" / "app.py", ric / "app.py")
    vendor(ric, "awslambdaric", "simplejson", "snapshot-restore-py")
    bootstrap = ric / "bootstrap"
    bootstrap.write_text('#!/bin/sh\nexec /usr/bin/python3.11 -m awslambdaric "$_HANDLER"\n')
    bootstrap.chmod(0o755)

    powertools = root / "powertools"
    powertools.mkdir()
    shutil.copy(FUNCTIONS / "powertools" / "app.py", powertools / "app.py")
    vendor(
        powertools,
        "aws-lambda-powertools",
        "jmespath",
        "typing-extensions",
        "pydantic",
        "pydantic-core",
        "annotated-types",
        "typing-inspection",
    )

    def function(name: str, handler: str, code: Path, runtime: str) -> dict:
        properties = {"FunctionName": name, "Handler": handler, "CodeUri": str(code), "Runtime": runtime}
        return {"Type": "AWS::Serverless::Function", "Properties": {**properties, "MemorySize": 256, "Timeout": 5}}

    resources = {
        "RicEcho": function("ric-echo", "app.handler", ric, "provided.al2023"),
        "RicFail": function("ric-fail", "app.fail", ric, "provided.al2023"),
        "RicContext": function("ric-context", "app.context_info", ric, "provided.al2023"),
        "PowertoolsApi": function("powertools-api", "app.api", powertools, "python3.11"),
        "PowertoolsParsed": function("powertools-parsed", "app.parsed", powertools, "python3.11"),
    }
    template = root / "template.yaml"
    template.write_text(yaml.safe_dump({"Transform": "AWS::Serverless-2016-10-31", "Resources": resources}))
    service = ServiceProcess(template)
    yield service
    assert service.stop() == 0


def test_awslambdaric_success(vendored):
    response, body = invoke(vendored.client(), "ric-echo", {"hello": "ric"})
    assert "FunctionError" not in response, body
    assert json.loads(body) == {"event": {"hello": "ric"}, "ric": "awslambdaric", "cwd": "/var/task"}


def test_awslambdaric_exception(vendored):
    response, body = invoke(vendored.client(), "ric-fail", {})
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(body)
    assert error["errorType"] == "KeyError"
    assert error["errorMessage"] == "'missing thing'"
    assert error["requestId"] == request_id(response)
    assert any('File "/var/task/app.py"' in frame and "in fail" in frame for frame in error["stackTrace"])


def test_awslambdaric_context(vendored):
    context = {"custom": {"k": "v"}}
    response, body = invoke(
        vendored.client(),
        "ric-context",
        {},
        Qualifier="$LATEST",
        ClientContext=base64.b64encode(json.dumps(context).encode()).decode(),
    )
    assert "FunctionError" not in response, body
    info = json.loads(body)
    assert info["request_id"] == request_id(response)
    assert info["function_name"] == "ric-context"
    assert info["function_version"] == "$LATEST"
    assert info["memory_limit_in_mb"] == "256"
    assert info["invoked_function_arn"] == ARN.format("ric-context") + ":$LATEST"
    assert info["log_group_name"] == "/aws/lambda/ric-context"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", info["log_stream_name"])
    assert 3000 < info["remaining_ms"] <= 5000
    assert info["client_context_custom"] == {"k": "v"}
    assert info["trace_env"].startswith("Root=1-")


API_EVENT = {
    "resource": "/orders/{order_id}",
    "path": "/orders/42",
    "httpMethod": "GET",
    "headers": {"Accept": "application/json"},
    "multiValueHeaders": {"Accept": ["application/json"]},
    "queryStringParameters": None,
    "multiValueQueryStringParameters": None,
    "pathParameters": {"order_id": "42"},
    "stageVariables": None,
    "requestContext": {
        "resourcePath": "/orders/{order_id}",
        "httpMethod": "GET",
        "path": "/prod/orders/42",
        "stage": "prod",
        "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "accountId": "123456789012",
        "apiId": "1234567890",
        "identity": {"sourceIp": "127.0.0.1"},
    },
    "body": None,
    "isBase64Encoded": False,
}


def test_powertools_logger_and_api_gateway_resolver(vendored):
    response, body = invoke(vendored.client(), "powertools-api", API_EVENT, LogType="Tail")
    assert "FunctionError" not in response, body
    result = json.loads(body)
    assert result["statusCode"] == 200
    assert json.loads(result["body"]) == {"order_id": "42"}

    records = []
    for line in tail(response).splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    [record] = [r for r in records if r.get("message") == "fetching order"]
    assert record["level"] == "INFO"
    assert record["service"] == "orders"
    assert record["order_id"] == "42"
    assert record["function_request_id"] == request_id(response)
    assert record["function_name"] == "powertools-api"
    assert record["function_arn"] == ARN.format("powertools-api")
    assert str(record["function_memory_size"]) == "256"
    assert record["cold_start"] is True
    assert record["xray_trace_id"].startswith("1-")
    assert any(r.get("message") == API_EVENT for r in records)  # log_event=True

    second, _ = invoke(vendored.client(), "powertools-api", API_EVENT, LogType="Tail")
    records = [json.loads(line) for line in tail(second).splitlines() if line.startswith("{")]
    assert [r["cold_start"] for r in records if r.get("message") == "fetching order"] == [False]


def test_powertools_event_parser(vendored):
    client = vendored.client()
    response, body = invoke(client, "powertools-parsed", {"id": 7, "items": ["a", "b"]})
    assert "FunctionError" not in response, body
    assert json.loads(body) == {"id": 7, "count": 2}

    response, body = invoke(client, "powertools-parsed", {"id": "seven"})
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body)["errorType"] == "ValidationError"


# -- the protocol on its own: a pipelining runtime (our bootstrap) ------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Sink:
    def __init__(self) -> None:
        self.body = b""

    def write(self, data: bytes) -> bool:
        self.body += data
        return True

    def finish(self, trailers: dict) -> None:
        pass


class _Environment:
    """The environment's side, as far as the protocol calls it."""

    def __init__(self) -> None:
        self.pending: list = []
        self.waiters: list = []
        self.sinks: list[_Sink] = []

    def take_next(self, *, waited=False):
        return self.pending.pop(0) if self.pending else None

    def wait_next(self, callback):
        self.waiters.append(callback)

    def forget_next(self, callback):
        self.waiters.remove(callback)

    def handed(self):
        pass

    def assign(self, invocation):
        """As `Environment.assign`: a waiting /next is called back in this call."""
        self.pending.append(invocation)
        waiters, self.waiters = self.waiters, []
        for callback in waiters:
            callback()

    def open_response(self, request_id, mode, length):
        self.sinks.append(_Sink())
        return self.sinks[-1]


async def test_a_202_waits_for_the_pipelined_next_and_goes_out_with_its_event():
    import asyncio

    from runtime_api.invocation import Invocation
    from runtime_api.runtime import RuntimeAPIProtocol

    env = _Environment()
    protocol = RuntimeAPIProtocol(env)  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    post = b"POST /2018-06-01/runtime/invocation/r-1/response HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    next_ = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n"
    protocol.data_received(post + next_)
    await asyncio.sleep(0.01)
    assert transport.writes == []  # the 202 waits for the event
    assert env.sinks[0].body == b"{}"  # while the response itself was taken at once
    function = type("F", (), {"arn": ARN.format("f")})()
    env.assign(Invocation(function=function, payload=b'{"n":2}', request_id="r-2"))  # type: ignore[arg-type]
    assert len(transport.writes) == 1  # written in the call that assigned it, not a loop turn later
    assert transport.writes[0].startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert b'{"status":"OK"}\nHTTP/1.1 200 OK\r\n' in transport.writes[0]
    assert transport.writes[0].endswith(b'{"n":2}')

    # A runtime that waits for the 202 before its /next is answered at once: in the call that read it.
    protocol.data_received(post.replace(b"r-1", b"r-2"))
    assert transport.writes[-1].startswith(b"HTTP/1.1 202 Accepted\r\n") and len(transport.writes) == 2


async def test_a_refused_response_with_a_pipelined_next_closes_the_connection_instead():
    import asyncio

    from runtime_api.apierror import RuntimeAPIError
    from runtime_api.runtime import RuntimeAPIProtocol

    env = _Environment()

    def refuse(request_id, mode, length):
        raise RuntimeAPIError(400, "InvalidRequestID", "Invalid request ID")

    env.open_response = refuse  # type: ignore[method-assign]
    protocol = RuntimeAPIProtocol(env)  # type: ignore[arg-type]
    transport = _Transport()
    closed: list[bool] = []
    transport.close = lambda: closed.append(True)  # type: ignore[method-assign]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    post = b"POST /2018-06-01/runtime/invocation/r-9/response HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    protocol.data_received(post + b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)
    assert [w[:24] for w in transport.writes] == [b"HTTP/1.1 400 Bad Request"]
    assert closed == [True]  # the /next behind it is not served: no event is taken for a runtime that may stop


async def test_a_waiting_next_whose_connection_closes_takes_no_event():
    import asyncio

    from runtime_api.invocation import Invocation
    from runtime_api.runtime import RuntimeAPIProtocol

    env = _Environment()
    protocol = RuntimeAPIProtocol(env)  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0.01)
    assert len(env.waiters) == 1 and transport.writes == []
    protocol.connection_lost(None)
    assert env.waiters == []
    function = type("F", (), {"arn": ARN.format("f")})()
    invocation = Invocation(function=function, payload=b"{}", request_id="r-3")  # type: ignore[arg-type]
    env.assign(invocation)
    assert env.pending == [invocation] and transport.writes == []  # left for a runtime that asks again


async def test_requests_pipelined_behind_a_waiting_next_are_answered_after_it():
    import asyncio

    from runtime_api.invocation import Invocation
    from runtime_api.runtime import RuntimeAPIProtocol

    env = _Environment()
    protocol = RuntimeAPIProtocol(env)  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(
        b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n" + b"GET /2018-06-01/ping HTTP/1.1\r\n\r\n"
    )
    assert transport.writes == [] and len(env.waiters) == 1  # the ping waits for the /next before it
    function = type("F", (), {"arn": ARN.format("f")})()
    env.assign(Invocation(function=function, payload=b"{}", request_id="r-4"))  # type: ignore[arg-type]
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    await asyncio.sleep(0)  # the ping is answered on the loop's next turn, not in the call that assigned the work
    assert len(transport.writes) == 2 and transport.writes[1].endswith(b"\r\n\r\npong")


async def test_requests_pipelined_behind_an_extension_event_next_wait_for_its_event():
    import asyncio

    from runtime_api.runtime import RuntimeAPIProtocol

    env = _Environment()
    event: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def extension_next(identifier):
        assert identifier == "ext-1"
        return await event

    env.extension_next = extension_next  # type: ignore[attr-defined]
    protocol = RuntimeAPIProtocol(env)  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    wait = b"GET /2020-01-01/extension/event/next HTTP/1.1\r\nLambda-Extension-Identifier: ext-1\r\n\r\n"
    protocol.data_received(wait + b"POST /2020-01-01/extension/event/next HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    await asyncio.sleep(0.01)
    assert transport.writes == []
    event.set_result({"eventType": "SHUTDOWN"})
    await asyncio.sleep(0.01)
    assert len(transport.writes) == 2
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\nLambda-Extension-Event-Identifier: ")
    assert transport.writes[0].endswith(b'{"eventType":"SHUTDOWN"}')
    assert transport.writes[1].startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")  # only a GET waits
