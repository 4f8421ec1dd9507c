"""Layers from SAM templates, end to end: the real service over HTTP, driven with boto3.

- aws-lambda-powertools in a layer (`python/`, as `pip install -t layer/python` lays it out), used
  unchanged by a handler: Logger with inject_lambda_context, APIGatewayRestResolver, Metrics (EMF).
- Two layers with an overlapping file: the later one wins; a function without layers sees an empty /opt.
- A handler that calls DynamoDB through the runtime's boto3, against a moto server on a test host of
  our own (a network namespace): sandboxes reach outside addresses through the egress proxy only.
- The Python "Hello World" app in the shape `sam init` makes it.
- `CodeStager.stage_merged` on its own: order, links, caching.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import FUNCTIONS, REPO, ServiceProcess
from support import invoke, outside_host, request_id, tail, vendor, wait_for_port

from sandbox.staging import CodeStager

LAYERS = FUNCTIONS / "layers"
SAM_HELLO_WORLD = Path(__file__).resolve().parent / "fixtures" / "sam-hello-world"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
POWERTOOLS_ARN = "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python311-x86_64:7"


def function(name: str, handler: str, **properties: object) -> dict:
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {"FunctionName": name, "Handler": handler, **properties},
    }


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("layers")
    # The powertools layer, as `pip install -t powertools/python aws-lambda-powertools` lays it out:
    # the package and its pure-Python dependencies (the sandbox sees the host's /usr, never our .venv).
    powertools = root / "powertools"
    vendor(powertools / "python", "aws-lambda-powertools", "jmespath", "typing-extensions")
    template = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Globals": {
            "Function": {
                "Runtime": "python3.11",
                "CodeUri": str(LAYERS / "code"),
                "Timeout": 10,
                "MemorySize": 256,
                "Layers": [{"Ref": "LayerA"}],
            }
        },
        "Resources": {
            "Powertools": {
                "Type": "AWS::Serverless::LayerVersion",
                "Properties": {"LayerName": "powertools", "ContentUri": str(powertools)},
            },
            "LayerA": {"Type": "AWS::Serverless::LayerVersion", "Properties": {"ContentUri": str(LAYERS / "layer_a")}},
            "LayerB": {"Type": "AWS::Lambda::LayerVersion", "Properties": {"Content": str(LAYERS / "layer_b")}},
            "OnS3": {
                "Type": "AWS::Lambda::LayerVersion",
                "Properties": {"Content": {"S3Bucket": "layers", "S3Key": "l.zip"}},
            },
            "Greeter": {
                "Type": "AWS::Serverless::Function",
                "IgnoreGlobals": ["Layers"],
                "Properties": {
                    "FunctionName": "greeter",
                    "Handler": "greeter.handler",
                    # A public layer's ARN is not here: left out with a warning, not an error.
                    "Layers": [POWERTOOLS_ARN, {"Ref": "Powertools"}],
                    "Environment": {"Variables": {"POWERTOOLS_METRICS_NAMESPACE": "SandboxRuntimeTests"}},
                },
            },
            # Globals' LayerA, then LayerB: B's shared_mod.py and config.txt win.
            "Overlap": function("overlap", "opt_probe.handler", Layers=[{"Ref": "LayerB"}, {"Ref": "OnS3"}]),
            "NoLayers": {
                "Type": "AWS::Serverless::Function",
                "IgnoreGlobals": ["Layers"],
                "Properties": {"FunctionName": "no-layers", "Handler": "opt_probe.handler"},
            },
            "Queue": {"Type": "AWS::SQS::Queue"},
        },
    }
    path = root / "template.yaml"
    path.write_text(yaml.safe_dump(template))
    service = ServiceProcess(path)
    yield service
    assert service.stop() == 0


# -- aws-lambda-powertools from a layer ------------------------------------------------------------------


def api_event(*args: str) -> dict:
    """An API Gateway REST proxy event from our own `generate-event`, as `sam local generate-event` makes."""
    out = subprocess.run(
        [sys.executable, "-m", "runtime_api", "generate-event", "apigateway", "aws-proxy", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout)


def json_lines(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def test_powertools_from_a_layer_logger_router_and_metrics(layered):
    client = layered.client()
    event = api_event("--path", "/hello", "--method", "GET", "--query", "name=layers")
    response, body = invoke(client, "greeter", event, LogType="Tail")
    assert "FunctionError" not in response, body
    result = json.loads(body)
    assert result["statusCode"] == 200, result
    assert json.loads(result["body"]) == {"message": "hello layers"}

    records = json_lines(tail(response))
    hellos = [r for r in records if r.get("message") == "saying hello"]
    assert len(hellos) == 1, tail(response)
    hello = hellos[0]
    assert hello["level"] == "INFO"
    assert hello["service"] == "greeter"
    assert hello["greeted"] == "layers"
    assert hello["function_name"] == "greeter"
    assert hello["function_arn"] == ARN.format("greeter")
    assert str(hello["function_memory_size"]) == "256"
    assert hello["function_request_id"] == request_id(response)
    assert hello["cold_start"] is True

    # Metrics: CloudWatch embedded metric format on stdout, one document per flush.
    emf = [r for r in records if "_aws" in r]
    greetings = [r for r in emf if "Greetings" in r]
    assert len(greetings) == 1, records
    [directive] = greetings[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "SandboxRuntimeTests"
    assert {"Name": "Greetings", "Unit": "Count"} in directive["Metrics"]
    assert greetings[0]["Greetings"] in (1, 1.0, [1], [1.0])
    assert greetings[0]["service"] == "greeter"
    assert any("ColdStart" in r for r in emf)  # capture_cold_start_metric

    second, body = invoke(client, "greeter", api_event("--path", "/hello", "--method", "GET"), LogType="Tail")
    assert json.loads(json.loads(body)["body"]) == {"message": "hello world"}
    records = json_lines(tail(second))
    assert [r["cold_start"] for r in records if r.get("message") == "saying hello"] == [False]
    assert not any("ColdStart" in r for r in records)

    # An unknown route is the resolver's 404, not a function error.
    response, body = invoke(client, "greeter", api_event("--path", "/nowhere", "--method", "GET"))
    assert "FunctionError" not in response
    assert json.loads(body)["statusCode"] == 404


# -- merge order, an empty /opt, what is left out -------------------------------------------------------


def test_later_layers_overwrite_earlier_files(layered):
    response, body = invoke(
        layered.client(), "overlap", {"modules": ["shared_mod", "only_a", "site_mod"]}, LogType="Tail"
    )
    assert "FunctionError" not in response, body
    result = json.loads(body)
    assert result["files"] == {
        "/opt/bin/tool.txt": "tool from layer_a\n",
        "/opt/config.txt": "from layer_b\n",  # both layers have it: the later one wins
        "/opt/python/lib/python3.11/site-packages/site_mod.py": 'WHO = "layer_a site-packages"\n',
        "/opt/python/only_a.py": 'WHO = "only in layer_a"\n',
        "/opt/python/shared_mod.py": 'WHO = "layer_b"\n',
    }
    # Importable from both of Lambda's layer paths for Python.
    assert result["modules"] == {
        "shared_mod": "layer_b",
        "only_a": "only in layer_a",
        "site_mod": "layer_a site-packages",
    }
    assert result["opt_writable"] is False
    assert result["PATH"].split(":")[-1] == "/opt/bin"


def test_a_function_without_layers_sees_an_empty_opt(layered):
    response, body = invoke(layered.client(), "no-layers", {"modules": ["shared_mod"]})
    assert "FunctionError" not in response, body
    result = json.loads(body)
    assert result["files"] == {}
    assert result["modules"]["shared_mod"].startswith("ImportError")


def test_identical_layer_lists_are_merged_once_and_skips_are_reported(layered):
    events = layered.log_events()
    [skipped] = [e for e in events if e.get("event") == "template.skipped"]
    assert skipped["level"] == "warning"
    assert skipped["resources"] == {
        "OnS3": "Content is an S3 location; only local layer content is supported",
        "Queue": "AWS::SQS::Queue is not supported",
    }
    assert "OnS3 (Content is an S3 location" in skipped["detail"]
    left_out = {e["function"]: e["layers"] for e in events if e.get("event") == "function.layers_skipped"}
    assert left_out == {
        "Greeter": [f"{POWERTOOLS_ARN} (it is not a layer of this template)"],
        "Overlap": [
            "OnS3 (layer OnS3 is not loaded: Content is an S3 location; only local layer content is supported)"
        ],
    }


# -- DynamoDB through boto3, against moto on a test host --------------------------------------------------


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a test host")
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency: run scripts/install")
    with outside_host() as host:
        port = 5000
        server = host.popen(
            [sys.executable, "-m", "moto.server", "-H", host.address, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(host.address, port, 30, "the moto server")
            yield f"http://{host.address}:{port}"
        finally:
            server.kill()
            server.wait()


def test_dynamodb_round_trip_from_a_handler(dynamodb, start_service, tmp_path):
    table_name = f"orders-{uuid.uuid4().hex[:8]}"
    ours = boto3.resource(
        "dynamodb",
        endpoint_url=dynamodb,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    table = ours.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    template = {
        "Resources": {
            "Orders": {
                "Type": "AWS::Serverless::Function",
                "Metadata": {"SandboxRuntime": {"AllowNetwork": True}},
                "Properties": {
                    "FunctionName": "orders",
                    "Runtime": "python3.11",
                    "Handler": "orders.handler",
                    "CodeUri": str(LAYERS / "code"),
                    "Timeout": 20,
                    "MemorySize": 256,
                    "Environment": {"Variables": {"DYNAMODB_ENDPOINT": dynamodb, "TABLE_NAME": table_name}},
                },
            }
        }
    }
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(template))
    service = start_service(path)
    response, body = invoke(service.client(), "orders", {"id": "o-1", "status": "shipped"})
    assert "FunctionError" not in response, body
    result = json.loads(body)
    assert result["item"] == {"id": "o-1", "status": "shipped", "request_id": request_id(response)}
    assert result["boto3"].startswith("/var/runtime/boto3/")  # the runtime's SDK, not vendored
    # The item really is in the table, as seen from outside the sandbox.
    assert table.get_item(Key={"id": "o-1"})["Item"]["request_id"] == request_id(response)


# -- the `sam init` Python hello world -------------------------------------------------------------------


def test_sam_init_hello_world_app(start_service):
    service = start_service(SAM_HELLO_WORLD / "template.yaml")
    event = json.loads((SAM_HELLO_WORLD / "events" / "event.json").read_text())
    client = service.client()
    for name in ("HelloWorldFunction", ARN.format("HelloWorldFunction")):
        response, body = invoke(client, name, event)
        assert "FunctionError" not in response, body
        result = json.loads(body)
        assert result["statusCode"] == 200
        assert json.loads(result["body"]) == {"message": "hello world", "path": "/hello", "method": "GET"}
    [skipped] = [e for e in service.log_events() if e.get("event") == "template.skipped"]
    assert set(skipped["resources"]) == {"ApplicationResourceGroup", "ApplicationInsightsMonitoring"}


# -- the merge itself ------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, str]:
    """Files and links under `root` (never followed) with their contents or targets."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"-> {os.readlink(path)}"
            elif path.is_file():
                found[rel] = path.read_text()
    return dict(sorted(found.items()))


def test_stage_merged_order_links_and_cache(tmp_path):
    first, second, evil = tmp_path / "first", tmp_path / "second", tmp_path / "evil"
    (first / "python").mkdir(parents=True)
    (first / "python" / "m.py").write_text("first")
    (first / "data").mkdir()
    (first / "data" / "keep.txt").write_text("kept")
    (first / "swap").mkdir()
    (first / "swap" / "inner.txt").write_text("a folder in first")
    outside = tmp_path / "outside"
    outside.mkdir()
    (first / "link").symlink_to(outside)  # a link to a folder: copied as a link
    (second / "python").mkdir(parents=True)
    (second / "python" / "m.py").write_text("second")
    (second / "swap").write_text("a file in second")  # replaces first's folder
    (second / "link").mkdir()  # a real folder where first had a link: never written through it
    (second / "link" / "planted.txt").write_text("planted")
    evil.mkdir()
    (evil / "python").symlink_to("/etc")  # a link where others have a folder

    stager = CodeStager(tmp_path / "state")
    merged = stager.stage_merged([first, second])
    assert tree(merged) == {
        "data/keep.txt": "kept",
        "link/planted.txt": "planted",
        "python/m.py": "second",
        "swap": "a file in second",
    }
    assert list(outside.iterdir()) == []  # nothing went through the link
    assert (first / "python" / "m.py").read_text() == "first"  # sources untouched
    assert oct(merged.stat().st_mode & 0o777) == "0o755"

    assert stager.stage_merged([first, second]) == merged  # once per distinct list
    reverse = stager.stage_merged([second, first])
    assert reverse != merged
    assert tree(reverse)["python/m.py"] == "first"
    assert tree(reverse)["link"] == f"-> {outside}"
    assert tree(reverse)["swap/inner.txt"] == "a folder in first"

    with_link = stager.stage_merged([first, evil])
    assert tree(with_link)["python"] == "-> /etc"  # a link, resolved only inside the sandbox
    again = stager.stage_merged([evil, first])
    assert (again / "python").is_dir() and not (again / "python").is_symlink()
    assert tree(again)["python/m.py"] == "first"
