"""The SDK (`runtime_api.sdk`, also importable as `sandbox_runtime.sdk`) against a real service: sessions, typed
results and errors, the session helper, the sync client, invoking functions, and the original Sandbox
Runtime's README example run as a script, as written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FUNCTIONS, REPO, ServiceProcess

from runtime_api import sdk
from sandbox_runtime.sdk import (
    ExecutionResult,
    ExecutionTimeoutError,
    FileInfo,
    InvalidCodeError,
    InvalidPathError,
    LambdaError,
    SandboxClient,
    SessionError,
    SessionExistsError,
    SessionFileNotFoundError,
    SessionInfo,
    SessionNotFoundError,
    SyncSandboxClient,
    UploadResult,
)

# The original's example, verbatim; a test runs it inside `async def main()` with the service's address.
EXAMPLE = """\
from sandbox_runtime.sdk import SandboxClient
client = SandboxClient(base_url="http://localhost:8000")
await client.create_session(session_id="my_session")
result = await client.execute_code(session_id="my_session", code="print('Hello!')", timeout=10)
print(result.stdout)
await client.close_session(session_id="my_session")
"""


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    running = ServiceProcess(FUNCTIONS / "sessions.yaml", env={"SANDBOX_SESSION_POOL_SIZE": "1"})
    yield running
    assert running.stop() == 0


def test_the_original_example_works_as_written(service: ServiceProcess, tmp_path: Path) -> None:
    body = EXAMPLE.replace("http://localhost:8000", service.url)
    script = tmp_path / "example.py"
    script.write_text(
        "import asyncio\n\nasync def main():\n" + textwrap.indent(body, "    ") + "\nasyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello!\n\n"
    assert sdk.SandboxClient is SandboxClient  # one class under both names


async def test_sessions_round_trip(service: ServiceProcess, tmp_path: Path) -> None:
    async with SandboxClient(base_url=service.url) as client:
        await _round_trip(client, tmp_path)


async def _round_trip(client: SandboxClient, tmp_path: Path) -> None:
    info = await client.create_session(memory_limit=131072)
    assert isinstance(info, SessionInfo) and info.status == "active" and info.session_id.startswith("session-")
    sid = info.session_id
    try:
        result = await client.execute_code(
            sid, "def handler(event, context):\n    return sum(event)\n", event=[1, 2, 3]
        )
        assert isinstance(result, ExecutionResult)
        assert result.result == 6 and result.has_result and result.success and result.exit_code == 0
        assert result.execution_time > 0 and "cpu_time" in result.resource_usage

        script = await client.execute_code(sid, "import sys\nprint(sys.argv[1:])", args=["x"], filename="s.py")
        assert script.stdout == "['x']\n" and not script.has_result
        shell = await client.execute(sid, "echo hi > written.txt; cat written.txt")
        assert shell.stdout == "hi\n"

        local = tmp_path / "local.csv"
        local.write_text("a,b\n1,2\n")
        assert await client.upload_file(sid, local) == UploadResult("local.csv", "/workspace/local.csv", 8)
        assert (
            await client.upload_file(sid, b"\x00\x01", filename="raw.bin", path="bin/")
        ).path == "/workspace/bin/raw.bin"
        assert (await client.create_file(sid, "notes/n.txt", "note")).size == 4
        names = [f.name for f in await client.list_files(sid)]
        assert {"local.csv", "bin/raw.bin", "notes/n.txt", "written.txt", "s.py", "main.py"} <= set(names)
        assert all(isinstance(f, FileInfo) for f in await client.list_files(sid, "bin"))
        assert await client.download_file(sid, "bin/raw.bin") == b"\x00\x01"
        target = tmp_path / "copy.csv"
        assert await client.download_file(sid, "/workspace/local.csv", destination=target) == local.read_bytes()
        assert target.read_bytes() == local.read_bytes()

        status = await client.get_status(sid)
        assert status.executions == 3 and status.limits["memory_limit"] == 131072 and status.expires_at
    finally:
        await client.close_session(sid)
    with pytest.raises(SessionNotFoundError):
        await client.get_status(sid)


async def test_typed_errors(service: ServiceProcess) -> None:
    async with SandboxClient(base_url=service.url) as client:
        await _typed_errors(client)


async def _typed_errors(client: SandboxClient) -> None:
    with pytest.raises(SessionNotFoundError) as missing:
        await client.execute("nobody", "true")
    assert missing.value.code == "SESSION_NOT_FOUND" and missing.value.status == 404
    assert missing.value.message == "Session 'nobody' does not exist"
    assert isinstance(missing.value, SessionError) and isinstance(missing.value, KeyError)

    async with client.session() as session:
        with pytest.raises(SessionExistsError):
            await client.create_session(session.id)
        with pytest.raises(ExecutionTimeoutError) as timeout:
            await session.execute("echo partial; sleep 30", timeout=1)
        assert timeout.value.status == 408 and timeout.value.details["stdout"] == "partial\n"
        with pytest.raises(InvalidCodeError):
            await session.execute_code("def broken(:")
        with pytest.raises(SessionFileNotFoundError) as not_there:
            await session.download_file("nothing.txt")
        assert isinstance(not_there.value, FileNotFoundError)
        with pytest.raises(InvalidPathError):
            await session.download_file("/etc/passwd")
        with pytest.raises(InvalidPathError):
            await session.upload_file(b"x", filename="x", path="../outside/")
        assert (await session.execute("echo alive")).stdout == "alive\n"  # the session outlived all of that
        session_id = session.id
    with pytest.raises(SessionNotFoundError):  # closed by the helper
        await client.get_status(session_id)


async def test_invoke_functions(service: ServiceProcess) -> None:
    async with SandboxClient(base_url=service.url) as client:
        await _invoke_functions(client)


async def _invoke_functions(client: SandboxClient) -> None:
    invoked = await client.invoke("echo", {"hello": "world"}, log_type="Tail")
    assert invoked.status_code == 200 and invoked.json() == {"hello": "world"}
    assert invoked.function_error is None and invoked.executed_version == "$LATEST"
    assert invoked.request_id and "REPORT RequestId" in (invoked.log_result or "")
    failing = await client.invoke("fail", {})
    assert failing.function_error == "Unhandled" and failing.json()["errorType"]
    with pytest.raises(LambdaError) as unknown:
        await client.invoke("no-such-function")
    assert unknown.value.code == "ResourceNotFoundException" and unknown.value.status == 404


def test_sync_client(service: ServiceProcess) -> None:
    with SyncSandboxClient(service.url) as client:
        assert client.healthy()["status"] == "healthy"
        with client.session() as session_id:
            assert client.execute_code(session_id, "print(6 * 7)").stdout == "42\n"
            client.create_file(session_id, "f.txt", b"bytes")
            assert client.download_file(session_id, "f.txt") == b"bytes"
            assert [f.name for f in client.list_files(session_id)] == ["f.txt", "main.py"]
            assert client.get_status(session_id).executions == 1
        assert client.invoke("echo", [1]).json() == [1]
        with pytest.raises(SessionNotFoundError):
            client.close_session(session_id)


def test_sdk_needs_only_httpx() -> None:
    """The SDK imports nothing of the service (Starlette, the sandbox), so clients need only httpx."""
    code = (
        "import sys; import sandbox_runtime.sdk; "
        "print(sorted(m for m in ('starlette', 'sandbox', 'runtime_api.service', 'uvicorn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout == "[]\n"
