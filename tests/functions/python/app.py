"""Handlers for the integration tests; each one shows one behaviour."""

import decimal
import json
import os
import sys
import time

COUNTER_FILE = "/tmp/counter"
STARTED_AT = time.time()


def echo(event, context):
    return event


def one_param(event):
    return {"got": event}


def context_info(event, context):
    cc = context.client_context
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "client_context_custom": cc.custom if cc else None,
        "client_context_env": cc.env if cc else None,
        "identity_id": context.identity.cognito_identity_id if context.identity else None,
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
        "env": {key: value for key, value in os.environ.items()},
        "cwd": os.getcwd(),
        "uid": os.getuid(),
        "sys_path_head": sys.path[:2],
    }


def fail(event, context):
    print("about to fail")
    raise ValueError(f"bad value: {event.get('value')}")


def sleep(event, context):
    time.sleep(event.get("seconds", 10))
    return {"slept": event.get("seconds", 10), "pid": os.getpid()}


def crash(event, context):
    print("crashing now", flush=True)
    os._exit(event.get("status", 3))


def big(event, context):
    return "x" * event.get("size", 7 * 1024 * 1024)


def logs(event, context):
    prefix = event.get("prefix", "line")
    for i in range(event.get("lines", 3)):
        print(f"{prefix} {i}")
    print("to stderr", file=sys.stderr)
    return "logged"


def counter(event, context):
    count = int(open(COUNTER_FILE).read()) + 1 if os.path.exists(COUNTER_FILE) else 1
    with open(COUNTER_FILE, "w") as f:
        f.write(str(count))
    return {"count": count, "started_at": STARTED_AT, "pid": os.getpid()}


def numbers(event, context):
    return {"price": decimal.Decimal("1.50"), "nan": float("nan"), "text": "héllo"}


def unserialisable(event, context):
    return {1, 2}


def raw_bytes(event, context):
    return b"\x00\x01raw"


def flaky(event, context):
    raise RuntimeError("always fails")


def probe(event, context):
    """What a hostile handler would try: secrets, writes outside /tmp, other processes."""
    results = {}
    for path in ("/etc/shadow", "/root/.bashrc", "/proc/1/environ", "/etc/passwd"):
        try:
            with open(path, "rb") as f:
                results[path] = f.read().decode(errors="replace")
        except OSError as exc:
            results[path] = type(exc).__name__
    for path in ("/var/task/written", "/x", "/usr/x", "/opt/x", "/var/runtime/x", "/tmp/ok"):
        try:
            with open(path, "w") as f:
                f.write("x")
            results[path] = "written"
        except OSError as exc:
            results[path] = type(exc).__name__
    results["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return results


def payload_json(event, context):
    return json.dumps(event)


def lifecycle(event, context):
    """Counts invocations in /tmp, and can sleep or exit on demand: shows which environment ran."""
    count = counter(event, context)["count"]
    if event.get("seconds"):
        time.sleep(event["seconds"])
    if "exit" in event:
        os._exit(event["exit"])
    return {
        "count": count,
        "started_at": STARTED_AT,
        "log_stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"],
        "pid": os.getpid(),
    }
