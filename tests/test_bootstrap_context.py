"""bootstrap.context: the LambdaContext a handler receives."""

from __future__ import annotations

import time

import pytest

from bootstrap.context import ClientContext, CognitoIdentity, LambdaContext, make_context
from bootstrap.errors import FaultError


@pytest.fixture(autouse=True)
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/fn")
    monkeypatch.setenv("AWS_LAMBDA_LOG_STREAM_NAME", "2024/05/01/[$LATEST]abc")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")


def test_fields_from_environment_and_headers() -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:fn"
    context = make_context("req-1", "0", arn, None, None, None)
    assert context.aws_request_id == "req-1"
    assert context.log_group_name == "/aws/lambda/fn"
    assert context.log_stream_name == "2024/05/01/[$LATEST]abc"
    assert context.function_name == "fn"
    assert context.memory_limit_in_mb == "512"  # a string, as in Lambda
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn == arn
    assert context.tenant_id is None
    assert context.client_context is None
    assert isinstance(context.identity, CognitoIdentity)
    assert context.identity.cognito_identity_id is None
    assert context.identity.cognito_identity_pool_id is None


def test_missing_arn_is_empty_string() -> None:
    assert make_context("r", None, None, None, None, None).invoked_function_arn == ""


def test_unset_environment_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    assert make_context("r", None, None, None, None, None).memory_limit_in_mb is None


def test_remaining_time() -> None:
    deadline = int(time.time() * 1000) + 2000
    remaining = make_context("r", str(deadline), None, None, None, None).get_remaining_time_in_millis()
    assert 1500 < remaining <= 2000
    past = make_context("r", str(deadline - 10_000), None, None, None, None)
    assert past.get_remaining_time_in_millis() == 0


@pytest.mark.parametrize("deadline", [None, "", "soon"])
def test_no_deadline_means_zero_remaining(deadline: str | None) -> None:
    assert make_context("r", deadline, None, None, None, None).get_remaining_time_in_millis() == 0


def test_client_context_and_identity() -> None:
    client_context = (
        '{"custom": {"a": 1}, "env": {"platform": "ios"}, '
        '"client": {"installation_id": "i", "app_title": "t", "app_version_name": "n", '
        '"app_version_code": "c", "app_package_name": "p"}}'
    )
    identity = '{"cognitoIdentityId": "id", "cognitoIdentityPoolId": "pool"}'
    context = make_context("r", None, None, client_context, identity, "tenant-1")
    assert isinstance(context.client_context, ClientContext)
    assert context.client_context.custom == {"a": 1}
    assert context.client_context.env == {"platform": "ios"}
    client = context.client_context.client
    assert client is not None
    assert (client.installation_id, client.app_title, client.app_version_name) == ("i", "t", "n")
    assert (client.app_version_code, client.app_package_name) == ("c", "p")
    assert context.identity.cognito_identity_id == "id"
    assert context.identity.cognito_identity_pool_id == "pool"
    assert context.tenant_id == "tenant-1"


def test_client_context_without_client() -> None:
    context = make_context("r", None, None, '{"custom": {"k": "v"}}', None, None)
    assert context.client_context is not None
    assert context.client_context.client is None
    assert context.client_context.env is None


@pytest.mark.parametrize(
    ("client_context", "identity", "message"),
    [
        ("{bad", None, "Unable to parse Client Context JSON: Expecting property name enclosed in double quotes"),
        (None, "nope", "Unable to parse Cognito Identity JSON: Expecting value: line 1 column 1 (char 0)"),
        ("[1]", None, "Unable to parse Client Context JSON: not a JSON object"),
    ],
)
def test_bad_json_headers(client_context: str | None, identity: str | None, message: str) -> None:
    with pytest.raises(FaultError) as info:
        make_context("r", None, None, client_context, identity, None)
    assert info.value.error_type == "Runtime.LambdaContextUnmarshalError"
    assert info.value.message.startswith(message)


def test_repr_lists_every_field() -> None:
    context = make_context("req-9", None, "arn", '{"custom": {"a": 1}}', None, "t")
    text = repr(context)
    assert text.startswith("LambdaContext([aws_request_id=req-9,log_group_name=/aws/lambda/fn,")
    for part in (
        "function_name=fn",
        "memory_limit_in_mb=512",
        "function_version=$LATEST",
        "invoked_function_arn=arn",
        "client_context=ClientContext([custom={'a': 1},env=None,client=None])",
        "identity=CognitoIdentity([cognito_identity_id=None,cognito_identity_pool_id=None])",
        "tenant_id=t",
    ):
        assert part in text
    assert text.endswith("])")


def test_log_writes_to_stdout_without_newline(capsys: pytest.CaptureFixture[str]) -> None:
    make_context("r", None, None, None, None, None).log("line")
    make_context("r", None, None, None, None, None).log(42)
    assert capsys.readouterr().out == "line42"


def test_constructor_matches_awslambdaric_positional_order() -> None:
    context = LambdaContext("id", {"custom": {}}, {"cognitoIdentityId": "c"}, 0, "arn", "t")
    assert (context.aws_request_id, context.invoked_function_arn, context.tenant_id) == ("id", "arn", "t")
    assert context.identity.cognito_identity_id == "c"
