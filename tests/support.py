"""Small helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable


def invoke(client, name: str, event: object = None, **kwargs: object) -> tuple[dict, bytes]:
    """Invoke synchronously; the boto3 response and the raw payload bytes."""
    if event is not None:
        kwargs["Payload"] = event if isinstance(event, bytes) else json.dumps(event).encode()
    response = client.invoke(FunctionName=name, **kwargs)
    return response, response["Payload"].read()


def request_id(response: dict) -> str:
    return response["ResponseMetadata"]["RequestId"]


def tail(response: dict) -> str:
    return base64.b64decode(response["LogResult"]).decode(errors="replace")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `condition` until it is truthy (its value) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)
