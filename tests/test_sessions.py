"""The agent sessions API (/workspace/se/...) over HTTP, against a real service and real sandboxes: the round
trip, persistence between calls, files, every error code, timeouts, limits, expiry, the cap, the warm pool,
network per session, and the lifecycle log.

Escape attempts against sessions (host files, the service's port, symlinks out of the workspace) are in
tests/security/test_session_escapes.py.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FUNCTIONS, ServiceProcess, sandbox_processes
from support import wait_for

TEMPLATE = FUNCTIONS / "sessions.yaml"
SE = "/workspace/se"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    running = ServiceProcess(TEMPLATE, env={"SANDBOX_SESSION_POOL_SIZE": "0"})
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def http(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


@pytest.fixture
def session(http: httpx.Client) -> Iterator[str]:
    """A new session, closed after the test (if the test did not)."""
    session_id = f"t-{uuid.uuid4().hex[:10]}"
    ok(http.post(f"{SE}/session/{session_id}"))
    yield session_id
    http.delete(f"{SE}/session/{session_id}")


def ok(response: httpx.Response) -> dict:
    """The `data` of a successful answer."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True, body
    return body["data"]


def failed(response: httpx.Response, status: int, code: str) -> dict:
    """The `error` of an error answer, checked."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def run(http: httpx.Client, session_id: str, code: str, **fields: object) -> dict:
    return ok(http.post(f"{SE}/execute_code/{session_id}", json={"code": code, **fields}))


def sh(http: httpx.Client, session_id: str, command: str, **fields: object) -> dict:
    return ok(http.post(f"{SE}/execute/{session_id}", json={"command": command, **fields}))


# -- the round trip -----------------------------------------------------------------------------------------


def test_round_trip(http: httpx.Client) -> None:
    created = ok(http.post(f"{SE}/session/my_session"))
    assert created["session_id"] == "my_session"
    assert created["status"] == "active"
    assert ISO.fullmatch(created["created_at"])
    assert created["limits"] == {"memory_limit": 131072, "cpu_quota": 2.0, "timeout": 300.0, "allow_network": True}

    hello = run(http, "my_session", "print('Hello!')", timeout=10)
    assert hello["exit_code"] == 0
    assert hello["stdout"] == "Hello!\n"
    assert hello["stderr"] == ""
    assert isinstance(hello["execution_time"], float) and hello["execution_time"] > 0
    assert "result" not in hello  # a script has no result

    status = ok(http.get(f"{SE}/status/my_session"))
    assert status["session_id"] == "my_session" and status["status"] == "active"
    assert status["executions"] == 1 and status["busy"] is False
    assert status["workspace"]["path"] == "/workspace"

    closed = ok(http.delete(f"{SE}/session/my_session"))
    assert closed["message"] == "Session closed successfully"
    error = failed(http.get(f"{SE}/status/my_session"), 404, "SESSION_NOT_FOUND")
    assert error["message"] == "Session 'my_session' does not exist"


def test_handler_gets_the_event_and_its_result_comes_back(http: httpx.Client, session: str) -> None:
    code = "def handler(event):\n    print('got', event)\n    return {'doubled': event['n'] * 2, 'big': 2 ** 70}\n"
    data = run(http, session, code, event={"n": 21})
    assert data["result"] == {"doubled": 42, "big": 2**70}
    assert data["stdout"] == "got {'n': 21}\n"
    assert data["exit_code"] == 0

    with_context = (
        "import asyncio\n"
        "async def handler(event, context):\n"
        "    await asyncio.sleep(0)\n"
        "    return [context.session_id, context.get_remaining_time_in_millis() > 0, context.memory_limit_in_mb]\n"
    )
    assert run(http, session, with_context, timeout=20)["result"] == [session, True, "128"]
    assert run(http, session, "def handler(event):\n    return event\n")["result"] == {}  # no event: {}


def test_a_failing_handler_reports_the_error(http: httpx.Client, session: str) -> None:
    data = run(http, session, "def handler(event):\n    raise ValueError('boom')\n")
    assert data["exit_code"] == 1
    assert data["error"]["errorType"] == "ValueError" and data["error"]["errorMessage"] == "boom"
    assert any("raise ValueError" in line for line in data["error"]["stackTrace"])
    assert "session_runner" not in data["stderr"] and "ValueError: boom" in data["stderr"]
    unserializable = run(http, session, "def handler(event):\n    return object()\n")
    assert unserializable["exit_code"] == 1 and "JSON serializable" in unserializable["error"]["errorMessage"]


def test_plain_code_runs_as_a_script(http: httpx.Client, session: str) -> None:
    code = "import sys, os\nprint(sys.argv, __name__, os.getcwd())\nprint('to stderr', file=sys.stderr)\n"
    data = run(http, session, code, args=["a", "b c"], filename="tools/script.py")
    assert data["stdout"] == "['/workspace/tools/script.py', 'a', 'b c'] __main__ /workspace\n"
    assert data["stderr"] == "to stderr\n"
    failing = run(http, session, "import sys\nsys.exit(7)\n")
    assert failing["exit_code"] == 7
    raising = run(http, session, "x = 1\nraise KeyError('nope')\n")
    assert raising["exit_code"] == 1 and "KeyError: 'nope'" in raising["stderr"]


def test_shell_commands_and_bash_scripts(http: httpx.Client, session: str) -> None:
    data = sh(http, session, "echo \"$0\" >/dev/null; printf '%s|' hello", args=["it's", "a b"])
    assert data["stdout"] == "hello|it's|a b|"
    assert sh(http, session, "exit 3")["exit_code"] == 3
    assert sh(http, session, "pwd; whoami")["stdout"] == "/workspace\nsbx_user1051\n"
    script = run(
        http, session, 'echo "args: $*"; [[ -n "$BASH_VERSION" ]] && echo bash', script_type="bash", args=["x"]
    )
    assert script["stdout"] == "args: x\nbash\n"
    files = {f["name"] for f in ok(http.get(f"{SE}/files/{session}"))["files"]}
    assert "main.sh" in files  # the code is written into the workspace (filename defaults to main.sh)


def test_files_persist_between_calls(http: httpx.Client, session: str) -> None:
    run(http, session, "open('notes.txt', 'w').write('remember me')\nopen('/tmp/scratch', 'w').write('tmp too')\n")
    assert sh(http, session, "cat notes.txt /tmp/scratch")["stdout"] == "remember metmp too"
    code = "def handler(event):\n    return open('/workspace/notes.txt').read()\n"
    assert run(http, session, code)["result"] == "remember me"
    sh(http, session, "mkdir -p deep/er && echo x > deep/er/file")
    names = [f["name"] for f in ok(http.get(f"{SE}/files/{session}"))["files"]]
    assert "notes.txt" in names and "deep/er/file" in names
    # A background process outlives its execution, inside the session.
    sh(http, session, "nohup sleep 30 >/dev/null 2>&1 &")
    assert "sleep 30" in sh(http, session, "ps -eo args")["stdout"]


def test_output_is_bounded(start_service) -> None:
    service = start_service(TEMPLATE, env={"SANDBOX_SESSION_OUTPUT_LIMIT": "1000", "SANDBOX_SESSION_POOL_SIZE": "0"})
    with httpx.Client(base_url=service.url, timeout=60) as http:
        ok(http.post(f"{SE}/session/flood"))
        data = sh(http, "flood", "head -c 5000000 /dev/zero | tr '\\0' a; echo done >&2")
        assert len(data["stdout"]) == 1000 and data["stdout_truncated"] is True
        assert data["stderr"] == "done\n" and data["stderr_truncated"] is False


# -- files --------------------------------------------------------------------------------------------------


def test_upload_list_download(http: httpx.Client, session: str) -> None:
    content = bytes(range(256)) * 40
    up = ok(http.post(f"{SE}/upload/{session}", files={"file": ("data.bin", content)}))
    assert up == {"filename": "data.bin", "path": "/workspace/data.bin", "size": len(content)}
    into = ok(http.post(f"{SE}/upload/{session}", files={"file": ("a.txt", b"A")}, data={"path": "/workspace/files/"}))
    assert into["path"] == "/workspace/files/a.txt"
    renamed = ok(http.post(f"{SE}/upload/{session}", files={"file": ("b.txt", b"B")}, data={"path": "in/c.txt"}))
    assert renamed == {"filename": "c.txt", "path": "/workspace/in/c.txt", "size": 1}
    folder = ok(http.post(f"{SE}/upload/{session}", files={"file": ("../../d.txt", b"D")}, data={"path": "in"}))
    assert folder["path"] == "/workspace/in/d.txt"  # an existing folder; the client's folders are dropped
    created = ok(http.post(f"{SE}/create/{session}", json={"filename": "made/by/json.txt", "content": "héllo"}))
    assert created == {"filename": "json.txt", "path": "/workspace/made/by/json.txt", "size": 6}
    ok(http.post(f"{SE}/create/{session}", json={"filename": "raw.bin", "content": "AAEC/w==", "encoding": "base64"}))

    listing = ok(http.get(f"{SE}/files/{session}"))["files"]
    by_name = {f["name"]: f for f in listing}
    assert {"data.bin", "files/a.txt", "in/c.txt", "in/d.txt", "made/by/json.txt", "raw.bin"} <= set(by_name)
    assert by_name["data.bin"]["size"] == len(content) and ISO.fullmatch(by_name["data.bin"]["modified"])
    assert [f["name"] for f in ok(http.get(f"{SE}/files/{session}", params={"path": "in"}))["files"]] == [
        "in/c.txt",
        "in/d.txt",
    ]

    download = http.get(f"{SE}/download/{session}/data.bin")
    assert download.status_code == 200 and download.content == content
    assert download.headers["content-type"] == "application/octet-stream"
    assert http.get(f"{SE}/download/{session}/made/by/json.txt").content == "héllo".encode()
    assert http.get(f"{SE}/download/{session}/raw.bin").content == b"\0\1\2\xff"
    # What the service wrote belongs to the sandbox: it reads, changes and removes it.
    assert sh(http, session, "cat in/c.txt && echo more >> in/c.txt && rm files/a.txt && stat -c %U in/c.txt")[
        "stdout"
    ] == ("Bsbx_user1051\n")
    assert http.get(f"{SE}/download/{session}/in/c.txt").content == b"Bmore\n"


def test_size_limits(start_service) -> None:
    service = start_service(TEMPLATE, env={"SANDBOX_SESSION_MAX_FILE_SIZE": "1", "SANDBOX_SESSION_POOL_SIZE": "0"})
    with httpx.Client(base_url=service.url, timeout=60) as http:
        ok(http.post(f"{SE}/session/sizes"))
        big = b"x" * (3 * 1024 * 1024)
        failed(http.post(f"{SE}/upload/sizes", files={"file": ("big", big)}), 413, "RESOURCE_LIMIT")
        sh(http, "sizes", "head -c 2000000 /dev/zero > big.bin")
        failed(http.get(f"{SE}/download/sizes/big.bin"), 413, "RESOURCE_LIMIT")
        listed = ok(http.get(f"{SE}/files/sizes"))["files"]
        assert [(f["name"], f["size"]) for f in listed] == [("big.bin", 2000000)]  # the refused upload left nothing


# -- errors -------------------------------------------------------------------------------------------------


def test_unknown_session_everywhere(http: httpx.Client) -> None:
    calls = [
        http.get(f"{SE}/status/nope"),
        http.delete(f"{SE}/session/nope"),
        http.post(f"{SE}/execute_code/nope", json={"code": "print(1)"}),
        http.post(f"{SE}/execute/nope", json={"command": "true"}),
        http.post(f"{SE}/upload/nope", files={"file": ("a", b"a")}),
        http.get(f"{SE}/download/nope/a"),
        http.get(f"{SE}/files/nope"),
        http.post(f"{SE}/create/nope", json={"filename": "a", "content": ""}),
    ]
    for response in calls:
        assert failed(response, 404, "SESSION_NOT_FOUND")["message"] == "Session 'nope' does not exist"


def test_request_errors(http: httpx.Client, session: str) -> None:
    failed(http.post(f"{SE}/session/{session}"), 409, "SESSION_EXISTS")
    failed(http.post(f"{SE}/session/bad%20id"), 400, "INVALID_REQUEST")
    failed(http.post(f"{SE}/session/x1", json={"memory_limit": 10}), 400, "INVALID_REQUEST")
    failed(http.post(f"{SE}/session/x2", json={"allow_network": "yes"}), 400, "INVALID_REQUEST")
    # A quota under the cgroup minimum (1 ms per period) made the sandbox fail to start: a 500 (found by fuzzing).
    failed(http.post(f"{SE}/session/x3", json={"cpu_quota": 1e-9}), 400, "INVALID_REQUEST")
    failed(http.post(f"{SE}/execute_code/{session}", content=b"{not json"), 400, "INVALID_REQUEST")
    deep = b"[" * 5000 + b"]" * 5000  # was a 500 INTERNAL_ERROR (RecursionError)
    failed(http.post(f"{SE}/execute_code/{session}", content=deep), 400, "INVALID_REQUEST")
    failed(http.post(f"{SE}/execute_code/{session}", json={}), 400, "INVALID_REQUEST")
    failed(http.post(f"{SE}/execute_code/{session}", json={"code": "print(1)", "timeout": -1}), 400, "INVALID_REQUEST")
    failed(http.post(f"{SE}/execute_code/{session}", json={"code": "1", "script_type": "ruby"}), 400, "INVALID_REQUEST")
    failed(http.post(f"{SE}/execute/{session}", json={"command": "ls", "args": "-l"}), 400, "INVALID_REQUEST")
    failed(http.get(f"{SE}/no/such/thing"), 404, "INVALID_REQUEST")


def test_invalid_code(http: httpx.Client, session: str) -> None:
    syntax = failed(http.post(f"{SE}/execute_code/{session}", json={"code": "def (:\n"}), 400, "INVALID_CODE")
    assert "SyntaxError" in syntax["message"] and "SyntaxError" in syntax["details"]["stderr"]
    failed(http.post(f"{SE}/execute_code/{session}", json={"code": "   \n"}), 400, "INVALID_CODE")
    assert sh(http, session, "echo still here")["stdout"] == "still here\n"


def test_file_errors(http: httpx.Client, session: str) -> None:
    assert (
        "does not exist" in failed(http.get(f"{SE}/download/{session}/missing.txt"), 404, "FILE_NOT_FOUND")["message"]
    )
    failed(http.get(f"{SE}/download/{session}/no/such/dir/file"), 404, "FILE_NOT_FOUND")
    failed(http.get(f"{SE}/files/{session}", params={"path": "nowhere"}), 404, "FILE_NOT_FOUND")
    sh(http, session, "mkdir folder && touch folder/x")
    failed(http.get(f"{SE}/download/{session}/folder"), 400, "INVALID_PATH")
    for path in ("../etc/passwd", "a/../../b", "/etc/passwd", "/workspace/../etc/passwd", "/tmp/x"):
        failed(http.post(f"{SE}/create/{session}", json={"filename": path, "content": "x"}), 400, "INVALID_PATH")
        upload = http.post(f"{SE}/upload/{session}", files={"file": ("x", b"x")}, data={"path": path})
        failed(upload, 400, "INVALID_PATH")
        failed(http.get(f"{SE}/files/{session}", params={"path": path}), 400, "INVALID_PATH")
        failed(http.post(f"{SE}/execute_code/{session}", json={"code": "1", "filename": path}), 400, "INVALID_PATH")
    failed(http.get(f"{SE}/download/{session}/%2E%2E/%2E%2E/etc/passwd"), 400, "INVALID_PATH")
    failed(http.get(f"{SE}/download/{session}//etc/passwd"), 400, "INVALID_PATH")
    # No route takes a newline in a path parameter: still the sessions envelope, not the Lambda error shape.
    failed(http.get(f"{SE}/download/{session}/a%0Ab"), 404, "INVALID_REQUEST")
    # A lone surrogate (a JSON "\ud800" escape) has no UTF-8 form: it was a 500 (found by fuzzing).
    for field in ("filename", "path"):
        lone = http.post(f"{SE}/create/{session}", content=b'{"%s": "a\\ud800", "content": "x"}' % field.encode())
        failed(lone, 400, "INVALID_PATH")
    lone = http.post(f"{SE}/execute_code/{session}", content=b'{"code": "1", "filename": "\\ud800.py"}')
    failed(lone, 400, "INVALID_PATH")
    failed(http.get(f"{SE}/download/{session}/%ED%A0%80"), 404, "FILE_NOT_FOUND")


def test_timeout_leaves_the_session_usable(http: httpx.Client, session: str) -> None:
    sh(http, session, "echo kept > before.txt")
    started = time.monotonic()
    response = http.post(f"{SE}/execute/{session}", json={"command": "echo started; sleep 30", "timeout": 1})
    took = time.monotonic() - started
    error = failed(response, 408, "EXECUTION_TIMEOUT")
    assert error["message"] == "Execution timed out after 1 seconds"
    assert error["details"]["stdout"] == "started\n" and error["details"]["timed_out"] is True
    assert took < 25  # killed at its timeout, not at the end of the sleep
    code = "import time\nprint('tick', flush=True)\ntime.sleep(30)\n"
    failed(http.post(f"{SE}/execute_code/{session}", json={"code": code, "timeout": 0.5}), 408, "EXECUTION_TIMEOUT")
    assert sh(http, session, "cat before.txt; ps -eo args | grep -c '[s]leep 30'")["stdout"] == "kept\n0\n"


def test_session_timeout_is_the_default_of_its_executions(http: httpx.Client) -> None:
    ok(http.post(f"{SE}/session/short", json={"timeout": 1}))
    try:
        failed(http.post(f"{SE}/execute/short", json={"command": "sleep 20"}), 408, "EXECUTION_TIMEOUT")
        assert sh(http, "short", "sleep 1.2; echo slow", timeout=10)["stdout"] == "slow\n"  # a call may give more
    finally:
        http.delete(f"{SE}/session/short")


def test_memory_limit_is_resource_limit_and_the_session_survives(http: httpx.Client) -> None:
    ok(http.post(f"{SE}/session/small", json={"memory_limit": 65536}))
    try:
        sh(http, "small", "echo survivor > kept.txt")
        code = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))\n"
        error = failed(http.post(f"{SE}/execute_code/small", json={"code": code}), 400, "RESOURCE_LIMIT")
        assert "65536 KB" in error["message"] and error["details"]["limit"] == "memory"
        assert error["details"]["exit_code"] == 137
        assert sh(http, "small", "cat kept.txt")["stdout"] == "survivor\n"
    finally:
        http.delete(f"{SE}/session/small")


def test_cleanup_all(http: httpx.Client) -> None:
    for name in ("c1", "c2"):
        ok(http.post(f"{SE}/session/{name}"))
    data = ok(http.post(f"{SE}/cleanup-all"))
    assert {"c1", "c2"} <= set(data["sessions"]) and data["closed"] >= 2
    for name in ("c1", "c2"):
        failed(http.get(f"{SE}/status/{name}"), 404, "SESSION_NOT_FOUND")


def test_healthy(http: httpx.Client, service: ServiceProcess) -> None:
    data = ok(http.get(f"{SE}/healthy"))
    assert data["status"] == "healthy" and data["limit"] == 16
    assert service.health()["sessions"]["available"] is True


# -- network ------------------------------------------------------------------------------------------------

PROBE = """
import os, socket
def handler(event):
    try:
        socket.create_connection(("127.0.0.1", 3128), timeout=2).close()
        proxy = "listening"
    except OSError as exc:
        proxy = type(exc).__name__
    return {"proxy": proxy, "HTTP_PROXY": os.environ.get("HTTP_PROXY")}
"""


def test_network_is_per_session(http: httpx.Client) -> None:
    ok(http.post(f"{SE}/session/offline", json={"allow_network": False}))
    ok(http.post(f"{SE}/session/online", json={"allow_network": True}))
    try:
        assert run(http, "offline", PROBE)["result"] == {"proxy": "ConnectionRefusedError", "HTTP_PROXY": None}
        assert run(http, "online", PROBE)["result"] == {"proxy": "listening", "HTTP_PROXY": "http://127.0.0.1:3128"}
        assert ok(http.get(f"{SE}/status/offline"))["limits"]["allow_network"] is False
    finally:
        http.delete(f"{SE}/session/offline")
        http.delete(f"{SE}/session/online")


# -- lifecycle: expiry, the cap, the warm pool, the log -----------------------------------------------------


def test_idle_sessions_expire(start_service) -> None:
    # No generic sandboxes: the session's is then the only sandbox in the service's uid range.
    env = {"SANDBOX_SESSION_IDLE_TIMEOUT": "1", "SANDBOX_SESSION_POOL_SIZE": "0", "SANDBOX_GENERIC_POOL_SIZE": "0"}
    service = start_service(TEMPLATE, env=env)
    with httpx.Client(base_url=service.url, timeout=60) as http:
        ok(http.post(f"{SE}/session/idle"))
        sh(http, "idle", "sleep 1.5")  # busy is not idle
        wait_for(lambda: http.get(f"{SE}/status/idle").status_code == 410, 10, "the session to expire")
        error = failed(http.get(f"{SE}/status/idle"), 410, "SESSION_EXPIRED")
        assert "expired" in error["message"] and "'idle'" in error["message"]
        failed(http.post(f"{SE}/execute/idle", json={"command": "true"}), 410, "SESSION_EXPIRED")
        wait_for(lambda: not sandbox_processes(service.uid_range), 10, "the expired session's sandbox to end")
        ok(http.post(f"{SE}/session/idle"))  # the id can be used again
        ok(http.get(f"{SE}/status/idle"))
    events = [e["event"] for e in service.log_events() if e.get("session_id") == "idle"]
    assert events[:3] == ["session.created", "session.execution", "session.expired"]
    state_dirs = list(Path("/tmp").glob(f"sandbox-runtime-{service.proc.pid}-*/sessions"))
    assert state_dirs
    assert len([p for p in state_dirs[0].glob("ws-*")]) == 1  # the expired one's workspace is gone


def test_the_number_of_sessions_is_capped(start_service) -> None:
    service = start_service(TEMPLATE, env={"SANDBOX_MAX_SESSIONS": "2", "SANDBOX_SESSION_POOL_SIZE": "0"})
    with httpx.Client(base_url=service.url, timeout=60) as http:
        ok(http.post(f"{SE}/session/one"))
        ok(http.post(f"{SE}/session/two"))
        error = failed(http.post(f"{SE}/session/three"), 429, "RESOURCE_LIMIT")
        assert "at most 2 sessions" in error["message"]
        ok(http.delete(f"{SE}/session/one"))
        ok(http.post(f"{SE}/session/three"))


def test_warm_pool(start_service) -> None:
    service = start_service(TEMPLATE, env={"SANDBOX_SESSION_POOL_SIZE": "2"})
    pool = lambda: service.health()["sessions"]["pool"]  # noqa: E731
    wait_for(lambda: pool()["ready"] == 2, 30, "two warm session sandboxes")
    with httpx.Client(base_url=service.url, timeout=60) as http:
        ok(http.post(f"{SE}/session/warm"))
        ok(http.post(f"{SE}/session/cold", json={"memory_limit": 65536}))  # other limits: not from the pool
        assert run(http, "warm", "print('from the pool')")["stdout"] == "from the pool\n"
        wait_for(lambda: pool()["ready"] == 2, 30, "the pool to be refilled")
    created = {e["session_id"]: e for e in service.log_events() if e["event"] == "session.created"}
    assert created["warm"]["warm"] is True and created["cold"]["warm"] is False
    assert service.health()["sessions"]["created_warm"] == 1


def test_lifecycle_is_logged(http: httpx.Client, service: ServiceProcess) -> None:
    ok(http.post(f"{SE}/session/logged"))
    sh(http, "logged", "true")
    ok(http.delete(f"{SE}/session/logged"))
    events = [e for e in service.log_events() if e.get("session_id") == "logged"]
    assert [e["event"] for e in events] == ["session.created", "session.execution", "session.closed"]
    assert events[0]["memory_limit"] == 131072 and events[1]["exit_code"] == 0 and events[2]["executions"] == 1


# -- the MCP session tools (mcp_sessions) over this manager -------------------------------------------------


async def test_mcp_session_tools_drive_real_sessions(service: ServiceProcess) -> None:
    import json

    from mcp import Client

    def data(result) -> dict:
        return json.loads(result.content[0].text)

    async with Client(f"{service.url}/mcp", mode="legacy") as client:
        created = data(await client.call_tool("create_session", {"allow_network": False}))
        session_id = created["session_id"]
        assert ok(httpx.get(f"{service.url}{SE}/status/{session_id}"))["limits"]["allow_network"] is False
        code = "def handler(event):\n    return {'sum': sum(event)}\n"
        ran = data(await client.call_tool("run_code", {"session_id": session_id, "code": code, "event": [1, 2]}))
        assert ran["result"] == {"sum": 3} and ran["exit_code"] == 0 and ran["timed_out"] is False
        await client.call_tool("write_file", {"session_id": session_id, "path": "/workspace/a.txt", "content": "hé"})
        read = data(await client.call_tool("read_file", {"session_id": session_id, "path": "a.txt"}))
        assert read["content"] == "hé"
        command = data(await client.call_tool("run_command", {"session_id": session_id, "command": "cat a.txt"}))
        assert command["stdout"] == "hé"
        slow = await client.call_tool("run_command", {"session_id": session_id, "command": "sleep 5", "timeout": 0.5})
        assert slow.is_error and data(slow)["timed_out"] is True
        missing = await client.call_tool("read_file", {"session_id": session_id, "path": "nope.txt"})
        assert missing.is_error and "does not exist" in data(missing)["error"]
        outside = await client.call_tool("write_file", {"session_id": session_id, "path": "../x", "content": ""})
        assert outside.is_error and "'..' is not allowed" in data(outside)["error"]
        await client.call_tool("close_session", {"session_id": session_id})
        gone = await client.call_tool("run_command", {"session_id": session_id, "command": "true"})
        assert gone.is_error and "No such session" in data(gone)["error"]


def test_a_session_whose_agent_is_killed_ends(http: httpx.Client, service: ServiceProcess) -> None:
    ok(http.post(f"{SE}/session/doomed"))
    # The agent is the parent of the execution's shell: killing it ends the sandbox (and this execution).
    error = failed(
        http.post(f"{SE}/execute/doomed", json={"command": "kill -9 $PPID; sleep 5"}), 410, "SESSION_EXPIRED"
    )
    assert "has ended" in error["message"]
    assert "has ended" in failed(http.get(f"{SE}/status/doomed"), 410, "SESSION_EXPIRED")["message"]
    ended = [e for e in service.log_events() if e.get("session_id") == "doomed" and e["event"] == "session.ended"]
    assert len(ended) == 1
    ok(http.post(f"{SE}/session/doomed"))  # the id is free again
    assert sh(http, "doomed", "echo back")["stdout"] == "back\n"
    ok(http.delete(f"{SE}/session/doomed"))
