"""Execution environments through boto3: timeouts, crashes, init errors, marshalling, reuse, parallelism,
concurrency limits, the init limit, pre-started and reaped environments, shutdown, and what a function sees.

Where a special configuration is needed, `start_service` runs a service over a small template written here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from support import invoke, request_id, tail, wait_for

FUNCTIONS = Path(__file__).resolve().parent / "functions"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
TOO_LARGE_MESSAGE = re.compile(
    r"Response payload size( \(\d+ bytes\))? exceeded maximum allowed payload size \(6291556 bytes\)\."
)


def pool(service, name: str) -> dict:
    return service.health()["pools"]["functions"][name]


def write_template(directory: Path, functions: dict[str, dict]) -> Path:
    """A template of python3.11 functions (code from tests/functions/python unless CodeUri says otherwise)."""
    resources = {}
    for name, properties in functions.items():
        code = properties.pop("CodeUri", "python")
        resources[name.title().replace("-", "")] = {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "FunctionName": name,
                "Runtime": "python3.11",
                "CodeUri": str(FUNCTIONS / code),
                "MemorySize": 256,
                "Timeout": 5,
                **properties,
            },
        }
    path = directory / "template.yaml"
    path.write_text(yaml.safe_dump({"Transform": "AWS::Serverless-2016-10-31", "Resources": resources}))
    return path


# -- failures and recovery --------------------------------------------------------------------------


def test_timeout_is_sandbox_timedout_and_the_next_invoke_gets_a_fresh_environment(client):
    _, before = invoke(client, "lifecycle", {})
    before = json.loads(before)

    response, body = invoke(client, "lifecycle", {"seconds": 4})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    rid = request_id(response)
    assert json.loads(body) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {rid} Error: Task timed out after 1.00 seconds",
    }

    response, body = invoke(client, "lifecycle", {})
    assert "FunctionError" not in response
    after = json.loads(body)
    assert after["count"] == 1  # a new /tmp: a new environment
    assert after["log_stream"] != before["log_stream"]
    assert after["started_at"] > before["started_at"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(3, "Runtime exited with error: exit status 3"), (0, "Runtime exited without providing a reason")],
)
def test_crash_is_runtime_exit_error_and_the_next_invoke_recovers(client, status, reason):
    _, before = invoke(client, "lifecycle", {})
    before = json.loads(before)

    response, body = invoke(client, "lifecycle", {"exit": status})
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id(response)} Error: {reason}",
    }

    response, body = invoke(client, "lifecycle", {})
    assert "FunctionError" not in response
    after = json.loads(body)
    assert after["count"] == 1
    assert after["log_stream"] != before["log_stream"]


def test_crash_handler_reports_its_exit_status(client):
    response, body = invoke(client, "crash", {"status": 3})
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id(response)} Error: Runtime exited with error: exit status 3",
    }


def test_init_error_is_reported_and_init_is_retried_on_the_next_invoke(client, service):
    cold_starts = pool(service, "init-error")["cold_starts"]
    for attempt in (1, 2):
        response, body = invoke(client, "init-error", LogType="Tail")
        assert response["StatusCode"] == 200
        assert response["FunctionError"] == "Unhandled"
        error = json.loads(body)
        assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
        assert error["errorType"] == "RuntimeError"
        assert error["errorMessage"] == "init went wrong"
        assert error["requestId"] == ""
        assert error["stackTrace"][-1].startswith('  File "/var/task/app.py", line 1, in <module>')
        # A fresh attempt: a new environment ran the module again, and its init output is in this tail.
        assert pool(service, "init-error")["cold_starts"] == cold_starts + attempt
        assert "init went wrong" in tail(response)
    assert pool(service, "init-error")["environments"] == {}


@pytest.mark.parametrize(
    ("function", "error_type", "message"),
    [
        ("bad-handler", "Runtime.HandlerNotFound", "Handler 'missing' missing on module 'app'"),
        (
            "malformed-handler",
            "Runtime.MalformedHandlerName",
            "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)",
        ),
        ("no-module", "Runtime.ImportModuleError", "Unable to import module 'app': No module named 'app'"),
    ],
)
def test_bad_handler_strings(client, function, error_type, message):
    response, body = invoke(client, function)
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body) == {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": []}


def test_response_size_limit_and_the_service_stays_healthy(client, service):
    response, body = invoke(client, "big", {"size": 6291556 - 2})  # a JSON string: 2 quotes more
    assert "FunctionError" not in response
    assert len(body) == 6291556

    response, body = invoke(client, "big", {"size": 6291556 - 1})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(body)
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert TOO_LARGE_MESSAGE.fullmatch(error["errorMessage"]), error["errorMessage"]

    assert service.health()["status"] == "healthy"
    response, body = invoke(client, "big", {"size": 5})
    assert "FunctionError" not in response
    assert body == b'"xxxxx"'
    assert json.loads(invoke(client, "echo", {"still": "up"})[1]) == {"still": "up"}


# -- marshalling ------------------------------------------------------------------------------------


def test_unserialisable_result_is_a_marshal_error(client):
    response, body = invoke(client, "unserialisable")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body) == {
        "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": request_id(response),
        "stackTrace": [],
    }


def test_decimal_nan_and_non_ascii_are_marshalled_like_awslambdaric(client):
    response, body = invoke(client, "numbers")
    assert "FunctionError" not in response
    # awslambdaric on python3.11: Decimal digits as written, bare NaN, non-ASCII escaped.
    assert body == b'{"price": 1.50, "nan": NaN, "text": "h\\u00e9llo"}'


def test_bytes_result_is_returned_raw(client):
    response, body = invoke(client, "raw-bytes")
    assert "FunctionError" not in response
    assert body == b"\x00\x01raw"


# -- reuse, parallelism, cold starts ----------------------------------------------------------------


def test_warm_environment_keeps_tmp_between_invokes(client):
    results = [json.loads(invoke(client, "counter")[1]) for _ in range(3)]  # back to back
    assert [result["count"] for result in results] == [1, 2, 3]
    assert len({result["started_at"] for result in results}) == 1  # the module was imported once


def test_back_to_back_invokes_reuse_one_environment(client, service):
    """The caller has its answer before the runtime polls /next again; the next invoke must still go to that
    environment rather than start another one."""
    cold_starts = pool(service, "echo")["cold_starts"]
    for n in range(30):
        assert json.loads(invoke(client, "echo", {"n": n})[1]) == {"n": n}
    assert pool(service, "echo")["cold_starts"] - cold_starts <= 1
    assert sum(pool(service, "echo")["environments"].values()) == 1


def test_parallel_invokes_run_in_parallel_environments(client, service):
    invoke(client, "whoami", {})  # one warm environment, so the reference below is a warm invoke
    started = time.monotonic()
    response, _ = invoke(client, "whoami", {"seconds": 1})
    single = time.monotonic() - started
    assert "FunctionError" not in response

    with ThreadPoolExecutor(4) as executor:
        started = time.monotonic()
        results = list(executor.map(lambda _: invoke(client, "whoami", {"seconds": 1}), range(4)))
        elapsed = time.monotonic() - started
    assert all("FunctionError" not in response for response, _ in results)
    payloads = [json.loads(body) for _, body in results]
    assert len({payload["log_stream"] for payload in payloads}) == 4, payloads
    assert elapsed < 0.6 * (4 * single), f"4 parallel invokes took {elapsed:.2f}s; one alone takes {single:.2f}s"
    assert sum(pool(service, "whoami")["environments"].values()) >= 4


def test_report_has_init_duration_on_a_cold_start_only(client, service):
    assert pool(service, "one-param")["environments"] == {}, "precondition: no environment for one-param yet"
    cold, _ = invoke(client, "one-param", "x", LogType="Tail")
    warm, _ = invoke(client, "one-param", "y", LogType="Tail")
    cold_report = tail(cold).splitlines()[-1]
    warm_report = tail(warm).splitlines()[-1]
    assert cold_report.startswith(f"REPORT RequestId: {request_id(cold)}\t")
    assert warm_report.startswith(f"REPORT RequestId: {request_id(warm)}\t")
    assert re.search(r"\tInit Duration: \d+\.\d\d ms\t$", cold_report), cold_report
    assert "Init Duration" not in warm_report


# -- what the function sees -------------------------------------------------------------------------


def test_environment_variables(client):
    _, body = invoke(client, "context-info")
    info = json.loads(body)
    env = info["env"]
    expected = {
        "AWS_LAMBDA_FUNCTION_NAME": "context-info",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "us-east-1",  # the template's AWS_REGION is reserved: dropped
        "AWS_DEFAULT_REGION": "us-east-1",
        "TZ": ":Europe/Paris",  # overridable
        "CUSTOM_VAR": "custom-value",
        "FROM_GLOBALS": "yes",
        "STAGE": "test",
        "_HANDLER": "app.context_info",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/context-info",
        "LANG": "en_US.UTF-8",
        "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "_AWS_XRAY_DAEMON_PORT": "2000",
    }
    assert {key: env.get(key) for key in expected} == expected
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", env["AWS_LAMBDA_LOG_STREAM_NAME"])
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == info["log_stream_name"]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert env[key]
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert env["_X_AMZN_TRACE_ID"] == info["trace_env"]


def test_no_host_variable_reaches_the_function(start_service, tmp_path):
    template = write_template(
        tmp_path, {"context-info": {"Handler": "app.context_info"}, "probe": {"Handler": "app.probe"}}
    )
    service = start_service(template, env={"HOST_SECRET": "hunter2"})
    client = service.client()
    env = json.loads(invoke(client, "context-info")[1])["env"]
    assert "HOST_SECRET" not in env
    assert "hunter2" not in json.dumps(env)
    lambda_defined = {"LANG", "PATH", "LD_LIBRARY_PATH", "TZ", "PWD", "LC_CTYPE"}  # PEP 538 sets LC_CTYPE
    leaked = {key for key, value in os.environ.items() if env.get(key) == value and key not in lambda_defined}
    assert not leaked, f"host variables visible to the function: {sorted(leaked)}"

    pid1_environ = json.loads(invoke(client, "probe")[1])["/proc/1/environ"]
    assert "HOST_SECRET" not in pid1_environ and "hunter2" not in pid1_environ
    assert not [key for key, value in os.environ.items() if f"{key}={value}" in pid1_environ]


def test_context_fields(client):
    response, body = invoke(client, "context-info")
    info = json.loads(body)
    assert info["request_id"] == request_id(response)
    assert info["function_name"] == "context-info"
    assert info["function_version"] == "$LATEST"
    assert info["memory_limit_in_mb"] == "256"
    assert info["invoked_function_arn"] == ARN.format("context-info")
    assert info["log_group_name"] == "/aws/lambda/context-info"
    assert 5000 < info["remaining_ms"] <= 7000
    assert info["cwd"] == "/var/task"
    assert info["sys_path_head"][0] == "/var/task"

    qualified = json.loads(invoke(client, "context-info", Qualifier="$LATEST")[1])
    assert qualified["invoked_function_arn"] == ARN.format("context-info") + ":$LATEST"
    by_arn = json.loads(invoke(client, ARN.format("context-info"))[1])
    assert by_arn["invoked_function_arn"] == ARN.format("context-info")


# -- concurrency limits -----------------------------------------------------------------------------


def _busy_in_background(client, name: str, seconds: float) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(invoke(client, name, {"seconds": seconds})))
    thread.start()
    return thread, results


def test_function_concurrency_cap_throttles_that_function_only(start_service, tmp_path):
    """SANDBOX_MAX_CONCURRENCY caps each function: with 1 and no queue, a second invoke of the busy
    function is throttled while another function still runs."""
    template = write_template(
        tmp_path, {"whoami": {"Handler": "app.lifecycle", "Timeout": 10}, "echo": {"Handler": "app.echo"}}
    )
    service = start_service(template, env={"SANDBOX_MAX_CONCURRENCY": "1", "SANDBOX_QUEUE_TIMEOUT": "0"})
    client = service.client()
    thread, results = _busy_in_background(client, "whoami", 2)
    try:
        wait_for(lambda: pool(service, "whoami")["environments"], 10, "the first invoke to hold an environment")
        with pytest.raises(client.exceptions.TooManyRequestsException) as info:
            client.invoke(FunctionName="whoami", Payload=b"{}")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert info.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
        assert json.loads(client.invoke(FunctionName="echo", Payload=b'{"other": 1}')["Payload"].read()) == {"other": 1}
    finally:
        thread.join(30)
    assert results, "the first invoke got no answer"
    response, _ = results[0]
    assert "FunctionError" not in response  # the first invoke was not disturbed


def test_machine_wide_cap_throttles_across_functions_and_evicts_idle(start_service, tmp_path):
    """SANDBOX_MAX_ENVIRONMENTS bounds live sandboxes across all functions, like an account's limit:
    while its only environment is busy every other function is throttled; once idle, that
    environment is evicted to make room for another function."""
    template = write_template(
        tmp_path, {"whoami": {"Handler": "app.lifecycle", "Timeout": 10}, "echo": {"Handler": "app.echo"}}
    )
    service = start_service(template, env={"SANDBOX_MAX_ENVIRONMENTS": "1", "SANDBOX_QUEUE_TIMEOUT": "0"})
    client = service.client()
    thread, results = _busy_in_background(client, "whoami", 2)
    try:
        wait_for(lambda: pool(service, "whoami")["environments"], 10, "the first invoke to hold an environment")
        with pytest.raises(client.exceptions.TooManyRequestsException) as info:
            client.invoke(FunctionName="echo", Payload=b"{}")
        assert info.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
    finally:
        thread.join(30)
    assert results and "FunctionError" not in results[0][0]
    # whoami's environment is idle now: echo takes its place instead of being throttled.
    assert json.loads(client.invoke(FunctionName="echo", Payload=b'{"evicted": 1}')["Payload"].read()) == {"evicted": 1}
    wait_for(lambda: not pool(service, "whoami")["environments"], 10, "whoami's idle environment to be evicted")
    assert service.health()["pools"]["environments"] == {"live": 1, "limit": 1}


def test_reserved_concurrency_zero_throttles_every_invoke(start_service, tmp_path):
    template = write_template(tmp_path, {"closed": {"Handler": "app.echo", "ReservedConcurrentExecutions": 0}})
    client = start_service(template).client()
    with pytest.raises(client.exceptions.TooManyRequestsException) as info:
        client.invoke(FunctionName="closed", Payload=b"{}")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


# -- the init limit ---------------------------------------------------------------------------------


def test_init_over_the_limit_and_over_the_timeout_is_sandbox_timedout(start_service, tmp_path):
    """Init (3 s) exceeds the init limit (1 s); Lambda retries it inside the invoke under the function
    timeout (2 s), which it exceeds too: the invoke times out instead of hanging."""
    template = write_template(tmp_path, {"slow-init": {"Handler": "app.handler", "CodeUri": "slowinit", "Timeout": 2}})
    client = start_service(template, env={"SANDBOX_INIT_TIMEOUT": "1"}).client()
    started = time.monotonic()
    response, body = invoke(client, "slow-init")
    assert time.monotonic() - started < 15
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id(response)} Error: Task timed out after 2.00 seconds",
    }


def test_init_over_the_limit_is_retried_under_the_function_timeout(start_service, tmp_path):
    """Lambda: "If [init does] not complete within 10 seconds, Lambda retries the Init phase at the time of the
    first function invocation with the configured function timeout." A 3 s init fits a 6 s timeout."""
    template = write_template(tmp_path, {"slow-init": {"Handler": "app.handler", "CodeUri": "slowinit", "Timeout": 6}})
    client = start_service(template, env={"SANDBOX_INIT_TIMEOUT": "1"}).client()
    response, body = invoke(client, "slow-init")
    assert "FunctionError" not in response, body
    assert "initialised_at" in json.loads(body)


# -- pre-started and idle environments --------------------------------------------------------------


def test_pool_size_pre_starts_environments(start_service, tmp_path):
    template = write_template(tmp_path, {"echo": {"Handler": "app.echo"}})
    service = start_service(template, env={"SANDBOX_POOL_SIZE": "2"})
    wait_for(lambda: pool(service, "echo")["environments"] == {"ready": 2}, 20, "2 ready environments")
    _, body = invoke(service.client(), "echo", {"warm": True})
    assert json.loads(body) == {"warm": True}
    assert pool(service, "echo")["cold_starts"] == 0
    # The environment that answered is BUSY until its runtime asks for the next event.
    wait_for(lambda: pool(service, "echo")["environments"] == {"ready": 2}, 5, "both environments ready again")


def test_idle_environments_are_reaped_after_the_keep_alive(start_service, tmp_path):
    template = write_template(tmp_path, {"echo": {"Handler": "app.echo"}})
    service = start_service(template, env={"SANDBOX_KEEP_ALIVE": "1", "SANDBOX_POOL_SIZE": "0"})
    client = service.client()
    invoke(client, "echo", {})
    assert pool(service, "echo")["cold_starts"] == 1
    wait_for(lambda: pool(service, "echo")["environments"] == {}, 15, "the idle environment to be reaped")
    invoke(client, "echo", {})
    assert pool(service, "echo")["cold_starts"] == 2  # the reaped environment was not reused


# -- shutdown ---------------------------------------------------------------------------------------


def test_sigterm_lets_the_in_flight_invoke_finish(start_service, tmp_path):
    template = write_template(tmp_path, {"whoami": {"Handler": "app.lifecycle", "Timeout": 10}})
    service = start_service(template)
    thread, results = _busy_in_background(service.client(), "whoami", 2)
    wait_for(lambda: pool(service, "whoami")["environments"].get("busy"), 10, "the invoke to be running")
    service.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    assert results, "the in-flight invoke got no answer"
    response, body = results[0]
    assert "FunctionError" not in response
    assert json.loads(body)["count"] == 1
    service.proc.wait(30)
    assert service.stop() == 0  # already exited: checks that no sandbox process is left


def test_the_aws_sdk_is_importable_as_on_lambda(client):
    """Lambda's Python runtimes carry boto3 in /var/runtime; handlers import it without vendoring."""
    response = client.invoke(FunctionName="sdk")
    assert "FunctionError" not in response, response["Payload"].read()
    result = json.loads(response["Payload"].read())
    assert result["file"].startswith("/var/runtime/boto3/")
    assert result["service"] == "s3"


def test_logging_config_selects_the_runtimes_log_format(client):
    """LoggingConfig reaches the runtime as Lambda passes it: AWS_LAMBDA_LOG_FORMAT / _LOG_LEVEL."""
    env = json.loads(invoke(client, "json-logs")[1])["env"]
    assert env["AWS_LAMBDA_LOG_FORMAT"] == "JSON"
    assert env["AWS_LAMBDA_LOG_LEVEL"] == "DEBUG"
    plain = json.loads(invoke(client, "context-info")[1])["env"]
    assert "AWS_LAMBDA_LOG_FORMAT" not in plain


def test_reserved_variables_in_the_template_are_named_at_start(service):
    """Lambda ignores a function's own AWS_REGION; the service says so once instead of dropping it silently."""
    warnings = [e for e in service.log_events() if e.get("event") == "function.reserved_variables"]
    assert [(e["function"], e["variables"]) for e in warnings] == [("context-info", ["AWS_REGION"])]
