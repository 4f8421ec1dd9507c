"""The bootstrap as the sandbox runs it: a real interpreter, launched with the sandbox's launch line,
against an in-test HTTP server playing the Runtime API. Checks the exact requests it makes."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bootstrap import client as client_module
from bootstrap.client import RuntimeClient, RuntimeClientError

REPO = Path(__file__).resolve().parent.parent
LAUNCH = "import sys; sys.path.insert(0, {runtime!r}); from sandbox_bootstrap.main import main; main()"
NEXT = "/2018-06-01/runtime/invocation/next"
WAIT = 30  # seconds; only ever reached when something is broken


def _interpreters() -> list[str]:
    """/usr/bin/python3.11 and the venv's python, plus any other CPython 3.9+ pyenv has installed."""
    found = ["/usr/bin/python3.11", sys.executable]
    for path in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*"))):
        minor = os.path.basename(path).partition(".")[2]
        known = {os.path.realpath(p) for p in found}
        if minor.isdigit() and int(minor) >= 9 and os.path.realpath(path) not in known:
            found.append(path)
    return found


INTERPRETERS = _interpreters()


@dataclass
class Event:
    request_id: str
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds /next waits before answering (a long poll)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    stdout_so_far: str  # what the bootstrap had written to stdout when the request arrived


class FakeRuntimeAPI:
    """Serves the given events from /next, records every request, answers POSTs with `post_status`.

    Once the events are used up, /next blocks (a long poll) and `idle` is set.
    """

    def __init__(self, events: list[Event], stdout_path: Path, post_status: int = 202) -> None:
        self.events = list(events)
        self.requests: list[Request] = []
        self.idle = threading.Event()
        self.post_status = post_status
        self.drop_after_next = False  # close the socket after /next without telling the client
        self._stdout_path = stdout_path
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        stdout = self._stdout_path.read_bytes().decode() if self._stdout_path.exists() else ""
        self.requests.append(Request(handler.command, handler.path, headers, body, stdout))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                api._record(self, b"")
                if self.path != NEXT:
                    self._reply(404, b"404 page not found\n")
                elif not api.events:
                    api.idle.set()
                    api._release.wait(WAIT)
                    self.close_connection = True
                else:
                    event = api.events.pop(0)
                    time.sleep(event.delay)
                    headers = {"Lambda-Runtime-Aws-Request-Id": event.request_id, **event.headers}
                    self._reply(200, event.body, event.content_type, headers)
                    self.close_connection = api.drop_after_next

            def do_POST(self) -> None:
                api._record(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if api.post_status == 202:
                    self._reply(202, b'{"status":"OK"}\n')
                else:
                    self._reply(api.post_status, b'{"errorMessage":"no","errorType":"RequestEntityTooLarge"}\n')

            def _reply(
                self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@dataclass
class Sandbox:
    """A runtime dir holding the package as `sandbox_bootstrap`, a task root, and the launched process."""

    runtime: Path
    task: Path
    stdout_path: Path

    def launch(self, python: str, api: FakeRuntimeAPI, handler: str, **env: str) -> subprocess.Popen[bytes]:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "_HANDLER": handler,
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "LAMBDA_TASK_ROOT": str(self.task),
            "LAMBDA_RUNTIME_DIR": str(self.runtime),
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            **env,
        }
        launch = LAUNCH.format(runtime=str(self.runtime))
        with open(self.stdout_path, "wb") as stdout:
            return subprocess.Popen(
                [python, "-c", launch], cwd=self.runtime, env=environ, stdout=stdout, stderr=subprocess.PIPE
            )

    def write(self, name: str, source: str) -> Path:
        path = self.task / name
        path.write_text(textwrap.dedent(source))
        return path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_bytes().decode()


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    runtime, task = tmp_path / "runtime", tmp_path / "task"
    shutil.copytree(REPO / "bootstrap", runtime / "sandbox_bootstrap", ignore=shutil.ignore_patterns("__pycache__"))
    task.mkdir()
    return Sandbox(runtime, task, tmp_path / "stdout.txt")


@pytest.fixture
def make_api(sandbox: Sandbox):
    servers: list[FakeRuntimeAPI] = []

    def make(events: list[Event], post_status: int = 202) -> FakeRuntimeAPI:
        servers.append(FakeRuntimeAPI(events, sandbox.stdout_path, post_status))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _stop(process: subprocess.Popen[bytes]) -> str:
    process.kill()
    _, stderr = process.communicate(timeout=WAIT)
    return stderr.decode()


def _version(python: str) -> str:
    out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True)
    return out.stdout.decode().strip()


APP = """\
    import json, logging, os, sys
    from decimal import Decimal

    logging.getLogger().info("init log")  # before any invocation: no request id

    def handler(event, context):
        print("printed", event["n"])
        sys.stderr.write("to stderr\\n")
        logging.getLogger("app").info("logged")
        if event.get("fail"):
            raise ValueError("boom")
        sys.stdout.buffer.write(b"raw bytes\\n")
        print("no newline yet", end="")
        return {
            "n": event["n"],
            "price": Decimal("1.50"),
            "trace": os.environ.get("_X_AMZN_TRACE_ID"),
            "cwd": os.getcwd(),
            "path": sys.path,
            "arn": context.invoked_function_arn,
            "memory": context.memory_limit_in_mb,
            "custom": context.client_context.custom if context.client_context else None,
            "tenant": context.tenant_id,
            "remaining_positive": context.get_remaining_time_in_millis() > 0,
        }
"""


@pytest.mark.parametrize("python", INTERPRETERS)
def test_success_then_exception(python: str, sandbox: Sandbox, make_api) -> None:
    app = sandbox.write("app.py", APP)
    api = make_api(
        [
            Event(
                "req-1",
                b'{"n": 1}',
                {
                    "Lambda-Runtime-Deadline-Ms": "99999999999999",
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
                    "Lambda-Runtime-Trace-Id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1",
                    "Lambda-Runtime-Client-Context": '{"custom": {"k": "v"}}',
                    "Lambda-Runtime-Aws-Tenant-Id": "tenant-1",
                },
            ),
            Event("req-2", b'{"n": 2, "fail": true}'),
        ]
    )
    process = sandbox.launch(python, api, "app.handler", AWS_LAMBDA_LOG_LEVEL="INFO")
    assert api.idle.wait(WAIT), _stop(process)
    stderr = _stop(process)

    requests = api.requests
    assert [(r.method, r.path) for r in requests] == [
        ("GET", NEXT),
        ("POST", "/2018-06-01/runtime/invocation/req-1/response"),
        ("GET", NEXT),
        ("POST", "/2018-06-01/runtime/invocation/req-2/error"),
        ("GET", NEXT),
    ]
    user_agent = f"sandbox-runtime-bootstrap/{_version(python)}"
    assert {r.headers["user-agent"] for r in requests} == {user_agent}

    response = requests[1]
    assert response.headers["content-type"] == "application/json"
    assert b'"price": 1.50' in response.body
    result = json.loads(response.body)
    version = "python" + ".".join(_version(python).split(".")[:2])
    assert result["path"][:4] == [
        str(sandbox.task),
        f"/opt/python/lib/{version}/site-packages",
        "/opt/python",
        str(sandbox.runtime),
    ]
    assert "" not in result["path"] and result["path"].count(str(sandbox.runtime)) == 1
    assert result["cwd"] == str(sandbox.task)
    assert result["trace"] == "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1"
    assert result["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert (result["memory"], result["custom"], result["tenant"]) == ("128", {"k": "v"}, "tenant-1")
    assert result["remaining_positive"] is True
    # Output is in the pipe before the result is posted, even without a newline.
    assert "printed 1\n" in response.stdout_so_far
    assert response.stdout_so_far.endswith("\treq-1\tlogged\nraw bytes\nno newline yet")

    error = requests[3]
    assert error.headers["lambda-runtime-function-error-type"] == "ValueError"
    assert error.headers["content-type"] == "application/json"
    trace = f'  File "{app}", line 11, in handler\n    raise ValueError("boom")\n'
    expected = {"errorMessage": "boom", "errorType": "ValueError", "requestId": "req-2", "stackTrace": [trace]}
    assert error.body == json.dumps(expected).encode()
    nbsp = "\u00a0"
    error_log = (
        "[ERROR] ValueError: boom\rTraceback (most recent call last):\r"
        f'{nbsp * 2}File "{app}", line 11, in handler\r{nbsp * 4}raise ValueError("boom")\n'
    )
    assert error.stdout_so_far.endswith(error_log)

    stdout = sandbox.stdout.split("\n")
    assert stdout[0].startswith("[INFO]\t") and stdout[0].endswith("Z\t\tinit log")
    assert stdout[1] == "printed 1"
    assert stdout[2].startswith("[INFO]\t") and stdout[2].endswith("\treq-1\tlogged")
    assert "to stderr\n" in stderr


@pytest.mark.parametrize("python", INTERPRETERS[:2])
def test_init_error_is_posted_then_exit_1(python: str, sandbox: Sandbox, make_api) -> None:
    api = make_api([Event("never")])
    process = sandbox.launch(python, api, "missing_module.handler")
    assert process.wait(WAIT) == 1
    _stop(process)
    assert [(r.method, r.path) for r in api.requests] == [("POST", "/2018-06-01/runtime/init/error")]
    request = api.requests[0]
    assert request.headers["lambda-runtime-function-error-type"] == "Runtime.ImportModuleError"
    assert request.headers["content-type"] == "application/json"
    message = "Unable to import module 'missing_module': No module named 'missing_module'"
    expected = {"errorMessage": message, "errorType": "Runtime.ImportModuleError", "requestId": "", "stackTrace": []}
    assert request.body == json.dumps(expected).encode()
    warning, error = request.stdout_so_far.split("\n")[:2]
    assert warning.startswith("[WARNING]\t") and "\t\tLAMBDA_WARNING: Unhandled exception. " in warning
    assert error == f"[ERROR] Runtime.ImportModuleError: {message}\rTraceback (most recent call last):"


def test_exception_at_import_keeps_its_type_and_stack(sandbox: Sandbox, make_api) -> None:
    app = sandbox.write("app.py", "import os\nraise RuntimeError('no config')\n")
    api = make_api([])
    process = sandbox.launch(sys.executable, api, "app.handler", AWS_LAMBDA_LOG_FORMAT="json")
    assert process.wait(WAIT) == 1
    _stop(process)
    request = api.requests[0]
    assert request.headers["lambda-runtime-function-error-type"] == "RuntimeError"
    error = json.loads(request.body)
    assert (error["errorType"], error["errorMessage"], error["requestId"]) == ("RuntimeError", "no config", "")
    assert "importlib" in error["stackTrace"][0] and "sandbox_bootstrap" not in error["stackTrace"][0]
    assert error["stackTrace"][-1] == f"  File \"{app}\", line 2, in <module>\n    raise RuntimeError('no config')\n"
    warning, logged = (json.loads(line) for line in sandbox.stdout.splitlines())
    assert warning["level"] == "WARNING" and warning["message"].startswith("LAMBDA_WARNING: ")
    assert logged == {"timestamp": logged["timestamp"], "log_level": "ERROR", **error}


def test_one_parameter_handler_and_bytes_result(sandbox: Sandbox, make_api) -> None:
    sandbox.write("raw.py", "def handler(event):\n    return bytes(reversed(event))\n")
    api = make_api([Event("r-1", b"abc", content_type="application/octet-stream")])
    process = sandbox.launch(sys.executable, api, "raw.handler")
    assert api.idle.wait(WAIT), _stop(process)
    _stop(process)
    response = api.requests[1]
    assert response.path == "/2018-06-01/runtime/invocation/r-1/response"
    assert (response.headers["content-type"], response.body) == ("application/unknown", b"cba")


def test_unicode_output_on_python312_runtimes(sandbox: Sandbox, make_api) -> None:
    sandbox.write("uni.py", "def handler(event, context):\n    return event\n")
    api = make_api([Event("r-1", '"é✓"'.encode())])
    process = sandbox.launch(sys.executable, api, "uni.handler", AWS_EXECUTION_ENV="AWS_Lambda_python3.12")
    assert api.idle.wait(WAIT), _stop(process)
    _stop(process)
    assert api.requests[1].body == '"é✓"'.encode()


def test_long_poll_ignores_the_functions_default_socket_timeout(sandbox: Sandbox, make_api) -> None:
    sandbox.write(
        "app.py", "import socket\nsocket.setdefaulttimeout(0.05)\ndef handler(event, context):\n    return 1\n"
    )
    api = make_api([Event("r-1", delay=0.3)])
    process = sandbox.launch(sys.executable, api, "app.handler")
    assert api.idle.wait(WAIT), _stop(process)
    _stop(process)
    assert [(r.path, r.body) for r in api.requests if r.method == "POST"] == [
        ("/2018-06-01/runtime/invocation/r-1/response", b"1")
    ]


def test_rejected_response_exits_1_with_a_clear_message(sandbox: Sandbox, make_api) -> None:
    sandbox.write("app.py", "def handler(event, context):\n    return 'x' * 10\n")
    api = make_api([Event("r-1")], post_status=413)
    process = sandbox.launch(sys.executable, api, "app.handler")
    assert process.wait(WAIT) == 1
    stderr = _stop(process)
    # The /next pipelined behind the /response is never read: the runtime exits on the refusal (our
    # Runtime API closes the connection after a refusal rather than serve a pipelined /next).
    assert [r.path for r in api.requests] == [NEXT, "/2018-06-01/runtime/invocation/r-1/response", NEXT]
    assert "Failed to post handler success response. Http response code: 413." in stderr
    assert stderr.count("\n") == 1


def test_reconnects_when_the_server_drops_the_keep_alive_connection(sandbox: Sandbox, make_api) -> None:
    sandbox.write("app.py", "def handler(event, context):\n    return event['n']\n")
    api = make_api([Event("r-1", b'{"n": 1}'), Event("r-2", b'{"n": 2}')])
    api.drop_after_next = True
    process = sandbox.launch(sys.executable, api, "app.handler")
    assert api.idle.wait(WAIT), _stop(process)
    _stop(process)
    assert [(r.path, r.body) for r in api.requests if r.method == "POST"] == [
        ("/2018-06-01/runtime/invocation/r-1/response", b"1"),
        ("/2018-06-01/runtime/invocation/r-2/response", b"2"),
    ]


def test_six_megabyte_event_and_result(sandbox: Sandbox, make_api) -> None:
    sandbox.write("echo.py", "def handler(event, context):\n    return event\n")
    big = json.dumps({"data": "é" * (3 * 1024 * 1024 - 20)}, ensure_ascii=False).encode()
    assert len(big) > 6 * 1000 * 1000
    api = make_api([Event("r-1", big)])
    process = sandbox.launch(sys.executable, api, "echo.handler", AWS_EXECUTION_ENV="AWS_Lambda_python3.12")
    assert api.idle.wait(WAIT), _stop(process)
    _stop(process)
    assert api.requests[1].path == "/2018-06-01/runtime/invocation/r-1/response"
    assert api.requests[1].body == big


# -- the client on its own ----------------------------------------------------------------------


def test_client_retries_once_on_a_dropped_connection(
    sandbox: Sandbox, make_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api([Event("r-1"), Event("r-2")])
    api.drop_after_next = True
    client = RuntimeClient(api.address, "test-agent")
    monkeypatch.setattr(client_module, "_idle", lambda sock: True)  # skip the idle check
    try:
        assert client.next_invocation().request_id == "r-1"
        assert client.next_invocation().request_id == "r-2"  # first attempt hits the closed socket
    finally:
        client.close()
    assert [r.path for r in api.requests] == [NEXT, NEXT]


def test_client_gives_up_after_one_retry() -> None:
    client = RuntimeClient("127.0.0.1:1", "test-agent")
    with pytest.raises(RuntimeClientError, match="GET /2018-06-01/runtime/invocation/next failed"):
        client.next_invocation()


def test_client_rejects_a_bad_address() -> None:
    with pytest.raises(RuntimeClientError, match=r"Invalid AWS_LAMBDA_RUNTIME_API '127\.0\.0\.1:port'"):
        RuntimeClient("127.0.0.1:port", "test-agent")


def test_client_requires_a_request_id(sandbox: Sandbox, make_api) -> None:
    api = make_api([Event("")])
    client = RuntimeClient(api.address, "test-agent")
    with pytest.raises(RuntimeClientError, match="no Lambda-Runtime-Aws-Request-Id"):
        client.next_invocation()
    client.close()


def test_client_reports_refusals_with_status_and_body(sandbox: Sandbox, make_api) -> None:
    api = make_api([], post_status=403)
    client = RuntimeClient(api.address, "test-agent")
    with pytest.raises(RuntimeClientError) as info:
        client.post_error("r-1", b"{}", "Ünicode.Error")
    client.close()
    assert str(info.value) == (
        "Failed to post handler error response. Http response code: 403. "
        'Response body: {"errorMessage":"no","errorType":"RequestEntityTooLarge"}'
    )
    assert api.requests[0].headers["lambda-runtime-function-error-type"] == "\\xdcnicode.Error"


def test_client_ignores_later_monkey_patches_of_http_client(
    sandbox: Sandbox, make_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.client

    def broken(*args: object, **kwargs: object) -> None:
        raise AssertionError("an APM library's patch must not see Runtime API traffic")

    for name in ("request", "putrequest", "getresponse", "_send_request"):
        monkeypatch.setattr(http.client.HTTPConnection, name, broken)
    monkeypatch.setattr(http.client.HTTPResponse, "begin", broken)
    api = make_api([Event("r-1")])
    client = RuntimeClient(api.address, "test-agent")
    try:
        assert client.next_invocation().request_id == "r-1"
        client.post_response("r-1", b"{}", "application/json")
    finally:
        client.close()
    assert [r.method for r in api.requests] == ["GET", "POST", "GET"]  # the /next pipelined behind the /response


def test_prepare_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from bootstrap.main import prepare_sys_path

    monkeypatch.setattr(os, "getcwd", lambda: "/var/runtime")
    monkeypatch.setattr(sys, "path", ["/var/runtime", "", "/usr/lib/python311.zip", "/var/task", "/extra"])
    prepare_sys_path("/var/task", "/var/runtime")
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert sys.path == [
        "/var/task",
        f"/opt/python/lib/{version}/site-packages",
        "/opt/python",
        "/var/runtime",
        "/usr/lib/python311.zip",
        "/extra",
    ]
