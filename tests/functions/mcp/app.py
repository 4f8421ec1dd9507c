"""Handlers of the MCP tests (tests/test_mcp.py): each function becomes a tool."""

import time


def add(event, context):
    return {"sum": event["a"] + event["b"]}


def echo(event, context):
    return event


def fail(event, context):
    raise ValueError(f"cannot handle {event.get('value')!r}")


def sleep(event, context):
    time.sleep(event.get("seconds", 5))
    return {"slept": True}
