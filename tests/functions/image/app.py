"""The handler inside the test container image (tests/docker_support.py builds it)."""

import os
import sys


def handler(event, context):
    print(f"image handler running as {os.getuid()}")
    if event.get("exit"):
        sys.exit(int(event["exit"]))
    return {
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "handler": os.environ.get("_HANDLER"),
        "greeting": os.environ.get("IMAGE_GREETING"),
        "custom": os.environ.get("CUSTOM"),
        "path": os.environ.get("PATH"),
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "event": event,
    }


def other(event, context):
    return {"other": True, "handler": os.environ.get("_HANDLER")}
