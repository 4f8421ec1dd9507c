"""Test harness: the real service, started as a subprocess on 127.0.0.1, driven over HTTP.

Nothing of ours is mocked here. `ServiceProcess.stop()` sends SIGTERM like an operator would and then
checks that no sandbox process outlived the service.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = Path(__file__).resolve().parent / "functions"
TEST_TEMPLATE = FUNCTIONS / "template.yaml"
BUNDLED_TEMPLATE = REPO / "template.yaml"
_UID_BLOCK = 500
_UID_BLOCKS = 1000  # uids 300000-799999
_UID_LOCKS = Path(tempfile.gettempdir()) / "sandbox-runtime-test-uids"
_uid_blocks = itertools.count((os.getpid() * 7) % _UID_BLOCKS)
_held_uid_blocks: dict[int, int] = {}  # first uid -> the descriptor holding its lock


def claim_uid_range() -> tuple[int, int]:
    """A block of sandbox uids no other test process on this machine holds (test runs of other
    worktrees or tenants included), so a leftover process in it is ours. Held by an flock until
    release_uid_range() or the end of this process."""
    _UID_LOCKS.mkdir(exist_ok=True)
    for _ in range(_UID_BLOCKS):
        first = 300000 + (next(_uid_blocks) % _UID_BLOCKS) * _UID_BLOCK
        if first in _held_uid_blocks:
            continue
        fd = os.open(_UID_LOCKS / str(first), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held_uid_blocks[first] = fd
        return first, first + _UID_BLOCK - 1
    raise RuntimeError(f"every block of sandbox uids under {_UID_LOCKS} is held by a test process")


def release_uid_range(uid_range: tuple[int, int]) -> None:
    fd = _held_uid_blocks.pop(uid_range[0], None)
    if fd is not None:
        os.close(fd)


_session_logs: Path | None = None


@pytest.fixture(scope="session", autouse=True)
def _service_logs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Service logs go to this session's pytest temp folder (pytest keeps the last few)."""
    global _session_logs
    _session_logs = tmp_path_factory.mktemp("service-logs")


def _log_dir() -> Path:
    assert _session_logs is not None, "ServiceProcess needs the _service_logs fixture"
    return _session_logs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox_processes(uid_range: tuple[int, int]) -> list[str]:
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    return [" ".join(row) for row in rows if uid_range[0] <= int(row[0]) <= uid_range[1]]


def assert_no_sandbox_left(uid_range: tuple[int, int], outlived: str, timeout: float = 5) -> None:
    """No process of the uid block is left `timeout` seconds from now (sandboxes die with what started them)."""
    deadline = time.monotonic() + timeout
    while (left := sandbox_processes(uid_range)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"sandbox processes outlived {outlived}: {left}"


class ServiceProcess:
    def __init__(
        self,
        template: Path,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        log_dir: Path | None = None,
    ) -> None:
        self.port = free_port()
        # Each service gets its own block of sandbox uids, so leftovers can be told apart from
        # the sandboxes of other services running at the same time.
        self.uid_range = claim_uid_range()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or _log_dir()) / f"service-{self.port}.log"
        environment = {
            **os.environ,
            "SANDBOX_POOL_SIZE": "0",
            "SANDBOX_UID_RANGE": f"{self.uid_range[0]}-{self.uid_range[1]}",
            "SANDBOX_LOG_FORMAT": "json",
            "SANDBOX_LOG_LEVEL": "debug",
            # Functions created through the API go to a folder of this service's own.
            "SANDBOX_DATA_DIR": str((log_dir or _log_dir()) / f"data-{self.port}"),
            **(env or {}),
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime_api",
                "serve",
                "--template",
                str(template),
                "--port",
                str(self.port),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=REPO,
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"service did not become healthy:\n{self.logs()}")

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
            return json.load(response)

    def logs(self) -> str:
        if not self._log.closed:  # still readable after stop()
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict]:
        events = []
        for line in self.logs().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"service ignored signal {sig} for {timeout}s:\n{self.logs()}") from None
        self._log.close()
        assert_no_sandbox_left(self.uid_range, "the service")
        release_uid_range(self.uid_range)  # not on a leftover: its processes must not meet the next service
        return self.proc.returncode

    def client(self, **config: object):
        return lambda_client(self.url, **config)


def lambda_client(url: str, **config: object):
    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60, **config),
    )


@pytest.fixture
def start_service() -> Iterator:
    """Factory: start_service(template, env={...}) → a running ServiceProcess, stopped after the test."""
    started: list[ServiceProcess] = []

    def start(template: Path = TEST_TEMPLATE, **kwargs: object) -> ServiceProcess:
        service = ServiceProcess(template, **kwargs)  # type: ignore[arg-type]
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    """One service over tests/functions/template.yaml for a whole test module."""
    running = ServiceProcess(TEST_TEMPLATE, env={"SANDBOX_EVENT_RETRY_DELAY": "0.2"})
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(service: ServiceProcess):
    return service.client()
