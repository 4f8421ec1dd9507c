"""The in-sandbox session agent (bootstrap/session_agent.py) and runner (bootstrap/session_runner.py), driven
over their JSON-lines protocol from a socket of the test's, outside any sandbox: handler or script, events and
results, errors, timeouts that kill the whole process group, bounded output."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

AGENT = f"import sys; sys.path.insert(0, {str(REPO)!r}); from bootstrap.session_agent import main; main()"
RUNNER = (
    f"import sys; sys.path.insert(0, {str(REPO)!r}); from bootstrap.session_runner import main; del sys.path[0]; main()"
)


class Agent:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = socket.create_server(("127.0.0.1", 0))
        port = self.server.getsockname()[1]
        env = {"SANDBOX_SESSION_AGENT": f"127.0.0.1:{port}", "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", AGENT], env=env)
        self.conn, _ = self.server.accept()
        self.reader = self.conn.makefile("rb")
        self.hello = json.loads(self.reader.readline())
        self.ids = 0

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        self.conn.sendall(json.dumps({**message, "id": self.ids}).encode() + b"\n")
        reply = json.loads(self.reader.readline())
        assert reply["id"] == self.ids
        return reply

    def code(self, source: str, *args: str, event: Any = None, forked: bool = True, **fields: Any) -> dict[str, Any]:
        """Run `source` with the runner: forked by the fork server (as the service asks), or spawned."""
        path = self.folder / "main.py"
        path.write_text(source)
        argv = [sys.executable, "-c", RUNNER, str(path), *args]
        if forked:
            fields.update(path=str(path), args=list(args))
        reply = self.exec(argv, runner=True, event=event if event is not None else {}, **fields)
        assert reply.get("forked", forked) is forked, reply
        return reply

    def exec(self, argv: list[str], **fields: Any) -> dict[str, Any]:
        message = {"type": "exec", "argv": argv, "timeout": 20, "cwd": str(self.folder), **fields}
        return self.send(message)

    def close(self) -> None:
        self.reader.close()
        self.conn.close()
        self.server.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = Agent(tmp_path_factory.mktemp("agent"))
    yield running
    running.close()


def test_hello_and_ping(agent: Agent) -> None:
    assert agent.hello["type"] == "hello" and agent.hello["pid"] == agent.proc.pid
    assert agent.send({"type": "ping"})["type"] == "pong"
    assert agent.send({"type": "what"})["type"] == "error"


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "spawned"])
@pytest.mark.parametrize(
    "source",
    [
        "def handler(event, context):\n    return event['x'] + 1\n",
        "async def handler(event):\n    return event['x'] + 1\n",
        "def _impl(e):\n    return e['x'] + 1\nhandler = _impl\n",
        "class handler:\n    def __new__(cls, event):\n        return event['x'] + 1\n",
    ],
)
def test_handlers_are_called_with_the_event(agent: Agent, source: str, forked: bool) -> None:
    reply = agent.code(source, event={"x": 41}, forked=forked)
    assert reply["outcome"] == {"mode": "handler", "result": 42}, reply
    assert reply["exit_code"] == 0


def test_a_handler_module_is_imported_not_run_as_main(agent: Agent) -> None:
    source = "print(__name__)\nif __name__ == '__main__':\n    print('main block')\ndef handler(event):\n    return 1\n"
    reply = agent.code(source)
    assert reply["stdout"] == "main\n" and reply["outcome"]["result"] == 1


def test_context_and_large_events_and_results(agent: Agent) -> None:
    source = (
        "def handler(event, context):\n"
        "    left = context.get_remaining_time_in_millis() > 0\n"
        "    return {'n': len(event), 'id': context.aws_request_id, 'left': left}\n"
    )
    event = "x" * 300_000  # more than a pipe holds
    context = {"execution_id": "e-1", "deadline": time.time() + 20}
    assert agent.code(source, event=event, context=context)["outcome"]["result"] == {
        "n": 300_000,
        "id": "e-1",
        "left": True,
    }
    big = agent.code("def handler(event):\n    return 'y' * 2_000_000\n")
    assert len(big["outcome"]["result"]) == 2_000_000


def test_handler_errors(agent: Agent) -> None:
    raised = agent.code("def handler(event):\n    raise RuntimeError('nope')\n")
    error = raised["outcome"]["error"]
    assert raised["exit_code"] == 1 and error["errorType"] == "RuntimeError" and error["errorMessage"] == "nope"
    assert "session_runner" not in "".join(error["stackTrace"]) and "raise RuntimeError" in error["stackTrace"][-1]
    for result in ("object()", "float('nan')"):
        bad = agent.code(f"def handler(event):\n    return {result}\n")
        assert bad["exit_code"] == 1 and bad["outcome"]["error"]["errorType"] in ("TypeError", "ValueError")


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "spawned"])
def test_scripts(agent: Agent, forked: bool) -> None:
    reply = agent.code("import sys\nprint(sys.argv[1:], __name__)\nsys.exit(3)\n", "a", "b", forked=forked)
    assert reply["stdout"] == "['a', 'b'] __main__\n" and reply["exit_code"] == 3
    assert reply["outcome"] == {"mode": "script"}
    message = agent.code("import sys\nsys.exit('bye')\n", forked=forked)
    assert message["exit_code"] == 1 and message["stderr"] == "bye\n"
    raised = agent.code("def f():\n    raise ValueError('x')\nf()\n")
    assert (
        raised["exit_code"] == 1
        and raised["stderr"].startswith("Traceback")
        and "session_runner" not in raised["stderr"]
    )


def test_syntax_errors_are_invalid_code(agent: Agent) -> None:
    reply = agent.code("def (:\n")
    assert reply["outcome"]["invalid_code"].startswith("SyntaxError")
    assert reply["outcome"]["error"]["errorType"] == "SyntaxError"


def test_a_timeout_kills_the_whole_process_group(agent: Agent) -> None:
    marker = f"sleep {int(time.time() * 1000) % 100000 + 1000}"
    started = time.monotonic()
    reply = agent.exec(["/bin/sh", "-c", f"echo before; {marker} & {marker}"], timeout=0.5)
    assert reply["timed_out"] is True and reply["exit_code"] == 137 and reply["signal"] == 9
    assert reply["stdout"] == "before\n" and time.monotonic() - started < 10
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert marker not in ps


def test_output_is_capped_and_counted(agent: Agent) -> None:
    reply = agent.exec(["/bin/sh", "-c", "head -c 1000000 /dev/zero; echo err >&2"], max_output=100)
    assert len(reply["stdout"]) == 100 and reply["stdout_bytes"] == 1_000_000 and reply["stdout_truncated"]
    assert reply["stderr"] == "err\n" and not reply["stderr_truncated"]


def test_a_command_that_cannot_start(agent: Agent) -> None:
    reply = agent.exec(["/no/such/program"])
    assert reply["type"] == "error" and "No such file" in reply["message"]


def test_a_forked_child_exits_as_an_interpreter_does(agent: Agent) -> None:
    """Threads are joined, atexit functions run and output is flushed before the status is reported; every
    execution starts from the same clean state (what one imports is not there for the next)."""
    source = (
        "import atexit, sys, threading, time\n"
        "atexit.register(lambda: print('at exit'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
        "sys.stdout.write('no newline')\n"
    )
    reply = agent.code(source)
    assert reply["stdout"] == "no newlinethread done\nat exit\n" and reply["exit_code"] == 0
    agent.code("import sys\nsys.modules['json'].marker = 1\nimport colorsys\n")
    clean = agent.code("import sys\nprint(hasattr(sys.modules['json'], 'marker'), 'colorsys' in sys.modules)\n")
    assert clean["stdout"] == "False False\n"


def test_a_dead_fork_server_is_replaced(agent: Agent) -> None:
    import os
    import signal

    def fork_server() -> int:
        """This agent's own fork server: its child whose command line names session_forks."""
        for task in Path(f"/proc/{agent.proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                if b"session_forks" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
        raise AssertionError("no fork server")

    os.kill(fork_server(), signal.SIGKILL)
    time.sleep(0.2)
    reply = agent.code("def handler(event):\n    return 'back'\n")
    assert reply["outcome"]["result"] == "back" and reply["forked"] is True
