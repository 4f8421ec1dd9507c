"""The real aws-cli (v1, from the venv) against the service serving the bundled template.yaml."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUNDLED_TEMPLATE, REPO, ServiceProcess
from support import aws_cli_environment

AWS = REPO / ".venv" / "bin" / "aws"


@pytest.fixture(scope="module")
def bundled() -> Iterator[ServiceProcess]:
    running = ServiceProcess(BUNDLED_TEMPLATE)
    yield running
    assert running.stop() == 0


@pytest.fixture
def aws(bundled: ServiceProcess, tmp_path: Path):
    """aws(*args, pipe=None) runs `aws --endpoint-url URL --region us-east-1 lambda ARGS [| pipe]` in tmp_path."""
    environment = aws_cli_environment(tmp_path)

    def run(*args: str, pipe: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(AWS), "--endpoint-url", bundled.url, "--region", "us-east-1", "lambda", *args]
        command: list[str] = argv
        if pipe is not None:
            command = ["bash", "-c", f"set -o pipefail; {shlex.join(argv)} | {pipe}"]
        return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=60)

    return run


def test_invoke_writes_the_result_and_prints_the_status(aws, tmp_path):
    done = aws("invoke", "--function-name", "hello", "--payload", '{"name":"Ada"}', "out.json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["message"] == "Hello, Ada!"
    assert uuid.UUID(written["request_id"]).version == 4


def test_log_tail_decodes_to_the_invocation_log(aws, tmp_path):
    done = aws(
        "invoke",
        "--function-name",
        "error",
        "--payload",
        '{"order_id": 7}',
        "--log-type",
        "Tail",
        "--query",
        "LogResult",
        "--output",
        "text",
        "out.json",
        pipe="base64 -d",
    )
    assert done.returncode == 0, done.stderr
    request_id = json.loads((tmp_path / "out.json").read_text())["requestId"]
    lines = done.stdout.splitlines()
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST", done.stdout
    assert "looking up order 7" in lines
    assert any(line.startswith("[ERROR] OrderNotFound: order 7 does not exist") for line in lines), done.stdout
    assert lines[-2] == f"END RequestId: {request_id}", done.stdout
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: "), done.stdout


def test_event_invocation_is_accepted_with_202(aws, bundled, tmp_path):
    before = bundled.health()["events"]["delivered"]
    done = aws("invoke", "--function-name", "hello", "--invocation-type", "Event", "--payload", "{}", "out.json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"StatusCode": 202}
    assert (tmp_path / "out.json").read_bytes() == b""
    deadline = time.monotonic() + 15
    while bundled.health()["events"]["delivered"] <= before:
        assert time.monotonic() < deadline, "the event was never delivered"
        time.sleep(0.05)


def test_function_error_is_reported_as_unhandled(aws, tmp_path):
    done = aws("invoke", "--function-name", "error", "--payload", '{"order_id": 9}', "out.json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST"}
    error = json.loads((tmp_path / "out.json").read_text())
    assert error["errorType"] == "OrderNotFound"
    assert error["errorMessage"] == "order 9 does not exist"


def test_unknown_function_is_resource_not_found(aws, tmp_path):
    done = aws("invoke", "--function-name", "no-such-function", "out.json")
    assert done.returncode != 0
    assert done.stdout == ""
    assert "ResourceNotFoundException" in done.stderr, done.stderr
    assert "Function not found: arn:aws:lambda:us-east-1:123456789012:function:no-such-function" in done.stderr
    assert not (tmp_path / "out.json").exists()
