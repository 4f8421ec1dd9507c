"""Stateful sessions (one Python interpreter kept alive across execute_code calls) and streamed executions
(Server-Sent Events), against a real service, over HTTP and through the SDK."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import FUNCTIONS, ServiceProcess

from runtime_api.sdk import ExecutionTimeoutError, SandboxClient, StreamEvent

SE = "/workspace/se"


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    running = ServiceProcess(FUNCTIONS / "sessions.yaml", env={"SANDBOX_SESSION_POOL_SIZE": "1"})
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def http(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


def _session(http: httpx.Client, **body: object) -> Iterator[str]:
    session_id = f"s-{uuid.uuid4().hex[:10]}"
    response = http.post(f"{SE}/session/{session_id}", json=body)
    assert response.status_code == 200, response.text
    yield session_id
    http.delete(f"{SE}/session/{session_id}")


@pytest.fixture
def stateful(http: httpx.Client) -> Iterator[str]:
    yield from _session(http, stateful=True)


@pytest.fixture
def stateless(http: httpx.Client) -> Iterator[str]:
    yield from _session(http)


def code(http: httpx.Client, session_id: str, source: str, **fields: object) -> httpx.Response:
    return http.post(f"{SE}/execute_code/{session_id}", json={"code": source, **fields})


def data(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()["data"]


# -- stateful ---------------------------------------------------------------------------------------------


def test_variables_and_imports_persist(http: httpx.Client, stateful: str) -> None:
    assert http.get(f"{SE}/status/{stateful}").json()["data"]["stateful"] is True
    first = data(code(http, stateful, "import json as j\nx = 41\nprint('set')"))
    assert first["stdout"] == "set\n" and first["reset"] is False
    second = data(code(http, stateful, "x += 1\nprint(x, j.dumps({'a': 1}))"))
    assert second["stdout"] == '42 {"a": 1}\n' and second["reset"] is False
    assert second["exit_code"] == 0


def test_handler_in_a_stateful_session_sees_earlier_state(http: httpx.Client, stateful: str) -> None:
    data(code(http, stateful, "counter = 10"))
    source = "def handler(event, context):\n    print('called')\n    return counter + event['n']\n"
    result = data(code(http, stateful, source, event={"n": 5}))
    assert result["result"] == 15 and result["stdout"] == "called\n"
    failing = data(code(http, stateful, "def handler(event):\n    raise ValueError('no')\n"))
    assert failing["exit_code"] == 1 and failing["error"]["errorType"] == "ValueError"
    assert "ValueError: no" in failing["stderr"]
    assert data(code(http, stateful, "print(counter)"))["stdout"] == "10\n"  # an exception does not reset


def test_output_is_per_call(http: httpx.Client, stateful: str) -> None:
    data(code(http, stateful, "import sys\nprint('one')\nprint('err', file=sys.stderr)"))
    result = data(code(http, stateful, "print('two')"))
    assert result["stdout"] == "two\n" and result["stderr"] == ""


def test_a_timeout_resets_the_interpreter(http: httpx.Client, stateful: str) -> None:
    data(code(http, stateful, "y = 'kept'"))
    response = code(http, stateful, "import time\nprint('before', flush=True)\ntime.sleep(30)", timeout=1)
    assert response.status_code == 408, response.text
    error = response.json()["error"]
    assert error["code"] == "EXECUTION_TIMEOUT"
    assert error["details"]["reset"] is True and error["details"]["stdout"] == "before\n"
    after = data(code(http, stateful, "print('y' in globals())"))
    assert after["stdout"] == "False\n" and after["reset"] is False


def test_syntax_error_and_sys_exit_keep_the_interpreter(http: httpx.Client, stateful: str) -> None:
    data(code(http, stateful, "z = 3"))
    response = code(http, stateful, "def broken(:\n")
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_CODE"
    exited = data(code(http, stateful, "import sys\nsys.exit(4)"))
    assert exited["exit_code"] == 4 and exited["reset"] is False
    assert data(code(http, stateful, "print(z)"))["stdout"] == "3\n"


def test_stateless_sessions_are_unaffected(http: httpx.Client, stateless: str) -> None:
    assert http.get(f"{SE}/status/{stateless}").json()["data"]["stateful"] is False
    first = data(code(http, stateless, "x = 1"))
    assert "reset" not in first
    second = data(code(http, stateless, "print('x' in globals())"))
    assert second["stdout"] == "False\n"


def test_stateful_must_be_a_boolean(http: httpx.Client) -> None:
    response = http.post(f"{SE}/session/s-bad-{uuid.uuid4().hex[:6]}", json={"stateful": "yes"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"


# -- streaming over HTTP ------------------------------------------------------------------------------------


def sse(response: httpx.Response) -> Iterator[tuple[str, object]]:
    """(event, decoded data) for each event of a Server-Sent Events response, as it arrives."""
    kind, lines = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        elif not line and lines:
            yield kind, json.loads("\n".join(lines))
            kind, lines = "message", []


SLOW = "echo first; sleep 1.5; echo second >&2; echo third"


def test_execute_streams_before_the_command_ends(http: httpx.Client, stateless: str) -> None:
    events = []
    with http.stream("POST", f"{SE}/execute/{stateless}", json={"command": SLOW, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for kind, payload in sse(response):
            events.append((kind, payload, time.monotonic()))
    kinds = [kind for kind, _, _ in events]
    assert kinds[0] == "stdout" and events[0][1] == "first\n"
    assert kinds[-1] == "result" and kinds.count("result") == 1
    # The first chunk came before the command had finished: strictly before the last output and the result.
    assert events[0][2] < events[-1][2]
    assert "".join(p for k, p, _ in events if k == "stdout") == "first\nthird\n"
    assert "".join(p for k, p, _ in events if k == "stderr") == "second\n"
    envelope = events[-1][1]
    assert isinstance(envelope, dict) and envelope["success"] is True
    assert envelope["data"]["stdout"] == "first\nthird\n" and envelope["data"]["exit_code"] == 0


def test_execute_code_streams_with_the_accept_header(http: httpx.Client, stateful: str) -> None:
    source = "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')\nresult_value = 7\n"
    headers = {"accept": "text/event-stream"}
    with http.stream("POST", f"{SE}/execute_code/{stateful}", json={"code": source}, headers=headers) as response:
        events = [(kind, payload, time.monotonic()) for kind, payload in sse(response)]
    # print() may reach the pipe in pieces (text and newline): chunks are joined before comparing.
    assert events[0][:2] == ("stdout", "a") or events[0][:2] == ("stdout", "a\n")
    assert events[0][2] < events[-1][2]
    assert "".join(str(p) for k, p, _ in events if k == "stdout") == "a\nb\n"
    assert events[-1][0] == "result" and events[-1][1]["data"]["stdout"] == "a\nb\n"  # type: ignore[index]
    assert events[-1][1]["data"]["reset"] is False  # type: ignore[index]
    handler = "def handler(event):\n    print('h')\n    return result_value * 6\n"
    with http.stream("POST", f"{SE}/execute_code/{stateful}", json={"code": handler, "stream": True}) as response:
        events = list(sse(response))
    assert events[-1][1]["data"]["result"] == 42  # type: ignore[index]


def test_errors_mid_stream(http: httpx.Client, stateless: str) -> None:
    body = {"command": "echo going; sleep 30", "timeout": 1, "stream": True}
    with http.stream("POST", f"{SE}/execute/{stateless}", json=body) as response:
        assert response.status_code == 200
        events = list(sse(response))
    assert events[0] == ("stdout", "going\n")
    kind, error = events[-1]
    assert kind == "error" and isinstance(error, dict)
    assert error["code"] == "EXECUTION_TIMEOUT" and error["details"]["timed_out"] is True
    with http.stream("POST", f"{SE}/execute_code/{stateless}", json={"code": "def f(:", "stream": True}) as response:
        events = list(sse(response))
    assert events[-1][0] == "error" and events[-1][1]["code"] == "INVALID_CODE"  # type: ignore[index]
    # Errors found before anything runs are ordinary error answers.
    response = http.post(f"{SE}/execute/{stateless}", json={"stream": True})
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"
    response = http.post(f"{SE}/execute/nope-{uuid.uuid4().hex[:6]}", json={"command": "true", "stream": True})
    assert response.status_code == 404


def test_non_streamed_calls_are_unchanged(http: httpx.Client, stateless: str) -> None:
    response = http.post(f"{SE}/execute/{stateless}", json={"command": "echo plain"})
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["data"]["stdout"] == "plain\n"


# -- the SDK ------------------------------------------------------------------------------------------------


async def test_sdk_stateful_and_streams(service: ServiceProcess) -> None:
    async with SandboxClient(service.url) as client, client.session(stateful=True) as session:
        assert session.info.raw.get("stateful") is True
        first = await session.execute_code("n = 5")
        assert first.reset is False
        assert (await session.execute_code("print(n * 2)")).stdout == "10\n"

        events: list[tuple[StreamEvent, float]] = []
        async for item in session.execute_stream(SLOW):
            events.append((item, time.monotonic()))
        assert events[0][0].type == "stdout" and events[0][0].data == "first\n"
        assert events[-1][0].type == "result" and events[0][1] < events[-1][1]
        final = events[-1][0].result
        assert final is not None and final.stdout == "first\nthird\n" and final.stderr == "second\n"

        streamed = [item async for item in session.execute_code_stream("print(n)")]
        assert [item.type for item in streamed][-1] == "result"
        assert "".join(item.data for item in streamed if item.type == "stdout") == "5\n"

        seen: list[StreamEvent] = []
        with pytest.raises(ExecutionTimeoutError) as caught:
            async for item in session.execute_code_stream("import time\nprint('x', flush=True)\ntime.sleep(30)",
                                                          timeout=1):  # fmt: skip
                seen.append(item)
        assert "".join(item.data for item in seen) == "x\n"
        assert caught.value.details is not None and caught.value.details["reset"] is True
        after = await session.execute_code("print('n' in globals())")
        assert after.stdout == "False\n"


def test_the_memory_limit_resets_the_interpreter(http: httpx.Client) -> None:
    for session_id in _session(http, stateful=True, memory_limit=65536):
        data(code(http, session_id, "w = 1"))
        hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))\n"
        response = code(http, session_id, hog)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "RESOURCE_LIMIT" and error["details"]["reset"] is True
        assert data(code(http, session_id, "print('w' in globals())"))["stdout"] == "False\n"


def test_a_traceback_starts_at_the_users_code(http: httpx.Client, stateful: str) -> None:
    result = data(code(http, stateful, "def f():\n    raise KeyError('k')\nf()\n"))
    assert result["exit_code"] == 1 and "KeyError: 'k'" in result["stderr"]
    assert "session_kernel" not in result["stderr"]
