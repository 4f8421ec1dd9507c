"""The environment variables Lambda sets for a function (reference/runtime-api.md §4.7)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping

from .functions import FunctionSpec
from .runtimes import RuntimeLaunch

# Customer variables may override these; every other reserved name is Lambda's alone.
_OVERRIDABLE = {
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LANG",
    "LD_LIBRARY_PATH",
    "PATH",
    "TZ",
}
# Names Lambda sets and a function's own variables cannot replace (its values are ignored).
_RESERVED = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "_AWS_XRAY_DAEMON_ADDRESS",
        "_AWS_XRAY_DAEMON_PORT",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
# Credentials a function sees: fixed dummies, never the host's (tests point boto3 at local endpoints).
_DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "sandbox-runtime",
    "AWS_ACCESS_KEY": "sandbox-runtime",
    "AWS_SECRET_ACCESS_KEY": "sandbox-runtime",
    "AWS_SESSION_TOKEN": "sandbox-runtime",
}


PROXY_URL = "http://127.0.0.1:3128"
_PROXY_VARIABLES = {
    # Outbound access goes through the egress proxy the service serves inside the sandbox.
    "HTTP_PROXY": PROXY_URL,
    "HTTPS_PROXY": PROXY_URL,
    "http_proxy": PROXY_URL,
    "https_proxy": PROXY_URL,
    "NO_PROXY": "localhost,127.0.0.1",
    "no_proxy": "localhost,127.0.0.1",
}


def proxy_environment() -> dict[str, str]:
    """The variables that send a sandbox's outbound connections through its egress proxy."""
    return dict(_PROXY_VARIABLES)


def function_environment(
    function: FunctionSpec,
    launch: RuntimeLaunch,
    *,
    region: str,
    network: bool = False,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a function's runtime. `base` (an image's own ENV) replaces Lambda's
    unreserved defaults; the function's variables replace both; the reserved names are Lambda's."""
    today = datetime.datetime.now(datetime.UTC).strftime("%Y/%m/%d")
    unreserved = {
        "LANG": "en_US.UTF-8",
        "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": (
            "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
        ),
        "TZ": ":UTC",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
    }
    reserved = {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": function.version,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{today}/[{function.version}]{uuid.uuid4().hex}",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
        "_AWS_XRAY_DAEMON_PORT": "2000",
        **_DUMMY_CREDENTIALS,
    }
    if handler := function.handler or launch.handler:
        reserved["_HANDLER"] = handler
    if launch.execution_env:
        reserved["AWS_EXECUTION_ENV"] = launch.execution_env
    # LoggingConfig, as Lambda hands it to the runtime; the function's own variables may override.
    if function.log_format == "JSON":
        unreserved["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        if function.application_log_level:
            unreserved["AWS_LAMBDA_LOG_LEVEL"] = function.application_log_level
    if network:
        unreserved.update(_PROXY_VARIABLES)
    customer = {
        key: value
        for key, value in function.environment.items()
        if key in _OVERRIDABLE or (key not in _RESERVED and key not in unreserved)
    }
    return {**unreserved, **(base or {}), **customer, **reserved}


# What a process reads from its environment only when it starts: a pre-started sandbox must have
# started with the function's own values of these (the others reach it with its assignment).
_STARTUP_NAMES = {"LANG", "LANGUAGE", "HOME", "GLIBC_TUNABLES"}
_STARTUP_PREFIXES = ("LC_", "LD_", "PYTHON", "MALLOC_")


def startup_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` a runtime process reads only when it starts (see `sandbox/prestart.py`)."""
    return {key: value for key, value in env.items() if key in _STARTUP_NAMES or key.startswith(_STARTUP_PREFIXES)}


def reserved_variables(function: FunctionSpec) -> list[str]:
    """The function's own variables that Lambda reserves, so their values are ignored."""
    return sorted(key for key in function.environment if key in _RESERVED)
