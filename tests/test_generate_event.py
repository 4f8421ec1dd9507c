"""`sandbox-runtime generate-event SERVICE EVENT [options]`, run as a real subprocess.

Every event must be what Lambda delivers: each one is checked against the event-source data classes
and the pydantic models of aws-lambda-powertools, and the options must land in the right fields with
the service's encoding (S3 keys URL-encoded, Kinesis data base64, SQS bodies as sent with their MD5).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEvent,
    APIGatewayProxyEventV2,
    DynamoDBStreamEvent,
    EventBridgeEvent,
    KinesisStreamEvent,
    S3Event,
    SNSEvent,
    SQSEvent,
)
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
    DynamoDBStreamModel,
    EventBridgeModel,
    KinesisDataStreamModel,
    S3Model,
    SnsModel,
    SqsModel,
)
from conftest import _UID_BLOCK, BUNDLED_TEMPLATE, REPO, _uid_blocks, sandbox_processes
from support import Result

GENERATE = [sys.executable, "-m", "runtime_api", "generate-event"]
EVENTS = {
    ("apigateway", "aws-proxy"): (APIGatewayProxyEvent, APIGatewayProxyEventModel),
    ("apigateway", "http-api-proxy"): (APIGatewayProxyEventV2, APIGatewayProxyEventV2Model),
    ("s3", "put"): (S3Event, S3Model),
    ("s3", "delete"): (S3Event, S3Model),
    ("sqs", "receive-message"): (SQSEvent, SqsModel),
    ("sns", "notification"): (SNSEvent, SnsModel),
    ("dynamodb", "update"): (DynamoDBStreamEvent, DynamoDBStreamModel),
    ("cloudwatch", "scheduled-event"): (EventBridgeEvent, EventBridgeModel),
    ("kinesis", "get-records"): (KinesisStreamEvent, KinesisDataStreamModel),
}


def _environ() -> dict[str, str]:
    # No SANDBOX_* setting at all, and a template that does not exist: generate-event needs none.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
    environment["SANDBOX_TEMPLATE"] = "/nonexistent/template.yaml"
    return environment


def _run(args: tuple[str, ...], cwd: Path) -> Result:
    process = subprocess.run([*GENERATE, *args], capture_output=True, env=_environ(), cwd=cwd, timeout=60)
    return Result(process.returncode, process.stdout.decode(), process.stderr.decode())


def generate_all(*commands: tuple[str, ...], cwd: Path | None = None) -> list[Result]:
    """Run `generate-event ARGS...` for each command, two at a time (this machine has two cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: _run(args, cwd or REPO), commands))


def generate(*args: str) -> Result:
    return generate_all(args)[0]


def event_of(result: Result) -> dict[str, Any]:
    """The event printed: exit 0, pretty JSON (2-space indent) on stdout and nothing on stderr."""
    assert result.returncode == 0, str(result)
    assert result.stderr == "", str(result)
    event = json.loads(result.stdout)
    assert result.stdout == json.dumps(event, indent=2, ensure_ascii=False) + "\n"
    assert isinstance(event, dict)
    return event


def validated(service: str, event_name: str, event: dict[str, Any]) -> Any:
    """The event as the powertools data class, after the strict pydantic model accepted it."""
    data_class, model = EVENTS[service, event_name]
    model.model_validate(event)
    return data_class(event)


def assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.returncode == 2, str(result)
    assert result.stdout == "", str(result)
    assert "Traceback" not in result.stderr, str(result)
    for fragment in fragments:
        assert fragment in result.stderr, str(result)


# -- every event -------------------------------------------------------------------------------------------


def test_every_event_with_its_defaults_parses_with_powertools(tmp_path):
    # From a directory without a template, with SANDBOX_TEMPLATE pointing nowhere: no service is involved.
    results = generate_all(*EVENTS, cwd=tmp_path)
    for (service, event_name), result in zip(EVENTS, results, strict=True):
        event = validated(service, event_name, event_of(result))
        assert isinstance(event.raw_event, dict), (service, event_name)
    again = generate("s3", "put")
    assert again.stdout == results[list(EVENTS).index(("s3", "put"))].stdout  # the same event every time


def test_default_events_carry_the_sam_defaults():
    proxy, http_api, put, delete, sqs, sns, dynamodb, scheduled, kinesis = (
        validated(service, event_name, event_of(result))
        for (service, event_name), result in zip(EVENTS, generate_all(*EVENTS), strict=True)
    )
    assert proxy.http_method == "POST" and proxy.path == "/path/to/resource" and proxy.resource == "/{proxy+}"
    assert proxy.path_parameters == {"proxy": "path/to/resource"}
    assert proxy.json_body == {"message": "hello world"} and proxy.is_base64_encoded is False
    assert proxy.request_context.stage == "prod" and proxy.request_context.account_id == "123456789012"
    assert http_api["version"] == "2.0" and http_api.route_key == "$default"
    assert http_api.raw_path == "/path/to/resource" and http_api.request_context.stage == "$default"
    assert put.bucket_name == "example-bucket" and put.object_key == "test/key"
    assert put.record.aws_region == "us-east-1"
    assert delete.object_key == "test/key"
    assert next(sqs.records).body == "Hello from SQS!"
    assert next(sqs.records).event_source_arn == "arn:aws:sqs:us-east-1:123456789012:MyQueue"
    assert sns.record.sns.topic_arn == "arn:aws:sns:us-east-1:123456789012:ExampleTopic"
    assert (sns.record.sns.subject, sns.sns_message) == ("example subject", "example message")
    assert all(":table/ExampleTableWithStream/stream/" in record.event_source_arn for record in dynamodb.records)
    assert scheduled.resources == ["arn:aws:events:us-east-1:123456789012:rule/ExampleRule"]
    assert next(kinesis.records).kinesis.data_as_text() == "Hello, this is a test 123."


# -- API Gateway -------------------------------------------------------------------------------------------


def test_apigateway_aws_proxy_options():
    get, post_text, no_body = generate_all(
        (
            "apigateway",
            "aws-proxy",
            "--method",
            "get",
            "--path",
            "items/42",
            "--resource",
            "/items/{id}",
            "--query",
            "?a=1&b=x%20y&a=3",
            "--stage",
            "dev",
            "--region",
            "eu-west-1",
            "--account-id",
            "111122223333",
        ),
        ("apigateway", "aws-proxy", "--body", "plain text, not JSON", "--path", "/", "--resource", "/"),
        ("apigateway", "aws-proxy", "--method", "PUT", "--body", ""),
    )
    event = validated("apigateway", "aws-proxy", raw := event_of(get))
    assert event.http_method == "GET" and event.path == "/items/42" and event.resource == "/items/{id}"
    assert event.path_parameters == {"id": "42"}
    assert event.query_string_parameters == {"a": "3", "b": "x y"}  # the last value of a repeated name
    assert event.multi_value_query_string_parameters == {"a": ["1", "3"], "b": ["x y"]}
    assert raw["body"] is None and "Content-Type" not in event.headers  # no body for GET by default
    assert raw["stageVariables"] is None and raw["isBase64Encoded"] is False
    assert event.multi_value_headers == {name: [value] for name, value in event.headers.items()}
    context = event.request_context
    assert (context.stage, context.path, context.http_method) == ("dev", "/dev/items/42", "GET")
    assert (context.resource_path, context.account_id) == ("/items/{id}", "111122223333")
    assert context.domain_name.endswith(".execute-api.eu-west-1.amazonaws.com")
    assert event.headers["Host"] == context.domain_name
    assert context.identity.source_ip and context.request_time_epoch > 0

    event = validated("apigateway", "aws-proxy", raw := event_of(post_text))
    assert raw["body"] == "plain text, not JSON" and event.decoded_body == "plain text, not JSON"
    assert event.headers["Content-Type"].startswith("text/plain")
    assert (raw["path"], raw["resource"], raw["pathParameters"]) == ("/", "/", None)
    assert raw["queryStringParameters"] is None and raw["multiValueQueryStringParameters"] is None

    raw = event_of(no_body)
    validated("apigateway", "aws-proxy", raw)
    assert raw["httpMethod"] == "PUT" and raw["body"] is None


def test_apigateway_http_api_proxy_options():
    routed, default = generate_all(
        (
            "apigateway",
            "http-api-proxy",
            "--method",
            "DELETE",
            "--path",
            "/users/7/files/a/b.txt",
            "--route",
            "/users/{id}/files/{proxy+}",
            "--query",
            "tag=x&tag=y&q=%C3%BC",
            "--stage",
            "prod",
            "--region",
            "cn-north-1",
        ),
        ("apigateway", "http-api-proxy", "--body", '{"name": "Ada"}'),
    )
    event = validated("apigateway", "http-api-proxy", raw := event_of(routed))
    assert raw["version"] == "2.0" and event.route_key == "DELETE /users/{id}/files/{proxy+}"
    assert event.raw_path == "/prod/users/7/files/a/b.txt"  # a named stage is part of the path
    assert event.raw_query_string == "tag=x&tag=y&q=%C3%BC"
    assert event.query_string_parameters == {"tag": "x,y", "q": "ü"}  # repeated names joined with commas
    assert event.path_parameters == {"id": "7", "proxy": "a/b.txt"}
    assert "body" not in raw and raw["isBase64Encoded"] is False
    http = event.request_context.http
    assert (http.method, http.path, http.protocol) == ("DELETE", "/prod/users/7/files/a/b.txt", "HTTP/1.1")
    assert event.request_context.domain_name == "a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn"
    assert all(name == name.lower() for name in event.headers)  # HTTP APIs lower-case header names

    event = validated("apigateway", "http-api-proxy", raw := event_of(default))
    assert event.json_body == {"name": "Ada"} and event.request_context.http.method == "POST"
    assert raw["headers"]["content-type"] == "application/json"
    assert raw["headers"]["content-length"] == str(len(raw["body"].encode()))
    assert raw["rawQueryString"] == "" and "queryStringParameters" not in raw and "pathParameters" not in raw


# -- S3, SQS, SNS ----------------------------------------------------------------------------------------------


def test_s3_put_and_delete_url_encode_the_key():
    key = "photos/2025 trip/ü=1+2&x.jpg"
    put, delete = generate_all(
        ("s3", "put", "--bucket", "my-bucket", "--key", key, "--region", "eu-central-1", "--size", "42"),
        ("s3", "delete", "--bucket", "my-bucket", "--key", key, "--region", "us-gov-west-1"),
    )
    event = validated("s3", "put", raw := event_of(put))
    encoded = raw["Records"][0]["s3"]["object"]["key"]
    assert encoded == quote_plus(key, safe="/") == "photos/2025+trip/%C3%BC%3D1%2B2%26x.jpg"
    assert event.object_key == key  # powertools decodes it back
    record = event.record
    assert (record.event_name, record.aws_region, record.event_source) == (
        "ObjectCreated:Put",
        "eu-central-1",
        "aws:s3",
    )
    assert (record.s3.bucket.name, record.s3.bucket.arn) == ("my-bucket", "arn:aws:s3:::my-bucket")
    assert record.s3.get_object.size == 42 and isinstance(raw["Records"][0]["s3"]["object"]["size"], int)
    assert len(record.s3.get_object.etag) == 32

    event = validated("s3", "delete", raw := event_of(delete))
    assert event.record.event_name == "ObjectRemoved:Delete" and event.object_key == key
    assert set(raw["Records"][0]["s3"]["object"]) == {"key", "sequencer"}  # no size or ETag for a delete
    assert event.record.s3.bucket.arn == "arn:aws-us-gov:s3:::my-bucket"


def test_sqs_body_is_sent_as_given_with_its_md5():
    body = '{"order": 17, "note": "ünïcode \\" quote"}'
    standard, fifo = generate_all(
        ("sqs", "receive-message", "--queue-name", "orders", "--body", body, "--region", "ap-southeast-2"),
        ("sqs", "receive-message", "--queue-name", "orders.fifo", "--account-id", "210987654321"),
    )
    event = validated("sqs", "receive-message", event_of(standard))
    record = next(event.records)
    assert record.body == body and record.json_body == {"order": 17, "note": 'ünïcode " quote'}
    assert record.md5_of_body == hashlib.md5(body.encode()).hexdigest()
    assert record.event_source_arn == "arn:aws:sqs:ap-southeast-2:123456789012:orders"
    assert record.queue_url == "https://sqs.ap-southeast-2.amazonaws.com/123456789012/orders"
    assert record.aws_region == "ap-southeast-2" and record.attributes.message_group_id is None

    record = next(validated("sqs", "receive-message", event_of(fifo)).records)
    assert record.event_source_arn == "arn:aws:sqs:us-east-1:210987654321:orders.fifo"
    assert record.attributes.message_group_id and record.attributes.message_deduplication_id
    assert record.attributes.sequence_number


def test_sns_notification_options():
    with_subject, without = generate_all(
        ("sns", "notification", "--topic", "alerts", "--subject", "Disk full", "--message", '{"disk": "/"}'),
        ("sns", "notification", "--subject", "", "--region", "eu-west-3", "--account-id", "999988887777"),
    )
    event = validated("sns", "notification", event_of(with_subject))
    sns = event.record.sns
    assert (sns.subject, sns.message, sns.get_type) == ("Disk full", '{"disk": "/"}', "Notification")
    assert sns.topic_arn == "arn:aws:sns:us-east-1:123456789012:alerts"
    assert event.record.event_subscription_arn.startswith(sns.topic_arn + ":")
    assert sns.unsubscribe_url.startswith("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe")
    assert len(base64.b64decode(sns.signature)) == 256

    sns = validated("sns", "notification", event_of(without)).record.sns
    assert sns.subject is None and sns.topic_arn == "arn:aws:sns:eu-west-3:999988887777:ExampleTopic"


# -- DynamoDB, EventBridge, Kinesis -----------------------------------------------------------------------------


def test_dynamodb_update_has_typed_images():
    event = validated(
        "dynamodb", "update", event_of(generate("dynamodb", "update", "--table", "Orders", "--region", "us-west-2"))
    )
    insert, modify, remove = event.records
    assert [record.event_name.name for record in event.records] == ["INSERT", "MODIFY", "REMOVE"]
    for record in event.records:
        assert record.aws_region == "us-west-2" and record.event_source == "aws:dynamodb"
        assert record.event_source_arn.startswith("arn:aws:dynamodb:us-west-2:123456789012:table/Orders/stream/")
        assert record.dynamodb.keys == {"Id": Decimal(101)}
        assert record.dynamodb.stream_view_type.name == "NEW_AND_OLD_IMAGES"
    assert insert.dynamodb.old_image == {} and remove.dynamodb.new_image == {}
    assert insert.dynamodb.new_image == modify.dynamodb.old_image
    assert modify.dynamodb.new_image == {
        "Id": Decimal(101),
        "Message": "This item has changed",
        "Tags": {"blue", "changed"},
        "Active": True,
        "Details": {"Owner": "ada", "Count": Decimal(2), "Note": None},
        "Scores": [Decimal("9.5"), Decimal(7)],
    }
    assert remove.dynamodb.old_image == modify.dynamodb.new_image


def test_cloudwatch_scheduled_event_options():
    event = validated(
        "cloudwatch",
        "scheduled-event",
        raw := event_of(generate("cloudwatch", "scheduled-event", "--rule", "nightly", "--region", "eu-north-1")),
    )
    assert (event.detail_type, event.source, event.detail) == ("Scheduled Event", "aws.events", {})
    assert (event.region, event.account) == ("eu-north-1", "123456789012")
    assert event.resources == ["arn:aws:events:eu-north-1:123456789012:rule/nightly"]
    assert raw["version"] == "0" and raw["time"].endswith("Z")


def test_kinesis_data_is_base64_encoded():
    data = '{"temperature": 21.5, "unit": "°C"}'
    event = validated(
        "kinesis",
        "get-records",
        raw := event_of(
            generate(
                "kinesis",
                "get-records",
                "--data",
                data,
                "--partition-key",
                "sensor-9",
                "--sequence",
                "12345678901234567890",
                "--stream",
                "readings",
                "--region",
                "sa-east-1",
            )
        ),
    )
    payload = raw["Records"][0]["kinesis"]
    assert payload["data"] == base64.b64encode(data.encode()).decode()
    record = next(event.records)
    assert record.kinesis.data_as_text() == data and record.kinesis.data_as_json()["unit"] == "°C"
    assert (record.kinesis.partition_key, record.kinesis.sequence_number) == ("sensor-9", "12345678901234567890")
    assert record.event_id == "shardId-000000000000:12345678901234567890"
    assert record.event_source_arn == "arn:aws:kinesis:sa-east-1:123456789012:stream/readings"
    assert isinstance(payload["approximateArrivalTimestamp"], float)


# -- listings, help and errors ------------------------------------------------------------------------------------


def test_listings():
    services, s3, apigateway, help_text = generate_all(
        (), ("s3",), ("apigateway",), ("apigateway", "aws-proxy", "--help")
    )
    for result in (services, s3, apigateway, help_text):
        assert result.returncode == 0 and result.stderr == "", str(result)
    listed = [line.split()[0] for line in services.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["apigateway", "cloudwatch", "dynamodb", "kinesis", "s3", "sns", "sqs"]
    assert [line.split()[0] for line in s3.stdout.splitlines() if line.startswith("  ")] == ["delete", "put"]
    assert [line.split()[0] for line in apigateway.stdout.splitlines() if line.startswith("  ")] == [
        "aws-proxy",
        "http-api-proxy",
    ]
    for flag in ("--method", "--path", "--resource", "--query", "--body", "--stage", "--region", "--account-id"):
        assert flag in help_text.stdout, help_text.stdout
    assert "(default: prod)" in help_text.stdout


def test_unknown_names_and_bad_values_exit_2_with_a_message():
    results = generate_all(
        ("nosuch",),
        ("s3", "nosuch"),
        ("s3", "put", "--nosuch", "x"),
        ("s3", "put", "--region", "moon-1"),
        ("sqs", "receive-message", "--account-id", "12"),
        ("apigateway", "aws-proxy", "--method", "FETCH"),
        ("apigateway", "aws-proxy", "--path", "/orders", "--resource", "/users/{id}"),
        ("apigateway", "http-api-proxy", "--path", "/", "--route", "/{proxy+}"),
        ("kinesis", "get-records", "--sequence", "abc"),
        ("sqs", "receive-message", "--body", ""),
    )
    expected = [
        ("invalid choice: 'nosuch'", "apigateway"),
        ("invalid choice: 'nosuch'", "put"),
        ("unrecognized arguments: --nosuch",),
        ("--region", "'moon-1' is not a valid AWS region"),
        ("--account-id", "12 digits"),
        ("--method", "'FETCH' is not an HTTP method"),
        ("--path /orders does not match --resource /users/{id}",),
        ("--path / does not match --route /{proxy+}",),  # a greedy parameter needs one segment at least
        ("--sequence", "'abc' is not a valid sequence number"),
        ("--body", "an SQS message body cannot be empty"),
    ]
    for result, fragments in zip(results, expected, strict=True):
        assert_usage_error(result, *fragments)


# -- used directly as an invoke's event ------------------------------------------------------------------------------


def _pipe(generate_args: tuple[str, ...], function: str) -> tuple[Result, Result]:
    """`generate-event ARGS | sandbox-runtime invoke FUNCTION -t template.yaml -e -` in the repository."""
    first = 300000 + (next(_uid_blocks) % 1000) * _UID_BLOCK
    uid_range = (first, first + _UID_BLOCK - 1)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
    environment["SANDBOX_UID_RANGE"] = f"{uid_range[0]}-{uid_range[1]}"
    producer = subprocess.Popen(
        [*GENERATE, *generate_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, cwd=REPO
    )
    consumer = subprocess.Popen(
        [sys.executable, "-m", "runtime_api", "invoke", function, "-t", str(BUNDLED_TEMPLATE), "-e", "-"],
        stdin=producer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=REPO,
    )
    assert producer.stdout is not None
    producer.stdout.close()  # the consumer holds the pipe now
    out, err = consumer.communicate(timeout=60)
    producer_err = producer.stderr.read() if producer.stderr else b""
    producer.wait(timeout=10)
    deadline = time.monotonic() + 5
    while sandbox_processes(uid_range) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sandbox_processes(uid_range)
    return (
        Result(producer.returncode, "", producer_err.decode()),
        Result(consumer.returncode, out.decode(), err.decode()),
    )


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="invoking needs bubblewrap")
def test_events_pipe_into_invoke():
    arguments = ("apigateway", "aws-proxy", "--method", "GET", "--path", "/hello", "--query", "name=Ada")
    with ThreadPoolExecutor(max_workers=2) as pool:
        api_job = pool.submit(_pipe, arguments, "api")
        echo_job = pool.submit(_pipe, ("s3", "put", "--key", "a b.txt"), "echo")
        (generated, invoked), (_, echoed) = api_job.result(), echo_job.result()
    assert generated.returncode == 0 and invoked.returncode == 0, f"{generated}\n{invoked}"
    response = json.loads(invoked.stdout)
    assert isinstance(response, dict) and response.get("statusCode") == 200, str(invoked)
    assert json.loads(response["body"]) == {
        "path": "/hello",
        "method": "GET",
        "query": {"name": "Ada"},
        "function": "api",
    }
    assert echoed.returncode == 0, str(echoed)
    assert json.loads(echoed.stdout) == event_of(generate("s3", "put", "--key", "a b.txt"))
