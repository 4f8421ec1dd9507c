"""MCP: the template's functions as tools, driven by the `mcp` SDK's own client.

Over stdio (`python -m runtime_api mcp --template ...`, launched by the SDK's stdio client) and over streamable
HTTP (`/mcp` on a running `serve`). Both protocol eras the SDK speaks are exercised: the 2025 initialize handshake
(`mode="legacy"`, what most MCP clients use today) and the 2026 per-request envelope (`mode="auto"`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
from conftest import _UID_BLOCK, FUNCTIONS, REPO, ServiceProcess, _uid_blocks, assert_no_sandbox_left, sandbox_processes
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from runtime_api.mcp_server import FREE_FORM_SCHEMA, tool_name
from runtime_api.template import TemplateError, load_template

MCP_TEMPLATE = FUNCTIONS / "mcp.yaml"
ADD_SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "number", "description": "the first number"},
        "b": {"type": "number", "description": "the second number"},
    },
    "required": ["a", "b"],
    "additionalProperties": False,
}
MODES = ["legacy", "auto"]


def new_uid_range() -> tuple[int, int]:
    first = 300000 + (next(_uid_blocks) % 1000) * _UID_BLOCK
    return first, first + _UID_BLOCK - 1


def mcp_environ(uid_range: tuple[int, int]) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
    environment["SANDBOX_UID_RANGE"] = f"{uid_range[0]}-{uid_range[1]}"
    return environment


def only_text(result: types.CallToolResult) -> str:
    assert len(result.content) == 1, result
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text


# -- what the tools look like and do: the same on both transports ---------------------------------------


async def check_tools(client: Client) -> None:
    from runtime_api.mcp_sessions import TOOLS as SESSION_TOOLS  # the service has a session manager

    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert sorted(listed) == sorted(["add", "echo", "fail", "sleep", "throttled", *SESSION_TOOLS]), listed
    assert listed["add"].description == "Add two numbers."
    assert listed["add"].input_schema == ADD_SCHEMA  # Metadata.SandboxRuntime.InputSchema
    assert listed["fail"].description == "Always fails."
    echo = listed["echo"]
    assert echo.input_schema == FREE_FORM_SCHEMA
    assert echo.title == "EchoEvent"  # the logical id, when it differs from the name
    assert echo.description and "echo" in echo.description and "event" in echo.description, echo.description


async def check_calls(client: Client) -> None:
    added = await client.call_tool("add", {"a": 2, "b": 3.5})
    assert not added.is_error, added
    assert json.loads(only_text(added)) == {"sum": 5.5}

    event = {"nested": {"list": [1, "two", None]}, "unicode": "héllo ✓"}
    echoed = await client.call_tool("echo", event)
    assert not echoed.is_error, echoed
    assert json.loads(only_text(echoed)) == event

    failed = await client.call_tool("fail", {"value": 7})
    assert failed.is_error, failed
    error = json.loads(only_text(failed))  # the function's error document, as Invoke returns it
    assert error["errorType"] == "ValueError", error
    assert error["errorMessage"] == "cannot handle 7", error
    assert error["stackTrace"], error


async def check_refusals(client: Client) -> None:
    # Arguments that do not match the schema: a tool error naming the problem; the function is not invoked.
    wrong = await client.call_tool("add", {"a": 2})
    assert wrong.is_error, wrong
    assert only_text(wrong).startswith("Invalid arguments for add: 'b' is a required property"), wrong
    extra = await client.call_tool("add", {"a": 1, "b": 2, "c": 3})
    assert extra.is_error and "Invalid arguments for add" in only_text(extra), extra

    timed_out = await client.call_tool("sleep", {"seconds": 10})
    assert timed_out.is_error, timed_out
    message, document = (block.text for block in timed_out.content if isinstance(block, types.TextContent))
    assert message == "Timed out: sleep did not answer within its Timeout of 1 second, and was stopped.", message
    assert json.loads(document)["errorType"] == "Sandbox.Timedout", document

    throttled = await client.call_tool("throttled", {})
    assert throttled.is_error, throttled
    assert only_text(throttled).startswith("Throttled: throttled is already running as many times as it may"), throttled

    with pytest.raises(MCPError, match="Unknown tool: nope"):
        await client.call_tool("nope", {})


# -- stdio: `sandbox-runtime mcp` --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_lists_and_calls_the_functions(mode: str) -> None:
    uid_range = new_uid_range()
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "runtime_api", "mcp", "--template", str(MCP_TEMPLATE)],
        env=mcp_environ(uid_range),
        cwd=str(REPO),
    )
    async with Client(server, mode=mode) as client:
        assert client.server_info is not None and client.server_info.name == "sandbox-runtime"
        await check_tools(client)
        await check_calls(client)
        await check_refusals(client)
        assert sandbox_processes(uid_range), "the warm environments should be running while connected"
    # The client closed our stdin: the server stops its sandboxes and exits.
    assert_no_sandbox_left(uid_range, "the MCP server")


class RawStdio:
    """`python -m runtime_api mcp` driven by hand: one JSON-RPC message per line."""

    def __init__(self, template: Path = MCP_TEMPLATE) -> None:
        self.uid_range = new_uid_range()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime_api", "mcp", "--template", str(template)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=mcp_environ(self.uid_range),
            cwd=REPO,
        )
        self.next_id = 0

    def send(self, method: str, params: dict | None = None, *, notify: bool = False) -> None:
        message: dict = {"jsonrpc": "2.0", "method": method, "params": params or {}}
        if not notify:
            self.next_id += 1
            message["id"] = self.next_id
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the server closed stdout: {self.stderr()}"
        return json.loads(line)  # nothing but JSON-RPC on stdout

    def request(self, method: str, params: dict | None = None) -> dict:
        self.send(method, params)
        answer = self.receive()
        assert answer.get("id") == self.next_id, answer
        return answer

    def initialize(self) -> None:
        answer = self.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
        )
        assert answer["result"]["serverInfo"]["name"] == "sandbox-runtime", answer
        self.send("notifications/initialized", notify=True)

    def stderr(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the MCP server did not exit in {timeout}s: {self.stderr()}") from None


@pytest.fixture
def raw_stdio() -> Iterator:
    started: list[RawStdio] = []

    def start(template: Path = MCP_TEMPLATE) -> RawStdio:
        started.append(RawStdio(template))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stdio_stops_cleanly_on_a_signal_with_stdin_still_open(raw_stdio, sig: int) -> None:
    server = raw_stdio()
    server.initialize()
    answer = server.request("tools/call", {"name": "echo", "arguments": {"x": 1}})
    assert json.loads(answer["result"]["content"][0]["text"]) == {"x": 1}, answer
    assert sandbox_processes(server.uid_range), "expected a warm sandbox before the signal"
    server.process.send_signal(sig)
    assert server.wait() == 0, server.stderr()
    assert_no_sandbox_left(server.uid_range, "the MCP server")
    assert "Traceback" not in server.stderr()


def test_stdio_ends_at_eof_and_keeps_stdout_for_the_protocol(raw_stdio) -> None:
    server = raw_stdio()
    server.initialize()
    answer = server.request("tools/call", {"name": "echo", "arguments": {"y": 2}})
    assert answer["result"]["isError"] is False, answer
    assert server.process.stdin is not None and server.process.stdout is not None
    server.process.stdin.close()
    assert server.wait() == 0
    assert server.process.stdout.read() == b"", "stdout carries JSON-RPC messages only"
    assert_no_sandbox_left(server.uid_range, "the MCP server")
    logs = server.stderr()
    # The function's START/END/REPORT lines go to stderr, like `invoke`.
    assert "START RequestId: " in logs and "REPORT RequestId: " in logs, logs


def test_stdio_template_errors_stop_the_start(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("Resources: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "runtime_api", "mcp", "--template", str(template)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=mcp_environ(new_uid_range()),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert b"template error" in result.stderr and result.stdout == b"", result


# -- streamable HTTP: /mcp on `serve` ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mcp_service() -> Iterator[ServiceProcess]:
    running = ServiceProcess(MCP_TEMPLATE)
    yield running
    assert running.stop() == 0, running.logs()


@pytest.mark.parametrize("mode", MODES)
async def test_http_lists_and_calls_the_functions(mcp_service: ServiceProcess, mode: str) -> None:
    async with Client(f"{mcp_service.url}/mcp", mode=mode) as client:
        await check_tools(client)
        await check_calls(client)
        await check_refusals(client)


async def test_http_sessions_side_by_side(mcp_service: ServiceProcess) -> None:
    async def one(n: int) -> object:
        async with Client(f"{mcp_service.url}/mcp", mode="legacy") as client:
            return json.loads(only_text(await client.call_tool("add", {"a": n, "b": n})))

    assert await asyncio.gather(*(one(n) for n in range(4))) == [{"sum": 2 * n} for n in range(4)]


def test_http_refuses_other_hosts(mcp_service: ServiceProcess) -> None:
    """On loopback, /mcp refuses requests for another Host (DNS rebinding: a web page driving the tools)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    request = urllib.request.Request(
        f"{mcp_service.url}/mcp",
        data=body,
        headers={
            "Host": "evil.example:80",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (403, 421), refused.value
    assert mcp_service.health()["status"] == "healthy"


def test_http_shutdown_ends_open_mcp_sessions(start_service) -> None:
    """A client still connected (its GET stream open) does not hold up a SIGTERM."""
    service = start_service(MCP_TEMPLATE)

    async def connected_while_stopping() -> float:
        async with Client(f"{service.url}/mcp", mode="legacy") as client:
            assert not (await client.call_tool("echo", {})).is_error
            started = time.monotonic()
            assert await asyncio.to_thread(service.stop) == 0, service.logs()
            return time.monotonic() - started

    try:
        took = asyncio.run(connected_while_stopping())
    except BaseException:  # the client notices its server went away on the way out
        took = 0.0
    assert took < 10, f"the service took {took:.1f}s to stop with an MCP session open"
    assert '"event": "service.stopped"' in service.log_path.read_text()


# -- Metadata.SandboxRuntime.InputSchema and tool names (no sandbox) ----------------------------------------


def template_with(tmp_path: Path, metadata: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {Runtime: python3.11, Handler: app.handler, CodeUri: src/}\n"
        + textwrap.indent(textwrap.dedent(metadata).strip(), "    ")
        + "\n"
    )
    return path


def test_input_schema_metadata_is_read_into_the_spec(tmp_path: Path) -> None:
    path = template_with(
        tmp_path,
        """
        Metadata:
          SandboxRuntime:
            InputSchema:
              properties: {city: {type: string}}
              required: [city]
        """,
    )
    (spec,) = load_template(path).functions
    assert spec.input_schema == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    (plain,) = load_template(template_with(tmp_path, "Metadata: {}")).functions
    assert plain.input_schema is None


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("[a, b]", "must be a JSON Schema mapping"),
        ("{type: string}", "must describe an object (type: object)"),
        ("{type: object, properties: 3}", "is not a valid JSON Schema: 3 is not of type 'object'"),
        ("{type: object, required: yes}", "is not a valid JSON Schema"),
    ],
)
def test_an_invalid_input_schema_is_a_template_error(tmp_path: Path, schema: str, message: str) -> None:
    path = template_with(tmp_path, f"Metadata: {{SandboxRuntime: {{InputSchema: {schema}}}}}")
    with pytest.raises(TemplateError, match=r"resource Fn: Metadata\.SandboxRuntime\.InputSchema") as error:
        load_template(path)
    assert message in str(error.value), error.value


def test_tool_names_keep_to_the_mcp_charset() -> None:
    assert tool_name("my-function_2") == "my-function_2"
    assert tool_name("name with spaces/and:colons") == "name_with_spaces_and_colons"
    assert len(tool_name("x" * 200)) == 64


# -- session tools, over a stand-in session manager (in-process MCP connection, no sandbox) -----------------


class FakeSessions:
    """The SessionBackend protocol as the session tools use it, with files and runs kept in memory."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, bytes]] = {}
        self.calls: list[tuple] = []

    async def create_session(self, *, allow_network: bool | None = None) -> str:
        session_id = f"se-{len(self.sessions) + 1}"
        self.sessions[session_id] = {}
        self.calls.append(("create", allow_network))
        return session_id

    async def close_session(self, session_id: str) -> None:
        del self.sessions[session_id]

    async def execute_code(self, session_id: str, code: str, *, event=None, timeout=None):
        self.sessions[session_id]
        self.calls.append(("code", session_id, code, event, timeout))
        if "raise" in code:
            error = {"errorType": "ValueError", "errorMessage": "boom", "stackTrace": []}
            return {"stdout": "", "stderr": "", "exit_code": 1, "timed_out": False, "error": error}
        return {"stdout": "hi\n", "stderr": "", "exit_code": 0, "timed_out": False, "result": {"got": event}}

    async def execute(self, session_id: str, command: str, *, timeout=None):
        files = self.sessions[session_id]
        self.calls.append(("exec", session_id, command, timeout))
        if command == "sleep 100":
            return {"stdout": "", "stderr": "", "exit_code": None, "timed_out": True}
        if command.startswith("cat "):
            return {"stdout": files[command[4:]].decode(), "stderr": "", "exit_code": 0, "timed_out": False}
        return {"stdout": "", "stderr": "no such command", "exit_code": 127, "timed_out": False}

    async def read_file(self, session_id: str, path: str) -> bytes:
        files = self.sessions[session_id]
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]

    async def write_file(self, session_id: str, path: str, data: bytes) -> None:
        if path.startswith("/etc"):
            raise ValueError(f"{path} is outside the workspace")
        self.sessions[session_id][path] = data


def result_json(result: types.CallToolResult) -> dict:
    return json.loads(only_text(result))


@pytest.fixture
def session_server():
    from runtime_api.functions import FunctionRegistry, FunctionSpec
    from runtime_api.mcp_server import build_server
    from runtime_api.mcp_sessions import SessionBackend

    class Service:  # what the tools read of a Service: its functions, and which cannot run
        registry = FunctionRegistry(
            [
                FunctionSpec(name="run_code", handler="app.handler", runtime="python3.11", code_dir=None),
                FunctionSpec(name="report", handler="app.handler", runtime="python3.11", code_dir=None),
                FunctionSpec(name="broken", handler="app.handler", runtime="python3.99", code_dir=None),
            ]
        )
        unavailable = {"broken": "python3.99 is not installed"}

    sessions = FakeSessions()
    assert isinstance(sessions, SessionBackend)
    return build_server(Service(), sessions=sessions), sessions


@pytest.mark.parametrize("mode", MODES)
async def test_session_tools(session_server, mode: str) -> None:
    server, sessions = session_server
    async with Client(server, mode=mode) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        # Session tools keep their names; a function that takes one gets a suffix; one that cannot run is left out.
        session_tools = ["create_session", "run_code", "run_command", "read_file", "write_file", "close_session"]
        assert sorted(listed) == sorted([*session_tools, "run_code_function", "report"]), listed
        assert listed["run_code"].input_schema["required"] == ["code"]
        assert "session_id" in listed["run_command"].input_schema["properties"]

        created = result_json(await client.call_tool("create_session", {"allow_network": False}))
        session_id = created["session_id"]
        assert sessions.calls[-1] == ("create", False)

        written = await client.call_tool("write_file", {"session_id": session_id, "path": "a.txt", "content": "hé"})
        assert not written.is_error and result_json(written)["bytes"] == 3, written
        read = result_json(await client.call_tool("read_file", {"session_id": session_id, "path": "a.txt"}))
        assert (read["encoding"], read["content"]) == ("utf-8", "hé")
        await client.call_tool(
            "write_file", {"session_id": session_id, "path": "b.bin", "content": "/w==", "encoding": "base64"}
        )
        binary = result_json(await client.call_tool("read_file", {"session_id": session_id, "path": "b.bin"}))
        assert (binary["encoding"], binary["content"]) == ("base64", "/w==")

        ran = await client.call_tool("run_command", {"session_id": session_id, "command": "cat a.txt", "timeout": 5})
        assert not ran.is_error and result_json(ran)["stdout"] == "hé", ran
        assert sessions.calls[-1] == ("exec", session_id, "cat a.txt", 5.0)
        missing = await client.call_tool("run_command", {"session_id": session_id, "command": "nope"})
        assert not missing.is_error and result_json(missing)["exit_code"] == 127, "an exit status is a result"
        slow = await client.call_tool("run_command", {"session_id": session_id, "command": "sleep 100"})
        assert slow.is_error and result_json(slow)["timed_out"] is True, slow

        code = await client.call_tool("run_code", {"code": "def handler(event): ...", "event": [1, 2]})
        first_use = result_json(code)  # no session_id: a new session, named in the result
        assert not code.is_error and first_use["new_session"] is True, code
        assert first_use["session_id"] != session_id and first_use["result"] == {"got": [1, 2]}
        raised = await client.call_tool("run_code", {"session_id": session_id, "code": "raise ValueError"})
        assert raised.is_error and result_json(raised)["error"]["errorType"] == "ValueError", raised

        unknown = await client.call_tool("run_command", {"session_id": "se-404", "command": "true"})
        assert unknown.is_error and "No such session: se-404" in result_json(unknown)["error"], unknown
        absent = await client.call_tool("read_file", {"session_id": session_id, "path": "nope.txt"})
        assert absent.is_error and result_json(absent)["error"].startswith("FileNotFoundError"), absent
        outside = await client.call_tool("write_file", {"session_id": session_id, "path": "/etc/x", "content": ""})
        assert outside.is_error and "outside the workspace" in result_json(outside)["error"], outside
        bad = await client.call_tool("run_code", {"session_id": session_id, "code": "1", "timeout": -1})
        assert bad.is_error and "timeout must be a positive number" in result_json(bad)["error"], bad

        closed = result_json(await client.call_tool("close_session", {"session_id": session_id}))
        assert closed == {"session_id": session_id, "closed": True}
        assert session_id not in sessions.sessions


async def test_without_a_session_manager_there_are_no_session_tools() -> None:
    from runtime_api.mcp_server import build_server

    service = type("Service", (), {"registry": [], "unavailable": {}})()
    async with Client(build_server(service), mode="legacy") as client:
        assert (await client.list_tools()).tools == []
