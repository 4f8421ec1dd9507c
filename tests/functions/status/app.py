"""Handlers of the status page's tests (tests/test_status_page.py)."""

import time


def say(event, context):
    print(event.get("text", ""))
    return {"said": event.get("text", "")}


def fail(event, context):
    raise ValueError(f"bad value: {event.get('value')}")


def sleep(event, context):
    time.sleep(event.get("seconds", 10))
    return "slept"
