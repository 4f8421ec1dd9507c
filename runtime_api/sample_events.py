"""Sample events of AWS event sources: `sandbox-runtime generate-event SERVICE EVENT [options]`.

Like `sam local generate-event` (same service, event and option names), for the sources most functions
are written against. Each event has the shape Lambda delivers: field names, nesting and types, with
values encoded as the service encodes them (an S3 object key URL-encoded, Kinesis data base64-encoded,
an SQS body as sent with its MD5, DynamoDB images as typed attribute values). Everything the options do
not set is a fixed sample, so the same command prints the same event every time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote_plus

# One instant for every sample event: 2025-01-15T12:00:00Z.
_TIME = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)
_EPOCH = int(_TIME.timestamp())
_ISO = "2025-01-15T12:00:00.000Z"  # S3 and SNS (milliseconds)
_ISO_SECONDS = "2025-01-15T12:00:00Z"  # EventBridge
_CLF = "15/Jan/2025:12:00:00 +0000"  # API Gateway's requestTime / time
_SOURCE_IP = "203.0.113.10"  # a documentation address (RFC 5737)
_USER_AGENT = "curl/8.5.0"
_PRINCIPAL = "AIDAJDPLRKLG7UEXAMPLE"  # an IAM user id, as in AWS's samples
_API_ID = "a1b2c3d4e5"
_TRACE_ID = f"Root=1-{_EPOCH:08x}-3f6a1c2e9b4d7e8f0a1b2c3d"
_HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_BODY_METHODS = ("POST", "PUT", "PATCH")
_DEFAULT_BODY = '{"message": "hello world"}'


class SampleEventError(ValueError):
    """An unknown service or event, or an option value the event cannot carry."""


# -- options -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """A `--name VALUE` option of an event; `check` validates and normalises a value (raises ValueError)."""

    name: str
    default: str | None
    help: str
    check: Callable[[str], str] = str

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        return f"--{self.name}"


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return check


def _http_method(value: str) -> str:
    method = value.upper()
    if method not in _HTTP_METHODS:
        raise ValueError(f"{value!r} is not an HTTP method API Gateway sends ({', '.join(_HTTP_METHODS)})")
    return method


def _url_path(value: str) -> str:
    if "?" in value or "#" in value:
        raise ValueError(f"{value!r}: give the path without a query string (use --query)")
    return value if value.startswith("/") else "/" + value


def _object_key(value: str) -> str:
    if not value or len(value.encode()) > 1024:
        raise ValueError("an S3 object key is 1 to 1024 bytes")
    return value


def _message_body(value: str) -> str:
    if not value:
        raise ValueError("an SQS message body cannot be empty")
    return value


def _size(value: str) -> str:
    if not value.isdigit():
        raise ValueError(f"{value!r} is not a size in bytes (a whole number)")
    return str(int(value))


def _query_string(value: str) -> str:
    if "#" in value:
        raise ValueError(f"{value!r} is not a query string")
    return value.removeprefix("?")


_region = _matching(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", "AWS region (e.g. us-east-1)")
_account = _matching(r"\d{12}", "AWS account id (12 digits)")
REGION = Option("region", "us-east-1", "AWS region", _region)
ACCOUNT_ID = Option("account-id", "123456789012", "AWS account id", _account)


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def _arn(values: Mapping[str, str], service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
    return ":".join(
        (
            "arn",
            _partition(values["region"]),
            service,
            values["region"] if region else "",
            values["account_id"] if account else "",
            resource,
        )
    )


# -- events ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleEvent:
    help: str
    build: Callable[[Mapping[str, str]], dict[str, Any]]
    options: tuple[Option, ...] = field(default=())


@dataclass(frozen=True)
class Service:
    help: str
    events: dict[str, SampleEvent]


def _body(values: Mapping[str, str | None]) -> str | None:
    """The request body: --body as given ('' for none), else a JSON sample for methods that carry one."""
    body = values.get("body")
    if body is None:
        return _DEFAULT_BODY if values["method"] in _BODY_METHODS else None
    return body or None


def _content_type(body: str) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


def _path_parameters(route: str, path: str, flag: str) -> dict[str, str] | None:
    """The values of a route's `{name}` and `{name+}` segments in a request path (None without any)."""
    route_parts = [part for part in route.split("/") if part]
    path_parts = [part for part in path.split("/") if part]
    parameters: dict[str, str] = {}
    for index, part in enumerate(route_parts):
        if index >= len(path_parts):
            break
        if part.startswith("{") and part.endswith("+}"):
            parameters[part[1:-2]] = "/".join(path_parts[index:])
            return parameters
        if part.startswith("{") and part.endswith("}"):
            parameters[part[1:-1]] = path_parts[index]
        elif part != path_parts[index]:
            break
    else:
        if len(route_parts) == len(path_parts):
            return parameters or None
    raise SampleEventError(f"--path {path} does not match {flag} {route}: give the route it matches with {flag}")


def _query(values: Mapping[str, str]) -> list[tuple[str, str]]:
    return parse_qsl(values["query"], keep_blank_values=True)


def _api_gateway_proxy(values: Mapping[str, str]) -> dict[str, Any]:
    """A REST API (payload format 1.0) Lambda proxy integration request, on a regional endpoint."""
    method, path, stage, resource = values["method"], values["path"], values["stage"], values["resource"]
    domain = f"{_API_ID}.execute-api.{values['region']}.{_dns_suffix(values['region'])}"
    body = _body(values)
    headers = {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate, br",
        "Host": domain,
        "User-Agent": _USER_AGENT,
        "X-Amzn-Trace-Id": _TRACE_ID,
        "X-Forwarded-For": _SOURCE_IP,
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    if body is not None:
        headers["Content-Type"] = _content_type(body)
    query = _query(values)
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {name: given[-1] for name, given in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": _path_parameters(resource, path, "--resource"),
        "stageVariables": None,
        "requestContext": {
            "accountId": values["account_id"],
            "apiId": _API_ID,
            "domainName": domain,
            "domainPrefix": _API_ID,
            "extendedRequestId": "EXmPLeH7IAMF4Rg=",
            "httpMethod": method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": _SOURCE_IP,
                "user": None,
                "userAgent": _USER_AGENT,
                "userArn": None,
            },
            "path": f"/{stage}{path}",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": _CLF,
            "requestTimeEpoch": _EPOCH * 1000,
            "resourceId": "x1y2z3",
            "resourcePath": resource,
            "stage": stage,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def _http_api_proxy(values: Mapping[str, str]) -> dict[str, Any]:
    """An HTTP API (payload format 2.0) request."""
    method, path, stage, route = values["method"], values["path"], values["stage"], values["route"]
    domain = f"{_API_ID}.execute-api.{values['region']}.{_dns_suffix(values['region'])}"
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    route_key = "$default" if route == "$default" else f"{method} {route}"
    body = _body(values)
    headers = {
        "accept": "*/*",
        "accept-encoding": "gzip, deflate, br",
        "host": domain,
        "user-agent": _USER_AGENT,
        "x-amzn-trace-id": _TRACE_ID,
        "x-forwarded-for": _SOURCE_IP,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if body is not None:
        headers["content-length"] = str(len(body.encode()))
        headers["content-type"] = _content_type(body)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": values["query"],
        "headers": dict(sorted(headers.items())),
    }
    query: dict[str, list[str]] = {}
    for name, value in _query(values):
        query.setdefault(name, []).append(value)
    if query:  # repeated names are joined with commas; absent fields are left out, not null
        event["queryStringParameters"] = {name: ",".join(given) for name, given in query.items()}
    if route != "$default" and (parameters := _path_parameters(route, path, "--route")):
        event["pathParameters"] = parameters
    event["requestContext"] = {
        "accountId": values["account_id"],
        "apiId": _API_ID,
        "domainName": domain,
        "domainPrefix": _API_ID,
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": _SOURCE_IP,
            "userAgent": _USER_AGENT,
        },
        "requestId": "EXmPLeJ2IAMEPmw=",
        "routeKey": route_key,
        "stage": stage,
        "time": _CLF,
        "timeEpoch": _EPOCH * 1000,
    }
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = False
    return event


def _s3(event_name: str) -> Callable[[Mapping[str, str]], dict[str, Any]]:
    def build(values: Mapping[str, str]) -> dict[str, Any]:
        key = values["key"]
        s3_object: dict[str, Any] = {"key": quote_plus(key, safe="/")}  # S3 URL-encodes keys ("a b" -> "a+b")
        if event_name.startswith("ObjectCreated:"):
            s3_object["size"] = int(values["size"])
            s3_object["eTag"] = hashlib.md5(key.encode()).hexdigest()  # a sample ETag
        s3_object["sequencer"] = f"00{_EPOCH:X}A1B2C3D4"
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": values["region"],
                    "eventTime": _ISO,
                    "eventName": event_name,
                    "userIdentity": {"principalId": f"AWS:{_PRINCIPAL}"},
                    "requestParameters": {"sourceIPAddress": _SOURCE_IP},
                    "responseElements": {
                        "x-amz-request-id": "D82B88E5F771F645",
                        "x-amz-id-2": "vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6QBU0Wo=",
                    },
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "tf-s3-lambda-20250115120000000000000001",
                        "bucket": {
                            "name": values["bucket"],
                            "ownerIdentity": {"principalId": "A3I5XTEXAMAI3E"},
                            "arn": f"arn:{_partition(values['region'])}:s3:::{values['bucket']}",
                        },
                        "object": s3_object,
                    },
                }
            ]
        }

    return build


def _sqs(values: Mapping[str, str]) -> dict[str, Any]:
    body, queue = values["body"], values["queue_name"]
    attributes = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": str(_EPOCH * 1000),
        "SenderId": _PRINCIPAL,
        "ApproximateFirstReceiveTimestamp": str(_EPOCH * 1000 + 2),
    }
    if queue.endswith(".fifo"):  # FIFO queues add the group, the deduplication id and a sequence number
        attributes["SequenceNumber"] = "18849496460467696128"
        attributes["MessageGroupId"] = "1"
        attributes["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()  # content-based
    return {
        "Records": [
            {
                "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a+5Zg2ZlZrRVLD/ppKQy5dMuf1tlEKMYc/H+aVZHuLUHgMOJdpEH"
                "F8Es8+1Xf/2KYQzcGUsBXWXZPH/r6WBmCqATlkpdO8Ht86zMD9HP1wg/n7OFkaLzL6/NLk7ysTp7rY7nQOdEQq4MA==",
                "body": body,
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # what SQS sends
                "eventSource": "aws:sqs",
                "eventSourceARN": _arn(values, "sqs", queue),
                "awsRegion": values["region"],
            }
        ]
    }


def _sns(values: Mapping[str, str]) -> dict[str, Any]:
    topic_arn = _arn(values, "sns", values["topic"])
    subscription_arn = f"{topic_arn}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"
    endpoint = f"https://sns.{values['region']}.{_dns_suffix(values['region'])}"
    message = values["message"]
    signature = base64.b64encode(hashlib.shake_256(message.encode()).digest(256)).decode()  # RSA-2048 sized
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": "Notification",
                    "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                    "TopicArn": topic_arn,
                    "Subject": values["subject"] or None,
                    "Message": message,
                    "Timestamp": _ISO,
                    "SignatureVersion": "1",
                    "Signature": signature,
                    "SigningCertUrl": f"{endpoint}/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
                    "UnsubscribeUrl": f"{endpoint}/?Action=Unsubscribe&SubscriptionArn={subscription_arn}",
                    "MessageAttributes": {},
                },
            }
        ]
    }


_ITEM_NEW = {
    "Id": {"N": "101"},
    "Message": {"S": "New item!"},
    "Tags": {"SS": ["blue", "new"]},
    "Active": {"BOOL": True},
}
_ITEM_CHANGED = {
    "Id": {"N": "101"},
    "Message": {"S": "This item has changed"},
    "Tags": {"SS": ["blue", "changed"]},
    "Active": {"BOOL": True},
    "Details": {"M": {"Owner": {"S": "ada"}, "Count": {"N": "2"}, "Note": {"NULL": True}}},
    "Scores": {"L": [{"N": "9.5"}, {"N": "7"}]},
}


def _dynamodb(values: Mapping[str, str]) -> dict[str, Any]:
    """An INSERT, a MODIFY and a REMOVE of one item, from a NEW_AND_OLD_IMAGES stream."""
    stream_arn = _arn(values, "dynamodb", f"table/{values['table']}/stream/{_ISO[:-1]}")
    changes = [
        ("INSERT", "c4ca4238a0b923820dcc509a6f75849b", {"NewImage": _ITEM_NEW}, 59),
        ("MODIFY", "c81e728d9d4c2f636f067f89cc14862c", {"NewImage": _ITEM_CHANGED, "OldImage": _ITEM_NEW}, 149),
        ("REMOVE", "eccbc87e4b5ce2fe28308d00d1a9f2a5", {"OldImage": _ITEM_CHANGED}, 90),
    ]
    return {
        "Records": [
            {
                "eventID": event_id,
                "eventName": event_name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": values["region"],
                "dynamodb": {
                    "ApproximateCreationDateTime": _EPOCH + index,
                    "Keys": {"Id": {"N": "101"}},
                    **images,
                    "SequenceNumber": f"{400000000000000000000 + index * 100000000:d}",
                    "SizeBytes": size,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
                "eventSourceARN": stream_arn,
            }
            for index, (event_name, event_id, images, size) in enumerate(changes)
        ]
    }


def _scheduled_event(values: Mapping[str, str]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": values["account_id"],
        "time": _ISO_SECONDS,
        "region": values["region"],
        "resources": [_arn(values, "events", f"rule/{values['rule']}")],
        "detail": {},
    }


def _kinesis(values: Mapping[str, str]) -> dict[str, Any]:
    sequence = values["sequence"]
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": values["partition_key"],
                    "sequenceNumber": sequence,
                    "data": base64.b64encode(values["data"].encode()).decode(),
                    "approximateArrivalTimestamp": _EPOCH + 0.123,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": _arn(values, "iam", "role/lambda-kinesis-role", region=False),
                "awsRegion": values["region"],
                "eventSourceARN": _arn(values, "kinesis", f"stream/{values['stream']}"),
            }
        ]
    }


_METHOD = Option("method", "POST", f"HTTP method: {', '.join(_HTTP_METHODS)}", _http_method)
_PATH = Option("path", "/path/to/resource", "request path", _url_path)
_QUERY = Option("query", "", "query string, e.g. 'a=1&b=2&a=3', as sent (URL-encoded)", _query_string)
_BODY = Option("body", None, f"request body, '' for none (default: {_DEFAULT_BODY} for {', '.join(_BODY_METHODS)})")
_S3_OPTIONS = (
    Option("bucket", "example-bucket", "bucket name", _matching(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "bucket name")),
    Option("key", "test/key", "object key, unencoded (the event carries it URL-encoded)", _object_key),
    REGION,
)
_NAME = r"[A-Za-z0-9_-]"

SERVICES: dict[str, Service] = {
    "apigateway": Service(
        "Amazon API Gateway (REST and HTTP APIs)",
        {
            "aws-proxy": SampleEvent(
                "a REST API Lambda proxy integration request (payload format 1.0)",
                _api_gateway_proxy,
                (
                    _METHOD,
                    _PATH,
                    Option("resource", "/{proxy+}", "resource path the request matched", _url_path),
                    _QUERY,
                    _BODY,
                    Option("stage", "prod", "stage name", _matching(r"[A-Za-z0-9_]{1,128}", "stage name")),
                    REGION,
                    ACCOUNT_ID,
                ),
            ),
            "http-api-proxy": SampleEvent(
                "an HTTP API request (payload format 2.0)",
                _http_api_proxy,
                (
                    _METHOD,
                    _PATH,
                    Option(
                        "route",
                        "$default",
                        "route path the request matched, e.g. /items/{id}",
                        lambda value: value if value == "$default" else _url_path(value),
                    ),
                    _QUERY,
                    _BODY,
                    Option(
                        "stage", "$default", "stage name", _matching(r"\$default|[A-Za-z0-9_-]{1,128}", "stage name")
                    ),
                    REGION,
                    ACCOUNT_ID,
                ),
            ),
        },
    ),
    "cloudwatch": Service(
        "Amazon EventBridge (CloudWatch Events)",
        {
            "scheduled-event": SampleEvent(
                "an EventBridge scheduled rule's event",
                _scheduled_event,
                (
                    Option("rule", "ExampleRule", "rule name", _matching(r"[A-Za-z0-9_.-]{1,64}", "rule name")),
                    REGION,
                    ACCOUNT_ID,
                ),
            ),
        },
    ),
    "dynamodb": Service(
        "Amazon DynamoDB Streams",
        {
            "update": SampleEvent(
                "stream records of an item inserted, modified and removed",
                _dynamodb,
                (
                    Option(
                        "table",
                        "ExampleTableWithStream",
                        "table name",
                        _matching(r"[A-Za-z0-9_.-]{3,255}", "table name"),
                    ),
                    REGION,
                    ACCOUNT_ID,
                ),
            ),
        },
    ),
    "kinesis": Service(
        "Amazon Kinesis Data Streams",
        {
            "get-records": SampleEvent(
                "a stream record",
                _kinesis,
                (
                    Option("data", "Hello, this is a test 123.", "record data (the event carries it base64-encoded)"),
                    Option(
                        "partition-key", "partitionKey-03", "partition key", _matching(r".{1,256}", "partition key")
                    ),
                    Option(
                        "sequence",
                        "49590338271490256608559692538361571095921575989136588898",
                        "sequence number",
                        _matching(r"\d{1,128}", "sequence number"),
                    ),
                    Option(
                        "stream", "example-stream", "stream name", _matching(r"[A-Za-z0-9_.-]{1,128}", "stream name")
                    ),
                    REGION,
                    ACCOUNT_ID,
                ),
            ),
        },
    ),
    "s3": Service(
        "Amazon S3 event notifications",
        {
            "delete": SampleEvent("an object deleted (ObjectRemoved:Delete)", _s3("ObjectRemoved:Delete"), _S3_OPTIONS),
            "put": SampleEvent(
                "an object created (ObjectCreated:Put)",
                _s3("ObjectCreated:Put"),
                (*_S3_OPTIONS, Option("size", "1024", "object size in bytes", _size)),
            ),
        },
    ),
    "sns": Service(
        "Amazon SNS",
        {
            "notification": SampleEvent(
                "a topic notification",
                _sns,
                (
                    Option("topic", "ExampleTopic", "topic name", _matching(_NAME + r"{1,256}", "topic name")),
                    Option("subject", "example subject", "subject, '' for none"),
                    Option("message", "example message", "message"),
                    REGION,
                    ACCOUNT_ID,
                ),
            ),
        },
    ),
    "sqs": Service(
        "Amazon SQS",
        {
            "receive-message": SampleEvent(
                "a message received from a queue (a name ending in .fifo gives a FIFO queue's message)",
                _sqs,
                (
                    Option(
                        "queue-name",
                        "MyQueue",
                        "queue name",
                        _matching(_NAME + r"{1,75}(\.fifo)?|" + _NAME + "{1,80}", "queue name"),
                    ),
                    Option("body", "Hello from SQS!", "message body, as sent", _message_body),
                    REGION,
                    ACCOUNT_ID,
                ),
            ),
        },
    ),
}


def generate(service: str, event: str, **values: str | None) -> dict[str, Any]:
    """The sample `event` of `service`, with option values by name (`queue_name="q"`); None means default."""
    if service not in SERVICES:
        raise SampleEventError(f"unknown service {service!r} (services: {', '.join(SERVICES)})")
    events = SERVICES[service].events
    if event not in events:
        raise SampleEventError(f"unknown event {event!r} of {service} (events: {', '.join(events)})")
    spec = events[event]
    known = {option.dest: option for option in spec.options}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SampleEventError(f"{service} {event} has no option {', '.join(unknown)}")
    resolved: dict[str, Any] = {}
    for dest, option in known.items():
        value = values.get(dest)
        if value is None:
            resolved[dest] = option.default
            continue
        try:
            resolved[dest] = option.check(value)
        except ValueError as exc:
            raise SampleEventError(f"{option.flag}: {exc}") from None
    return spec.build(resolved)


def to_json(event: Mapping[str, Any]) -> str:
    return json.dumps(event, indent=2, ensure_ascii=False)


# -- the `generate-event` command ---------------------------------------------------------------------------


def _argument_type(option: Option) -> Callable[[str], str]:
    def convert(value: str) -> str:
        try:
            return option.check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.dest
    return convert


def add_parser(subparsers: Any) -> None:
    """Add `generate-event SERVICE EVENT [options]` to a parser's subcommands."""
    command = subparsers.add_parser(
        "generate-event",
        help="print a sample event of an AWS service, like `sam local generate-event`",
        description="Print a sample event of an AWS service as JSON, like `sam local generate-event`. "
        "With no SERVICE, list the services; with no EVENT, list the service's events.",
    )
    services = command.add_subparsers(dest="service", metavar="SERVICE")
    for service_name, service in SERVICES.items():
        service_parser = services.add_parser(service_name, help=service.help, description=service.help)
        events = service_parser.add_subparsers(dest="event", metavar="EVENT")
        for event_name, spec in service.events.items():
            event_parser = events.add_parser(event_name, help=spec.help, description=f"Print {spec.help}.")
            for option in spec.options:
                default = f" (default: {option.default})" if option.default else ""
                event_parser.add_argument(
                    option.flag,
                    dest=option.dest,
                    metavar=option.dest.upper(),
                    type=_argument_type(option),
                    help=(option.help + default).replace("%", "%%"),
                )


def _listing(title: str, entries: Mapping[str, str]) -> str:
    width = max(map(len, entries))
    return "\n".join([title, *(f"  {name:<{width}}  {text}" for name, text in entries.items())])


def run(args: argparse.Namespace) -> int:
    """The `generate-event` command: the event on stdout, or the services or events when one is missing."""
    if args.service is None:
        print("usage: sandbox-runtime generate-event SERVICE EVENT [options]\n")
        print(_listing("services:", {name: service.help for name, service in SERVICES.items()}))
        return 0
    service = SERVICES[args.service]
    if args.event is None:
        print(f"usage: sandbox-runtime generate-event {args.service} EVENT [options]\n")
        print(_listing(f"events of {args.service}:", {name: spec.help for name, spec in service.events.items()}))
        print(f"\nan event's options: sandbox-runtime generate-event {args.service} EVENT --help")
        return 0
    values = {option.dest: getattr(args, option.dest) for option in service.events[args.event].options}
    try:
        event = generate(args.service, args.event, **values)
    except SampleEventError as exc:
        print(f"sandbox-runtime generate-event: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(to_json(event).encode() + b"\n")
    sys.stdout.flush()
    return 0
