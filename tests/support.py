"""Small helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import errno
import importlib.metadata
import io
import json
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import WaiterError


def invoke(client, name: str, event: object = None, **kwargs: object) -> tuple[dict, bytes]:
    """Invoke synchronously; the boto3 response and the raw payload bytes."""
    if event is not None:
        kwargs["Payload"] = event if isinstance(event, bytes) else json.dumps(event).encode()
    response = client.invoke(FunctionName=name, **kwargs)
    return response, response["Payload"].read()


def package(source: str, *, name: str = "app.py", extra: dict[str, bytes] | None = None) -> bytes:
    """A function's code as the zip CreateFunction and UpdateFunctionCode take: `source` as `name`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, source)
        for member, data in (extra or {}).items():
            archive.writestr(member, data)
    return buffer.getvalue()


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


def fd_targets(pid: int) -> dict[str, str]:
    """What each open descriptor of a process is (a file's path, socket:[inode], pipe:[inode], ...)."""
    targets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return targets


def wait_for_function(client, waiter: str, name: str) -> None:
    """boto3's `waiter` (function_active_v2, function_updated_v2, ...) for function `name`; when it ends
    in Failed, the failure says why (the function's state reasons, which the waiter's message leaves out)."""
    try:
        client.get_waiter(waiter).wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    except WaiterError as exc:
        configuration = client.get_function(FunctionName=name)["Configuration"]
        reasons = {key: value for key, value in configuration.items() if key.startswith(("State", "LastUpdate"))}
        raise AssertionError(f"{waiter} for {name}: {exc}; {reasons}") from None


def logged_records(service, function: str) -> list:
    """What `function` logged as `RECORD <json>` lines in the service log (ServiceProcess), in order: how
    tests see a function run when nobody waits for its answer (Event invocations, destinations)."""
    found = []
    for event in service.log_events():
        line = event.get("event", "")
        if event.get("function") == function and isinstance(line, str) and line.startswith("RECORD "):
            found.append(json.loads(line.removeprefix("RECORD ")))
    return found


def generic_sandboxes_settled(service, timeout: float = 30) -> dict:
    """/health's `pools.generic_sandboxes` once every one is started and ready (a cold start's replacement
    starts shortly after it, so their count varies until then); at once when they are off."""

    def settled() -> dict | None:
        generic = service.health()["pools"]["generic_sandboxes"]
        full = generic.get("starting") == 0 and generic.get("ready") == generic.get("size", 0) * generic.get("keys", 0)
        return generic if not generic["enabled"] or full else None

    return wait_for(settled, timeout, "the generic sandboxes to be started")  # type: ignore[return-value]


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted on the new folder `folder`, unmounted after (needs root)."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_disk(folder: Path) -> Path:
    """Fill the file system under `folder` to the last byte (ENOSPC); the file that does it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


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


def vendor(destination: Path, *distributions: str) -> None:
    """Copy installed distributions into a folder, as `pip install -t destination` would."""
    for name in distributions:
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or ():
            if ".." in file.parts or "__pycache__" in file.parts:
                continue
            target = destination / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(distribution.locate_file(file), target)


@dataclass
class OutsideHost:
    """A host outside this machine's own addresses: a network namespace joined to ours by a veth pair."""

    namespace: str
    address: str  # the test host's address
    gateway: str  # this machine's end of the link: one of the host's own addresses

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen:
        """Run a command on the test host."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespace, *argv], **kwargs)  # type: ignore[call-overload]


@contextlib.contextmanager
def outside_host() -> Iterator[OutsideHost]:
    """A test host in a network namespace made here (needs root and iproute2), removed afterwards.

    Sandboxes reach it only through the egress proxy, like any outside address: the proxy refuses the
    host's own addresses and loopback, so a server on 127.0.0.1 would be out of their reach.
    """
    name = f"srt-{uuid.uuid4().hex[:8]}"
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
    host_end, ns_end = f"{name[:10]}h", f"{name[:10]}n"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end],
        ["ip", "link", "set", ns_end, "netns", name],
        ["ip", "addr", "add", f"{subnet}.1/30", "dev", host_end],
        ["ip", "link", "set", host_end, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/30", "dev", ns_end],
        ["ip", "netns", "exec", name, "ip", "link", "set", ns_end, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield OutsideHost(namespace=name, address=f"{subnet}.2", gateway=f"{subnet}.1")
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    def reachable() -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_for(reachable, timeout, what)
