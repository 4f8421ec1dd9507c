"""Handlers run by the real awslambdaric (vendored next to this file by the test)."""

import os


def handler(event, context):
    return {"event": event, "ric": "awslambdaric", "cwd": os.getcwd()}


def fail(event, context):
    raise KeyError("missing thing")


def context_info(event, context):
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "client_context_custom": context.client_context.custom if context.client_context else None,
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
    }
