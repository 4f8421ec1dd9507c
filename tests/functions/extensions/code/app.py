"""A handler that reads back what its environment's extensions recorded in /tmp."""

import json
import os


def _records(name):
    try:
        with open(f"/tmp/{name}") as records:
            return [json.loads(line) for line in records]
    except FileNotFoundError:
        return None


def handler(event, context):
    print(f"function says {event.get('say', 'hi')} in {context.aws_request_id}")
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmdline:
        parent = cmdline.read().split(b"\0")[0].decode()
    try:
        with open("/tmp/telemetry-subscribe.json") as answer:
            subscribed = json.load(answer)
    except FileNotFoundError:
        subscribed = None
    return {
        "recorder": _records("extension-recorder.jsonl"),
        "telemetry": _records("telemetry.jsonl"),
        "subscribed": subscribed,
        "opt_extensions": sorted(os.listdir("/opt/extensions")) if os.path.isdir("/opt/extensions") else None,
        "parent": parent,
    }
