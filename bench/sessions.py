"""Agent sessions: creating a session (from the warm pool, and without it) against a bare sandbox start, and the
execute_code / execute round trips against a warm invoke of a function, all in the same service and run.

- **create, warm pool**: `POST /workspace/se/session/{id}` with the default limits, so a pre-started session
  sandbox is taken; the pool is refilled (untimed) before the next sample.
- **create, no pool**: the same with another memory limit, which the pool cannot serve: a sandbox is started
  and its agent connects before the answer.
- **bare sandbox start**: `python3 -c pass` in a sandbox of the service's own backend, spawn to exit
  (`cold.BwrapFloor`, the cold-start floor).
- **execute_code**: a handler returning its event, in one live session; **execute**: the shell command `true`;
  both against a warm invoke of the echo function (`bench-echo`) on a kept-alive connection, alternating.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

from .clients import EVENT, PAYLOAD, InvokeFailed
from .cold import BwrapFloor
from .procs import FUNCTION
from .stats import summary_ms
from .warm import alternate

SE = "/workspace/se"
HANDLER = "def handler(event):\n    return event\n"
_COLD_MEMORY_KB = 131072 + 1024  # not the default limits: the warm pool cannot serve it


class SessionsClient:
    """One kept-alive `http.client` connection to the sessions API (and the Invoke API)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: object = None) -> tuple[float, dict[str, Any]]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        start = time.perf_counter()
        self.conn.request(method, path, payload, headers)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - start
        answer = json.loads(data)
        if response.status != 200 or not answer.get("success"):
            raise InvokeFailed(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
        return elapsed, answer["data"]

    def invoke(self) -> float:
        start = time.perf_counter()
        self.conn.request("POST", f"/2015-03-31/functions/{FUNCTION}/invocations", PAYLOAD)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200 or json.loads(body) != EVENT:
            raise InvokeFailed(f"invoke: HTTP {response.status}: {body[:300]!r}")
        return elapsed

    def pool_ready(self) -> int:
        return int(self.call("GET", f"{SE}/healthy")[1]["pool"]["ready"])

    def close(self) -> None:
        self.conn.close()


def measure(port: int, floor: BwrapFloor, *, pool_size: int, samples: int, warmup: int, exec_samples: int,
            exec_warmup: int) -> dict[str, Any]:  # fmt: skip
    client = SessionsClient(port)
    created: dict[str, list[float]] = {"warm": [], "cold": [], "floor": []}
    in_service: dict[str, list[float]] = {"warm": [], "cold": []}
    try:
        for i in range(warmup + samples):
            _wait_for_pool(client, pool_size)
            steps = [("warm", None), ("cold", {"memory_limit": _COLD_MEMORY_KB}), ("floor", None)]
            if i % 2:
                steps.reverse()
            for kind, body in steps:
                if kind == "floor":
                    seconds = floor.python_pass()
                else:
                    session_id = f"bench-{kind}-{i}"
                    seconds, _ = client.call("POST", f"{SE}/session/{session_id}", body or {})
                    client.call("DELETE", f"{SE}/session/{session_id}")
                if i >= warmup:
                    created[kind].append(seconds)
        client.call("POST", f"{SE}/session/bench-exec")
        code = {"code": HANDLER, "event": EVENT}
        shell = {"command": "true"}

        def execute_code() -> float:
            seconds, data = client.call("POST", f"{SE}/execute_code/bench-exec", code)
            if data.get("result") != EVENT:
                raise InvokeFailed(f"execute_code: {data}")
            in_service.setdefault("execute_code", []).append(data["execution_time"])
            return seconds

        def execute() -> float:
            seconds, data = client.call("POST", f"{SE}/execute/bench-exec", shell)
            if data.get("exit_code") != 0:
                raise InvokeFailed(f"execute: {data}")
            in_service.setdefault("execute", []).append(data["execution_time"])
            return seconds

        code_run = alternate(client.invoke, execute_code, exec_warmup, exec_samples)
        shell_run = alternate(client.invoke, execute, exec_warmup, exec_samples)
        client.call("DELETE", f"{SE}/session/bench-exec")
    finally:
        client.close()
    return {
        "create_warm": summary_ms(created["warm"]),
        "create_cold": summary_ms(created["cold"]),
        "sandbox_start": summary_ms(created["floor"]),
        "execute_code": code_run["service"],
        "execute_code_invoke": code_run["floor"],
        "execute_code_in_agent": summary_ms(in_service.get("execute_code", [])[exec_warmup:]),
        "execute": shell_run["service"],
        "execute_invoke": shell_run["floor"],
        "execute_in_agent": summary_ms(in_service.get("execute", [])[exec_warmup:]),
        "pool_size": pool_size,
    }


def _wait_for_pool(client: SessionsClient, size: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.pool_ready() < size:
        if time.monotonic() > deadline:
            raise InvokeFailed(f"the session pool did not refill to {size} in {timeout:.0f}s")
        time.sleep(0.02)
