"""Small helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


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


@dataclass
class Result:
    """A finished command: exit status and its two outputs."""

    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"


def aws_cli_environment(folder: Path) -> dict[str, str]:
    """The environment for the real aws CLI: dummy credentials, no user config, no host AWS_* variable."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_CONFIG_FILE=str(folder / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(folder / "no-credentials"),
        AWS_MAX_ATTEMPTS="1",  # a retried invoke would run the function twice
    )
    return environment
