"""The control plane through boto3 (and the aws CLI) against the real service: functions created,
read, listed, updated, versioned, aliased, throttled, tagged, configured for Event invocations,
deleted, and kept across a restart. Shapes as reference/invoke-api.md §3 records AWS's."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import urllib.request
import uuid
from collections import Counter

import boto3
import pytest
from botocore.exceptions import WaiterError
from conftest import REPO, TEST_TEMPLATE, ServiceProcess, free_port
from support import aws_cli_environment, invoke, logged_records, package, wait_for, wait_for_port

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
ARN = "arn:aws:lambda:us-east-1:123456789012:function"


def handler_returning(value: object) -> bytes:
    return package(
        "import os\n"
        "def handler(event, context):\n"
        f"    return {{'value': {value!r}, 'version': context.function_version, 'env': os.environ.get('MODE'),\n"
        "            'memory': context.memory_limit_in_mb, 'event': event}\n"
    )


@pytest.fixture(scope="module")
def service():
    running = ServiceProcess(TEST_TEMPLATE, env={"SANDBOX_EVENT_RETRY_DELAY": "0.1"})
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(service):
    return service.client()


def create(client, name: str, zip_bytes: bytes | None = None, **extra: object) -> dict:
    response = client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_bytes if zip_bytes is not None else handler_returning(name)},
        **extra,
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    return response


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def payload(client, name: str, event: object = None, **kwargs: object) -> dict:
    response, raw = invoke(client, name, event if event is not None else {}, **kwargs)
    assert "FunctionError" not in response, raw
    return json.loads(raw)


# -- create and read ---------------------------------------------------------------------------------


def test_create_answers_pending_and_becomes_active_within_two_seconds(client):
    name = unique("created")
    data = handler_returning("one")
    started = time.monotonic()
    created = client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": data},
        Description="made by a test",
        Timeout=7,
        MemorySize=256,
        Environment={"Variables": {"MODE": "test"}},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    assert created["StateReason"] == "The function is being created."
    assert "LastUpdateStatus" not in created
    assert created["FunctionArn"] == f"{ARN}:{name}"
    assert created["CodeSha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert created["CodeSize"] == len(data)
    assert (created["Version"], created["PackageType"], created["Architectures"]) == ("$LATEST", "Zip", ["x86_64"])
    assert (created["Runtime"], created["Handler"], created["Role"]) == ("python3.12", "app.handler", ROLE)
    assert (created["Timeout"], created["MemorySize"], created["Description"]) == (7, 256, "made by a test")
    assert created["Environment"] == {"Variables": {"MODE": "test"}}
    assert created["EphemeralStorage"] == {"Size": 512}
    assert created["TracingConfig"] == {"Mode": "PassThrough"}
    assert created["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    assert created["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    assert len(created["RevisionId"]) == 36
    assert created["LastModified"].endswith("+0000")
    client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    client.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    assert time.monotonic() - started < 4  # the waiters poll once a second: Active by the second poll
    function = client.get_function(FunctionName=name)
    config = function["Configuration"]
    assert (config["State"], config["LastUpdateStatus"]) == ("Active", "Successful")
    assert config["RuntimeVersionConfig"]["RuntimeVersionArn"].startswith("arn:aws:lambda:us-east-1::runtime:")
    assert function["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(function["Code"]["Location"]) as download:
        assert download.read() == data
    assert payload(client, name, {"a": 1}) == {
        "value": "one",
        "version": "$LATEST",
        "env": "test",
        "memory": "256",
        "event": {"a": 1},
    }


def test_create_conflicts_and_validation(client, service):
    name = unique("dup")
    create(client, name)
    with pytest.raises(client.exceptions.ResourceConflictException, match=f"Function already exist: {name}"):
        create(client, name)
    with pytest.raises(client.exceptions.ResourceConflictException):
        create(client, "echo")  # a template function's name
    bad_role = _raw(service, "POST", "/2015-03-31/functions", _body(name=unique("r"), Role="not-a-role"))
    assert bad_role[0] == 400 and bad_role[1] == "ValidationException" and "at 'role'" in bad_role[2]["message"]
    bad_runtime = _raw(service, "POST", "/2015-03-31/functions", _body(name=unique("r"), Runtime="cobol85"))
    assert bad_runtime[:2] == (400, "InvalidParameterValueException")
    assert "Value cobol85 at 'runtime'" in bad_runtime[2]["message"]
    too_long = _raw(service, "POST", "/2015-03-31/functions", _body(name=unique("r"), Timeout=901))
    assert too_long[:2] == (400, "ValidationException")
    assert "less than or equal to 900" in too_long[2]["message"]
    big_env = _body(name=unique("r"), Environment={"Variables": {"X": "y" * 5000}})
    assert _raw(service, "POST", "/2015-03-31/functions", big_env)[:2] == (400, "InvalidParameterValueException")
    # An ImageConfig member of the wrong shape was a 500 (TypeError; found by schemathesis in CI).
    for config in ({"Command": 6889005968346494}, {"EntryPoint": ["a", 1]}, {"WorkingDirectory": 7}):
        image = {"FunctionName": unique("i"), "Role": ROLE, "PackageType": "Image", "ImageConfig": config}
        image["Code"] = {"ImageUri": "app:1"}
        refused = _raw(service, "POST", "/2015-03-31/functions", json.dumps(image).encode())
        assert refused[:2] == (400, "InvalidParameterValueException"), (config, refused)
        assert "ImageConfig." in refused[2]["message"], refused
    not_json = _raw(service, "POST", "/2015-03-31/functions", b"{nope")
    assert not_json[:2] == (400, "InvalidRequestContentException")
    deep = _raw(service, "POST", "/2015-03-31/functions", b"[" * 5000 + b"]" * 5000)  # was a 500 (RecursionError)
    assert deep[:2] == (400, "InvalidRequestContentException")
    # A lone surrogate was stored, and from then on every answer that carried it (GetFunction, ListFunctions)
    # failed to encode: a 500 each time (found by fuzzing). NaN is no JSON either.
    for body in (
        b'{"Description": "a\\ud800"}',
        b'{"Environment": {"Variables": {"K": "\\udfff"}}}',
        b'{"Timeout": NaN}',
    ):
        refused = _raw(service, "PUT", "/2015-03-31/functions/echo/configuration", body)
        assert refused[:2] == (400, "InvalidRequestContentException"), body
    tagged = _raw(service, "POST", f"/2017-03-31/tags/{ARN}:echo", b'{"Tags": {"\\ud800": "v"}}')
    assert tagged[:2] == (400, "InvalidRequestContentException")
    assert client.get_function(FunctionName="echo")["Configuration"]["FunctionName"] == "echo"
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="Could not unzip uploaded file"):
        client.create_function(
            FunctionName=unique("bad"), Runtime="python3.12", Role=ROLE, Handler="a.b", Code={"ZipFile": b"not a zip"}
        )
    escaping = package("x = 1", name="../../escape.py")
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="Could not unzip"):
        client.create_function(
            FunctionName=unique("bad"), Runtime="python3.12", Role=ROLE, Handler="a.b", Code={"ZipFile": escaping}
        )
    assert not (REPO.parent / "escape.py").exists()
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="Function not found"):
        client.get_function(FunctionName=unique("missing"))


def test_unsupported_runtime_is_failed_not_pending(client):
    """A runtime this host cannot run: the function exists, Failed, with the reason (waiters stop)."""
    name = unique("node")
    client.create_function(
        FunctionName=name, Runtime="nodejs20.x", Role=ROLE, Handler="index.handler", Code={"ZipFile": package("x")}
    )
    with pytest.raises(WaiterError, match="terminal failure state"):
        client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    config = client.get_function_configuration(FunctionName=name)
    assert config["State"] == "Failed" and config["StateReasonCode"] == "InvalidRuntime"
    assert "nodejs20.x" in config["StateReason"]


def test_template_functions_are_listed_and_described(client):
    config = client.get_function(FunctionName="echo")["Configuration"]
    assert config["State"] == "Active" and config["Handler"] == "app.echo"
    assert config["Role"].startswith("arn:aws:iam::123456789012:role/") and len(config["CodeSha256"]) == 44
    assert client.get_function_code_signing_config(FunctionName="echo")["CodeSigningConfigArn"] == ""


def test_list_functions_paginates_fifty_at_most(client):
    names = [unique("many") for _ in range(3)]
    for name in names:
        create(client, name)
    pages = list(client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 4}))
    assert len(pages) > 2 and all(len(page["Functions"]) <= 4 for page in pages)
    listed = [f["FunctionName"] for page in pages for f in page["Functions"]]
    assert len(listed) == len(set(listed)) and set(names) <= set(listed) and "echo" in listed
    assert listed == sorted(listed)
    assert all("State" not in f and "LastUpdateStatus" not in f for page in pages for f in page["Functions"])
    everything = client.list_functions(MaxItems=10000)
    assert len(everything["Functions"]) == min(50, len(listed))


# -- updates, versions, aliases ----------------------------------------------------------------------


def test_updates_versions_and_weighted_aliases(client):
    name = unique("versions")
    create(client, name, handler_returning("v1"))
    first = client.publish_version(FunctionName=name, Description="first")
    assert (first["Version"], first["FunctionArn"], first["Description"]) == ("1", f"{ARN}:{name}:1", "first")
    assert client.publish_version(FunctionName=name)["Version"] == "1"  # nothing changed: the same version

    updated = client.update_function_code(FunctionName=name, ZipFile=handler_returning("v2"))
    assert (updated["State"], updated["LastUpdateStatus"]) == ("Active", "InProgress")
    client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    assert payload(client, name)["value"] == "v2"
    second = client.publish_version(FunctionName=name, CodeSha256=updated["CodeSha256"])
    assert second["Version"] == "2"
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="CodeSHA256"):
        client.publish_version(FunctionName=name, CodeSha256="AAAA")
    stale = client.get_function(FunctionName=name)["Configuration"]["RevisionId"]
    client.update_function_configuration(FunctionName=name, Environment={"Variables": {"MODE": "three"}})
    client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    with pytest.raises(client.exceptions.PreconditionFailedException):
        client.update_function_configuration(FunctionName=name, MemorySize=512, RevisionId=stale)

    assert payload(client, name, Qualifier="1") == {
        "value": "v1",
        "version": "1",
        "env": None,
        "memory": "128",
        "event": {},
    }
    assert payload(client, name)["env"] == "three"
    versions = [v["Version"] for v in client.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]

    alias = client.create_alias(
        FunctionName=name, Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}}
    )
    assert alias["AliasArn"] == f"{ARN}:{name}:live"
    seen = Counter()
    for _ in range(40):
        response, raw = invoke(client, name, {}, Qualifier="live")
        seen[(response["ExecutedVersion"], json.loads(raw)["value"])] += 1
    assert set(seen) == {("1", "v1"), ("2", "v2")}, seen
    client.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RoutingConfig={})
    assert client.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "2"
    assert payload(client, name, Qualifier="live")["value"] == "v2"
    assert [a["Name"] for a in client.list_aliases(FunctionName=name)["Aliases"]] == ["live"]
    with pytest.raises(client.exceptions.ResourceConflictException):
        client.delete_function(FunctionName=name, Qualifier="2")  # the alias points at it
    client.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        invoke(client, name, {}, Qualifier="1")
    client.delete_alias(FunctionName=name, Name="live")
    client.delete_function(FunctionName=name)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        invoke(client, name, {})


# -- concurrency, tags, account ------------------------------------------------------------------------


def test_stored_code_another_function_takes_is_not_collected_under_it(client):
    """Code is stored once per content and collected when no version refers to it any more. An update
    away from some code, with a create of that same code right behind it: the collection that follows
    the update must not remove the code the new function is being prepared from."""
    for attempt in range(6):
        shared = handler_returning(f"shared-{attempt}-{uuid.uuid4()}")
        create(client, f"gc-before-{attempt}", shared)
        client.update_function_code(FunctionName=f"gc-before-{attempt}", ZipFile=handler_returning("moved on"))
        create(client, f"gc-after-{attempt}", shared)
        assert json.loads(invoke(client, f"gc-after-{attempt}", {})[1])["value"].startswith("shared-")
    for attempt in range(6):
        client.delete_function(FunctionName=f"gc-before-{attempt}")
        client.delete_function(FunctionName=f"gc-after-{attempt}")


def test_reserved_concurrency_is_enforced_and_accounted(client):
    name = unique("reserved")
    create(client, name)
    unreserved = client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    put = client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert put["ReservedConcurrentExecutions"] == 0
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 0
    with pytest.raises(client.exceptions.TooManyRequestsException) as caught:
        client.invoke(FunctionName=name, Payload=b"{}")
    assert caught.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert client.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    assert client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == unreserved - 5
    assert payload(client, name)["value"] == name
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="below its minimum value"):
        client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=950)
    client.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in client.get_function_concurrency(FunctionName=name)


def test_tags(client):
    name = unique("tagged")
    create(client, name, Tags={"team": "a"})
    arn = f"{ARN}:{name}"
    client.tag_resource(Resource=arn, Tags={"env": "dev"})
    assert client.list_tags(Resource=arn)["Tags"] == {"team": "a", "env": "dev"}
    client.untag_resource(Resource=arn, TagKeys=["team"])
    assert client.list_tags(Resource=arn)["Tags"] == {"env": "dev"}
    assert client.get_function(FunctionName=name)["Tags"] == {"env": "dev"}


def test_account_settings(client):
    settings = client.get_account_settings()
    assert settings["AccountLimit"]["CodeSizeUnzipped"] == 262144000
    assert settings["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert settings["AccountUsage"]["FunctionCount"] >= 1


# -- Event invocations: retries and destinations ----------------------------------------------------------


def test_event_invoke_config_round_trip(client):
    sink = unique("sink")
    create(client, sink)
    failing = unique("failing")
    create(client, failing, package("def handler(event, context):\n    raise ValueError('nope')\n"))
    config = client.put_function_event_invoke_config(
        FunctionName=failing,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": f"{ARN}:{sink}"}},
    )
    assert config["MaximumRetryAttempts"] == 0 and config["FunctionArn"] == f"{ARN}:{failing}:$LATEST"
    updated = client.update_function_event_invoke_config(FunctionName=failing, MaximumEventAgeInSeconds=120)
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (0, 120)
    assert len(client.list_function_event_invoke_configs(FunctionName=failing)["FunctionEventInvokeConfigs"]) == 1
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.put_function_event_invoke_config(
            FunctionName=failing, DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:q"}}
        )


def _failing_with_a_destination(client) -> tuple[str, str]:
    """A function that always fails, with no retry, and an OnFailure destination that prints its records."""
    sink = unique("sink")
    create(
        client, sink, package("import json\ndef handler(event, context):\n    print('RECORD ' + json.dumps(event))\n")
    )
    failing = unique("failing")
    create(client, failing, package("def handler(event, context):\n    raise ValueError('nope')\n"))
    client.put_function_event_invoke_config(
        FunctionName=failing, MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": f"{ARN}:{sink}"}}
    )
    return sink, failing


def test_destination_gets_the_record_after_the_only_attempt(client, service):
    sink, failing = _failing_with_a_destination(client)
    client.invoke(FunctionName=failing, InvocationType="Event", Payload=b'{"order": 7}')
    [record] = wait_for(lambda: logged_records(service, sink), 10, "the failure record at the destination")
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestContext"]["functionArn"] == f"{ARN}:{failing}:$LATEST"
    assert record["requestPayload"] == {"order": 7}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    # A destination that is not an object, or an ARN that is not a string, was a 500 (found by schemathesis).
    for config in (
        {"OnFailure": "x"},
        {"OnSuccess": {"Destination": ["arn"]}},
        {"OnFailure": {"Destination": {"a": 1}}},
    ):
        body = json.dumps({"DestinationConfig": config}).encode()
        refused = _raw(service, "PUT", f"/2019-09-25/functions/{failing}/event-invoke-config", body)
        assert refused[:2] == (400, "InvalidParameterValueException"), (config, refused)
    client.delete_function_event_invoke_config(FunctionName=failing)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_event_invoke_config(FunctionName=failing)


def test_a_payload_nested_past_the_stdlib_parser_reaches_the_destination_as_text(client, service):
    # Found by fuzzing: Invoke (orjson) takes 1024 levels, the record's stdlib parser raised RecursionError.
    sink, failing = _failing_with_a_destination(client)
    nested = b"[" * 1010 + b"]" * 1010
    client.invoke(FunctionName=failing, InvocationType="Event", Payload=nested)
    [record] = wait_for(lambda: logged_records(service, sink), 10, "the failure record at the destination")
    assert record["requestPayload"] == nested.decode()


# -- persistence -----------------------------------------------------------------------------------------


def test_functions_survive_a_restart(start_service, tmp_path):
    data_dir = tmp_path / "data"
    first = start_service(TEST_TEMPLATE, env={"SANDBOX_DATA_DIR": str(data_dir)})
    client = first.client()
    name = unique("kept")
    create(client, name, handler_returning("old"), Tags={"k": "v"})
    client.publish_version(FunctionName=name)
    client.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    client.update_function_code(FunctionName=name, ZipFile=handler_returning("new"))
    client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    before = client.get_function(FunctionName=name)["Configuration"]
    assert first.stop() == 0

    second = start_service(TEST_TEMPLATE, env={"SANDBOX_DATA_DIR": str(data_dir)})
    client = second.client()
    after = client.get_function(FunctionName=name)["Configuration"]
    for key in ("CodeSha256", "RevisionId", "LastModified", "Role"):
        assert after[key] == before[key], key
    assert payload(client, name)["value"] == "new"
    assert payload(client, name, Qualifier="prod")["value"] == "old"
    assert client.list_tags(Resource=f"{ARN}:{name}")["Tags"] == {"k": "v"}
    client.delete_function(FunctionName=name)
    assert not list((data_dir / "functions").glob("*.json"))
    assert [p for p in (data_dir / "code").iterdir()] == []  # unreferenced code is removed


# -- the aws CLI -------------------------------------------------------------------------------------------


def test_aws_cli_manages_functions(service, tmp_path):
    archive = tmp_path / "function.zip"
    archive.write_bytes(handler_returning("cli"))
    name = unique("cli")
    environment = aws_cli_environment(tmp_path)

    def aws(*args: str) -> str:
        argv = [str(REPO / ".venv/bin/aws"), "--endpoint-url", service.url, "--region", "us-east-1", "lambda", *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    options = ["--function-name", name, "--runtime", "python3.12", "--role", ROLE, "--handler", "app.handler"]
    created = json.loads(aws("create-function", *options, "--zip-file", f"fileb://{archive}"))
    assert created["State"] == "Pending"
    aws("wait", "function-active-v2", "--function-name", name)
    assert json.loads(aws("get-function", "--function-name", name))["Configuration"]["State"] == "Active"
    aws("invoke", "--function-name", name, str(tmp_path / "out.json"))
    assert json.loads((tmp_path / "out.json").read_text())["value"] == "cli"
    names = json.loads(aws("list-functions"))["Functions"]
    assert name in [f["FunctionName"] for f in names]
    aws("delete-function", "--function-name", name)
    with pytest.raises(AssertionError):
        aws("get-function", "--function-name", name)


# -- helpers -------------------------------------------------------------------------------------------------


def _body(*, name: str, **overrides: object) -> bytes:
    body = {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": base64.b64encode(handler_returning(1)).decode()},
        **overrides,
    }
    return json.dumps(body).encode()


def _raw(service: ServiceProcess, method: str, path: str, body: bytes) -> tuple[int, str, dict]:
    request = urllib.request.Request(f"{service.url}{path}", data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, "", json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("x-amzn-ErrorType", ""), json.loads(error.read() or b"{}")


# -- S3 code locations, paginators and the other waiters ----------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on this host: the service (not the sandbox) fetches S3Bucket/S3Key from it."""
    port = free_port()
    server = subprocess.Popen(
        [str(REPO / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, 30, "the moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def test_code_from_s3(start_service, s3_server):
    service = start_service(
        TEST_TEMPLATE,
        env={
            "SANDBOX_S3_ENDPOINT": s3_server,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    s3 = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    s3.create_bucket(Bucket="code")
    s3.put_object(Bucket="code", Key="v1.zip", Body=handler_returning("from-s3"))
    s3.put_object(Bucket="code", Key="v2.zip", Body=handler_returning("from-s3-again"))
    client = service.client()
    name = unique("s3")
    client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"S3Bucket": "code", "S3Key": "v1.zip"},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    assert payload(client, name)["value"] == "from-s3"
    client.update_function_code(FunctionName=name, S3Bucket="code", S3Key="v2.zip")
    client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    assert payload(client, name)["value"] == "from-s3-again"
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="S3 Error Code: NoSuchKey"):
        client.update_function_code(FunctionName=name, S3Bucket="code", S3Key="missing.zip")


def test_paginators_and_the_first_generation_waiters(client):
    name = unique("pages")
    create(client, name)
    for value in range(3):
        client.update_function_configuration(FunctionName=name, Description=f"d{value}")
        client.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
        client.publish_version(FunctionName=name)
    client.get_waiter("function_active").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    client.get_waiter("published_version_active").wait(
        FunctionName=name, Qualifier="3", WaiterConfig={"Delay": 1, "MaxAttempts": 5}
    )
    pages = list(
        client.get_paginator("list_versions_by_function").paginate(FunctionName=name, PaginationConfig={"PageSize": 2})
    )
    assert [len(page["Versions"]) for page in pages] == [2, 2]
    versions = [v["Version"] for page in pages for v in page["Versions"]]
    assert versions == ["$LATEST", "1", "2", "3"]
    assert pages[0]["Versions"][0]["FunctionArn"] == f"{ARN}:{name}:$LATEST"
    for alias in ("a", "b", "c"):
        client.create_alias(FunctionName=name, Name=alias, FunctionVersion="1")
    pages = list(client.get_paginator("list_aliases").paginate(FunctionName=name, PaginationConfig={"PageSize": 2}))
    assert [[a["Name"] for a in page["Aliases"]] for page in pages] == [["a", "b"], ["c"]]
    every = client.get_paginator("list_functions").paginate(FunctionVersion="ALL")
    arns = [f["FunctionArn"] for page in every for f in page["Functions"]]
    assert [arn for arn in arns if arn.startswith(f"{ARN}:{name}:")] == [
        f"{ARN}:{name}:{version}" for version in ("$LATEST", "1", "2", "3")
    ]
