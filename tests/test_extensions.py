"""The Extensions and Telemetry APIs (reference/runtime-api.md §2), end to end: the real service over HTTP,
real sandboxes, extensions written as users write them (stdlib Python, in a layer's extensions/ folder).

- `recorder` registers for INVOKE and SHUTDOWN and records each event in /tmp, which the function
  (tests/functions/extensions/code) reads back; SHUTDOWN it prints, since its sandbox goes next.
- `telemetry-sink` serves HTTP on sandbox.localdomain:4243, subscribes to the Telemetry API and writes
  each batch it receives to /tmp.
- `broken` fails its init (/extension/init/error).
- `rules` (a custom runtime) drives every refused request with raw HTTP, as internal extensions.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import FUNCTIONS, ServiceProcess
from docker_support import require_docker
from support import invoke, request_id, tail, wait_for

EXTENSIONS = FUNCTIONS / "extensions"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


def write_template(directory: Path) -> Path:
    def function(name: str, layers: list[str], **properties: object) -> dict:
        return {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "FunctionName": name,
                "Runtime": "python3.11",
                "Handler": "app.handler",
                "CodeUri": str(EXTENSIONS / "code"),
                "MemorySize": 256,
                "Timeout": 5,
                "Layers": [{"Ref": layer} for layer in layers],
                **properties,
            },
        }

    def layer(folder: str) -> dict:
        return {"Type": "AWS::Serverless::LayerVersion", "Properties": {"ContentUri": str(EXTENSIONS / folder)}}

    # One environment for the functions whose extensions' records are read back through later
    # invocations: those must reach the same sandbox (they queue while it finishes its extension phase).
    resources = {
        "Recorder": layer("recorder"),
        "TelemetrySink": layer("telemetry"),
        "Broken": layer("initerror"),
        "WithRecorder": function("ext-recorder", ["Recorder"], ReservedConcurrentExecutions=1),
        "WithTelemetry": function("ext-telemetry", ["TelemetrySink", "Recorder"], ReservedConcurrentExecutions=1),
        "WithBroken": function("ext-broken", ["Broken"]),
        "Plain": function("no-extensions", []),
        "OnDocker": {
            **function(
                "ext-docker", ["TelemetrySink", "Recorder"], Runtime="python3.12", ReservedConcurrentExecutions=1
            ),
            "Metadata": {"SandboxRuntime": {"Isolation": "docker"}},
        },
        "Rules": function(
            "ext-rules", [], Runtime="provided.al2023", Handler="rules", CodeUri=str(EXTENSIONS / "rules")
        ),
    }
    path = directory / "template.yaml"
    path.write_text(yaml.safe_dump({"Transform": "AWS::Serverless-2016-10-31", "Resources": resources}))
    return path


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = ServiceProcess(write_template(tmp_path_factory.mktemp("extensions")), env={"SANDBOX_QUEUE_TIMEOUT": "10"})
    yield service
    assert service.stop() == 0


def environments(service: ServiceProcess, function: str) -> dict[str, int]:
    """How many of `function`'s environments are in each state."""
    return service.health()["pools"]["functions"][function]["environments"]


def body_of(answer: dict) -> dict:
    assert answer["headers"]["content-type"] == "application/json"
    return json.loads(answer["body"])


def refused(answer: dict, status: int, error_type: str, message: str | None = None) -> None:
    assert answer["status"] == status, answer
    error = body_of(answer)
    assert error["errorType"] == error_type
    if message is not None:
        assert error["errorMessage"] == message


# -- an external extension: registration, INVOKE, SHUTDOWN -------------------------------------------


def test_external_extension_registers_and_gets_each_invoke(extended):
    client = extended.client()
    before_ms = time.time() * 1000
    first, body = invoke(client, "ext-recorder", {"say": "one"})
    after_ms = time.time() * 1000
    assert "FunctionError" not in first, body
    assert json.loads(body)["parent"] == "/bin/sh"  # the launcher, which started the extension first

    second, _ = invoke(client, "ext-recorder", {"say": "two"}, Qualifier="$LATEST")
    # The environment takes the next invocation only once the extension called next again, after it
    # recorded the last one: a third invocation reads both (its own may not be recorded yet).
    _, body = invoke(client, "ext-recorder", {"say": "three"})
    seen = json.loads(body)
    assert seen["opt_extensions"] == ["recorder"]
    register, *events = seen["recorder"]
    assert register["kind"] == "register"
    assert register["status"] == 200
    assert register["body"] == {"functionName": "ext-recorder", "functionVersion": "$LATEST", "handler": "app.handler"}
    assert len(register["id"]) == 36
    # The environment Lambda gives extensions: no `_` names, no runtime or log-stream details.
    env = set(register["env"])
    assert {"AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION"} <= env
    hidden = {"_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "AWS_EXECUTION_ENV", "AWS_XRAY_CONTEXT_MISSING"}
    hidden |= {"AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "_AWS_XRAY_DAEMON_ADDRESS"}
    assert not hidden & env

    invokes = [record["event"] for record in events if record["event"]["eventType"] == "INVOKE"]
    assert [event["requestId"] for event in invokes][:2] == [request_id(first), request_id(second)]
    one, two = invokes[:2]
    assert set(one) == {"eventType", "deadlineMs", "requestId", "invokedFunctionArn", "tracing"}
    assert one["invokedFunctionArn"] == ARN.format("ext-recorder")
    assert two["invokedFunctionArn"] == ARN.format("ext-recorder") + ":$LATEST"
    assert one["tracing"]["type"] == "X-Amzn-Trace-Id"
    assert one["tracing"]["value"].startswith("Root=1-")
    # now + the function's 5 s timeout, set when the invocation started
    assert before_ms + 5000 - 1 <= one["deadlineMs"] <= after_ms + 5000 + 1


def test_extension_output_is_in_the_log_and_the_function_reports_as_usual(extended):
    response, _ = invoke(extended.client(), "ext-recorder", {"say": "tail"}, LogType="Tail")
    rid = request_id(response)
    lines = tail(response).splitlines()
    assert f"function says tail in {rid}" in lines
    # The caller gets its answer when the runtime gives it; REPORT waits for the extension to be done
    # with the invocation (its duration counts that time): it is in this tail only if the extension
    # was done first, and in the log in any case.
    end = lines.index(f"END RequestId: {rid}")
    assert lines[end + 1 :] == [] or (len(lines) == end + 2 and lines[-1].startswith(f"REPORT RequestId: {rid}\t"))

    def logged() -> bool:
        lines = [event.get("event", "") for event in extended.log_events() if event.get("request_id") == rid]
        return any(line.startswith(f"REPORT RequestId: {rid}\tDuration: ") for line in lines)

    wait_for(logged, 10, "REPORT in the service log")
    assert any(event.get("event") == f"[recorder] INVOKE {rid}" for event in extended.log_events())


def test_shutdown_goes_to_the_extension_when_the_service_stops(start_service, tmp_path):
    service = start_service(write_template(tmp_path))
    response, _ = invoke(service.client(), "ext-recorder", {})
    assert "FunctionError" not in response
    assert service.stop(signal.SIGTERM) == 0
    logs = service.log_path.read_text()
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    shutdowns = [
        json.loads(event["event"].split(" ", 2)[2])
        for event in events
        if event.get("event", "").startswith("[recorder] SHUTDOWN ")
    ]
    assert len(shutdowns) == 1, logs
    event = shutdowns[0]["event"]
    assert set(event) == {"eventType", "deadlineMs", "shutdownReason"}
    assert event["eventType"] == "SHUTDOWN"
    assert event["shutdownReason"] == "spindown"
    # The 2000 ms budget with external extensions; the runtime's 300 ms came first.
    assert 0 < event["deadlineMs"] - shutdowns[0]["received_ms"] <= 2000


def test_extension_init_error_fails_the_init(extended):
    for _ in range(2):  # and again on the next invoke: every init fails the same way
        response, body = invoke(extended.client(), "ext-broken", {}, LogType="Tail")
        assert response["FunctionError"] == "Unhandled"
        error = json.loads(body)
        assert error["errorType"] == "Extension.InitError"
        assert "broken" in error["errorMessage"]
        assert "[broken] cannot start: no configuration" in tail(response)


def test_a_function_without_extensions_is_unaffected(extended):
    response, body = invoke(extended.client(), "no-extensions", {}, LogType="Tail")
    assert "FunctionError" not in response
    seen = json.loads(body)
    assert seen["opt_extensions"] is None
    assert seen["parent"] != "/bin/sh"  # the runtime is the sandbox's command, as ever
    assert seen["recorder"] is None
    assert tail(response).splitlines()[-1].startswith(f"REPORT RequestId: {request_id(response)}\t")


# -- the Telemetry API -------------------------------------------------------------------------------


def test_telemetry_batches_reach_the_subscriber(extended):
    check_telemetry(extended, "ext-telemetry")


def test_extensions_and_telemetry_on_the_docker_isolation(extended):
    require_docker()
    response, body = invoke(extended.client(), "ext-docker", {})
    assert "FunctionError" not in response, body
    assert json.loads(body)["parent"] == "/bin/sh"
    check_telemetry(extended, "ext-docker")


def check_telemetry(service: ServiceProcess, function: str) -> None:
    client = service.client()
    watched, _ = invoke(client, function, {"say": "watched"})
    rid = request_id(watched)

    def delivered() -> dict | None:
        _, body = invoke(client, function, {"say": "reader"})
        seen = json.loads(body)
        events = [event for event in seen["telemetry"] or () if "type" in event]
        reported = {event["record"]["requestId"] for event in events if event["type"] == "platform.report"}
        return seen if rid in reported else None

    seen = wait_for(delivered, 15, "the watched invocation's platform.report")
    assert seen["subscribed"] == {"status": 200, "body": '"OK"'}
    batches = [entry for entry in seen["telemetry"] if "batch" in entry]
    assert all(entry["content_type"] == "application/json" for entry in batches)
    assert all(entry["batch"] <= 1000 for entry in batches)
    events = [entry for entry in seen["telemetry"] if "type" in entry]
    assert all(event["time"].endswith("Z") and len(event["time"]) == 24 for event in events)
    kinds = [event["type"] for event in events]
    # The init's events came first (they were kept until the subscription), then the invocations'.
    assert kinds[:1] == ["platform.initStart"]
    for kind in ("platform.initRuntimeDone", "platform.initReport", "platform.extension",
                 "platform.telemetrySubscription"):  # fmt: skip
        assert kind in kinds

    mine = [event for event in events if isinstance(event["record"], dict) and event["record"].get("requestId") == rid]
    assert [event["type"] for event in mine] == ["platform.start", "platform.runtimeDone", "platform.report"]
    start, done, report = (event["record"] for event in mine)
    assert start["version"] == "$LATEST"
    assert start["tracing"]["type"] == "X-Amzn-Trace-Id"
    assert done["status"] == "success"
    assert done["metrics"]["durationMs"] >= 0
    assert report["status"] == "success"
    metrics = report["metrics"]
    assert set(metrics) - {"initDurationMs"} == {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB"}
    reports = [event["record"] for event in events if event["type"] == "platform.report"]
    assert "initDurationMs" in reports[0]["metrics"]  # the cold start's
    assert all("initDurationMs" not in report["metrics"] for report in reports[1:])
    assert metrics["memorySizeMB"] == 256
    assert metrics["billedDurationMs"] >= metrics["durationMs"]
    assert metrics["maxMemoryUsedMB"] > 0

    function_lines = [event["record"] for event in events if event["type"] == "function"]
    assert f"function says watched in {rid}" in function_lines
    extension_lines = [event["record"] for event in events if event["type"] == "extension"]
    assert f"[recorder] INVOKE {rid}" in extension_lines
    assert not any(line.startswith("[recorder]") for line in function_lines)


# -- refused requests --------------------------------------------------------------------------------


def test_extensions_api_refusals(extended):
    response, body = invoke(extended.client(), "ext-rules", {"scenario": "init"})
    assert "FunctionError" not in response, body
    seen = json.loads(body)
    refused(seen["no_name"], 403, "Extension.InvalidExtensionName", "Empty extension name")
    refused(seen["bad_body"], 403, "InvalidRequestFormat")
    refused(
        seen["configuration_keys"],
        403,
        "InvalidRequestFormat",
        "configurationKeys are deprecated; use environment variables instead",
    )
    refused(seen["bad_event"], 403, "Extension.InvalidEventType")
    refused(seen["internal_shutdown"], 403, "Extension.InvalidEventType")  # internal ones get no SHUTDOWN
    first = seen["first"]
    assert first["status"] == 200
    assert len(first["headers"]["lambda-extension-identifier"]) == 36
    assert body_of(first) == {"functionName": "ext-rules", "functionVersion": "$LATEST", "handler": "rules"}
    refused(seen["duplicate"], 403, "Extension.InvalidExtensionState", "Extension with this name already registered")
    refused(seen["eleventh"], 403, "Extension.TooManyExtensions", "Extension limit (10) reached")
    missing_id = "Missing Lambda-Extension-Identifier header"
    refused(seen["next_without_id"], 403, "Extension.MissingExtensionIdentifier", missing_id)
    refused(seen["next_bad_id"], 403, "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier")
    refused(seen["next_unknown_id"], 403, "Extension.UnknownExtensionIdentifier")
    missing_type = "Lambda-Extension-Function-Error-Type not found"
    refused(seen["init_error_without_type"], 403, "Extension.MissingHeader", missing_type)
    refused(seen["exit_error_without_id"], 403, "Extension.MissingExtensionIdentifier")
    assert seen["unknown_route"]["status"] == 404
    refused(seen["telemetry_without_id"], 403, "Extension.MissingExtensionIdentifier")
    for bad in ("telemetry_small_buffer", "telemetry_bad_timeout", "telemetry_bad_type", "telemetry_outside_host"):
        refused(seen[bad], 400, "ValidationError")
    assert (seen["telemetry_ok"]["status"], seen["telemetry_ok"]["body"]) == (200, '"OK"')
    assert seen["logs"]["status"] == 202
    assert body_of(seen["logs"]) == {"errorMessage": "Logs API is not supported", "errorType": "Logs.NotSupported"}


def test_registration_and_subscription_close_with_the_init(extended):
    client = extended.client()
    _, body = invoke(client, "ext-rules", {"scenario": "late"})
    seen = json.loads(body)
    refused(seen["register"], 403, "Extension.RegistrationClosed", "Extension registration closed already")
    refused(seen["telemetry"], 403, "Telemetry.SubscriptionClosed")
    refused(seen["next_again_while_waiting"], 403, "Extension.InvalidExtensionState")


def test_internal_extension_gets_invoke_events(extended):
    client = extended.client()
    first, _ = invoke(client, "ext-rules", {"scenario": "events"})
    # The answer does not wait for the extension: until it asks for its next event, its environment
    # is not available and a second invoke would start another one (as on Lambda).
    wait_for(lambda: set(environments(extended, "ext-rules")) == {"ready"}, 10, "the extension's next call")
    _, body = invoke(client, "ext-rules", {"scenario": "events"})
    events = json.loads(body)
    ids = [entry["event"]["requestId"] for entry in events]
    assert request_id(first) in ids  # this one's may still be on its way to the extension's thread
    assert all(entry["status"] == 200 and len(entry["event_id"]) == 36 for entry in events)
    assert events[-1]["event"]["invokedFunctionArn"] == ARN.format("ext-rules")
