"""bootstrap.invoke and bootstrap.errors: one invocation end to end against a recording client."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from bootstrap.client import Invocation
from bootstrap.errors import make_error
from bootstrap.handler import Handler, load_handler
from bootstrap.invoke import handle_invocation
from bootstrap.logs import format_error_text
from bootstrap.marshalling import JsonCodec

NBSP = "\u00a0"


class RecordingStdout(io.StringIO):
    """Remembers how much had been flushed, so a post can check that output went first."""

    flushed = 0

    def flush(self) -> None:
        self.flushed = len(self.getvalue())


class RecordingClient:
    def __init__(self, stdout: RecordingStdout) -> None:
        self.stdout = stdout
        self.posts: list[tuple[str, str, bytes, str]] = []

    def post_response(self, request_id: str, body: bytes, content_type: str) -> None:
        assert self.stdout.flushed == len(self.stdout.getvalue()), "output must be flushed before posting"
        self.posts.append(("response", request_id, body, content_type))

    def post_error(self, request_id: str, body: bytes, error_type: str) -> None:
        assert self.stdout.flushed == len(self.stdout.getvalue()), "output must be flushed before posting"
        self.posts.append(("error", request_id, body, error_type))


@pytest.fixture
def stdout() -> RecordingStdout:
    return RecordingStdout()  # becomes sys.stdout during run() (pytest's capture owns it otherwise)


@pytest.fixture
def client(stdout: RecordingStdout) -> RecordingClient:
    return RecordingClient(stdout)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writes a handler module and loads `<module>.handler`; returns (Handler, path)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)

    def make(source: str) -> tuple[Handler, Path]:
        name = f"app_{uuid.uuid4().hex[:12]}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return load_handler(f"{name}.handler"), path

    yield make
    for name in set(sys.modules) - before:
        del sys.modules[name]


def invocation(body: bytes = b"{}", content_type: str | None = "application/json", **headers: str) -> Invocation:
    fields = {"lambda-runtime-aws-request-id": "req-1"}
    if content_type is not None:
        fields["content-type"] = content_type
    for name, value in headers.items():
        fields["lambda-runtime-" + name.replace("_", "-").lower()] = value
    return Invocation(fields, body)


def run(inv: Invocation, handler: Handler, client: RecordingClient, *, json_logs: bool = False) -> None:
    with contextlib.redirect_stdout(client.stdout):
        handle_invocation(inv, handler, client, JsonCodec(), json_logs)  # type: ignore[arg-type]


def test_success_posts_json_after_flushing_output(app, client: RecordingClient, stdout: RecordingStdout) -> None:
    handler, _ = app(
        """
        def handler(event, context):
            print("hello", event["n"])
            return {"n": event["n"] + 1, "id": context.aws_request_id}
        """
    )
    run(invocation(b'{"n": 1}'), handler, client)
    assert client.posts == [("response", "req-1", b'{"n": 2, "id": "req-1"}', "application/json")]
    assert stdout.getvalue() == "hello 1\n"


def test_one_parameter_handler_gets_the_event_only(app, client: RecordingClient) -> None:
    handler, _ = app("def handler(event):\n    return event\n")
    run(invocation(b'"x"'), handler, client)
    assert client.posts == [("response", "req-1", b'"x"', "application/json")]


def test_non_json_content_type_passes_raw_bytes_and_bytes_go_back_raw(app, client: RecordingClient) -> None:
    handler, _ = app("def handler(event, context):\n    return event[::-1]\n")
    run(invocation(b"abc", "text/plain"), handler, client)
    assert client.posts == [("response", "req-1", b"cba", "application/unknown")]


def test_exception_posts_error_with_user_frames_only(app, client: RecordingClient, stdout) -> None:
    handler, path = app(
        """
        def handler(event, context):
            helper()

        def helper():
            raise ValueError("boom")
        """
    )
    run(invocation(), handler, client)
    kind, request_id, body, error_type = client.posts[0]
    assert (kind, request_id, error_type) == ("error", "req-1", "ValueError")
    trace = [
        f'  File "{path}", line 3, in handler\n    helper()\n',
        f'  File "{path}", line 6, in helper\n    raise ValueError("boom")\n',
    ]
    assert json.loads(body) == {
        "errorMessage": "boom",
        "errorType": "ValueError",
        "requestId": "req-1",
        "stackTrace": trace,
    }
    assert list(json.loads(body)) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert stdout.getvalue() == (
        "[ERROR] ValueError: boom\rTraceback (most recent call last):\r"
        f'{NBSP * 2}File "{path}", line 3, in handler\r{NBSP * 4}helper()\r'
        f'{NBSP * 2}File "{path}", line 6, in helper\r{NBSP * 4}raise ValueError("boom")\n'
    )


def test_stack_trace_has_no_position_markers(app, client: RecordingClient) -> None:
    handler, path = app("def handler(event, context):\n    return event['a'] + 1 / 0\n")
    run(invocation(b'{"a": 1}'), handler, client)
    error = json.loads(client.posts[0][2])
    assert error["errorType"] == "ZeroDivisionError"
    assert error["stackTrace"] == [f"  File \"{path}\", line 2, in handler\n    return event['a'] + 1 / 0\n"]


def test_error_log_in_json_mode(app, client: RecordingClient, stdout) -> None:
    handler, _ = app("def handler(event, context):\n    raise KeyError('k')\n")
    run(invocation(), handler, client, json_logs=True)
    line = json.loads(stdout.getvalue())
    assert list(line) == ["timestamp", "log_level", "errorMessage", "errorType", "requestId", "stackTrace"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line["timestamp"])
    assert line["log_level"] == "ERROR"
    assert line["errorType"] == "KeyError" and line["errorMessage"] == "'k'"
    assert stdout.getvalue().endswith("}\n") and stdout.getvalue().count("\n") == 1


def test_unserialisable_result_is_marshal_error(app, client: RecordingClient, stdout) -> None:
    handler, _ = app("def handler(event, context):\n    return {1, 2}\n")
    run(invocation(), handler, client)
    assert client.posts == [
        (
            "error",
            "req-1",
            b'{"errorMessage": "Unable to marshal response: Object of type set is not JSON serializable", '
            b'"errorType": "Runtime.MarshalError", "requestId": "req-1", "stackTrace": []}',
            "Runtime.MarshalError",
        )
    ]
    assert stdout.getvalue() == (
        "[ERROR] Runtime.MarshalError: Unable to marshal response: Object of type set is not JSON serializable"
        "\rTraceback (most recent call last):\n"
    )


def test_bad_event_is_unmarshal_error_and_handler_not_called(app, client: RecordingClient) -> None:
    handler, _ = app("def handler(event, context):\n    raise AssertionError('called')\n")
    run(invocation(b""), handler, client)
    error = json.loads(client.posts[0][2])
    assert error["errorType"] == "Runtime.UnmarshalError"
    assert error["errorMessage"] == "Unable to unmarshal input: Expecting value: line 1 column 1 (char 0)"


def test_bad_client_context_is_context_unmarshal_error(app, client: RecordingClient) -> None:
    handler, _ = app("def handler(event, context):\n    raise AssertionError('called')\n")
    run(invocation(Client_Context="{nope"), handler, client)
    assert client.posts[0][3] == "Runtime.LambdaContextUnmarshalError"
    error = json.loads(client.posts[0][2])
    assert error["errorMessage"].startswith("Unable to parse Client Context JSON: Expecting property name")


def test_trace_id_set_then_removed(app, client: RecordingClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "stale")
    handler, _ = app("import os\ndef handler(event, context):\n    return os.environ.get('_X_AMZN_TRACE_ID')\n")
    run(invocation(Trace_Id="Root=1-abc"), handler, client)
    run(invocation(), handler, client)
    assert [post[2] for post in client.posts] == [b'"Root=1-abc"', b"null"]
    assert "_X_AMZN_TRACE_ID" not in os.environ


def test_context_from_headers(app, client: RecordingClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
    handler, _ = app(
        """
        def handler(event, context):
            return [context.invoked_function_arn, context.memory_limit_in_mb, context.tenant_id,
                    context.client_context.custom, context.identity.cognito_identity_id]
        """
    )
    headers = {
        "Invoked_Function_Arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
        "Aws_Tenant_Id": "tenant-7",
        "Client_Context": '{"custom": {"k": "v"}}',
        "Cognito_Identity": '{"cognitoIdentityId": "id-1"}',
    }
    run(invocation(**headers), handler, client)
    assert json.loads(client.posts[0][2]) == [
        "arn:aws:lambda:us-east-1:123456789012:function:f",
        "256",
        "tenant-7",
        {"k": "v"},
        "id-1",
    ]


def test_error_text_format_edge_cases() -> None:
    assert format_error_text(make_error("", "Type", None)) == "[ERROR] Type\rTraceback (most recent call last):\n"
    assert format_error_text(make_error("msg", "", [])) == "[ERROR] msg\rTraceback (most recent call last):\n"
    assert format_error_text({"errorType": "T", "errorMessage": "m"}) == "[ERROR] T: m\n"
    text = format_error_text(make_error("m", "T", ["", "  a\n    b\n"]))
    assert text == f"[ERROR] T: m\rTraceback (most recent call last):\r\r{NBSP * 2}a\r{NBSP * 4}b\n"


def test_unprintable_exception_message(app, client: RecordingClient) -> None:
    handler, _ = app(
        """
        class Weird(Exception):
            def __str__(self):
                raise RuntimeError("no")

        def handler(event, context):
            raise Weird()
        """
    )
    run(invocation(), handler, client)
    error = json.loads(client.posts[0][2])
    assert error["errorType"] == "Weird"
    assert error["errorMessage"] == "<unprintable Weird object>"
