"""The interpreter of a stateful agent session: one Python process that lives across execute_code calls,
so variables and imports persist, as in a notebook kernel.

Started by the session agent (session_agent.py, `_Kernel`) in its own process group, with one end of a
Unix stream socket. Each call is sent as one byte carrying two descriptors (the call's stdout and stderr
pipes), then one JSON line: `{"path": FILE, "args": [...], "event": ..., "context": {...}}`. The kernel
puts the pipes on fds 1 and 2, runs FILE's code in its one `__main__` namespace (code that defines
`handler` at the top level is then called with the event, as in session_runner.py), puts /dev/null back on
fds 1 and 2 (so the pipes end), and answers one JSON line: `{"exit_code": N, "outcome": {...},
"cpu_time": S}` with the outcome as session_runner.py writes it. A timeout or crash kills the whole
process; the agent starts a new one for the next call. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def serve(fd: int) -> None:
    from . import session_runner as runner

    sock = socket.socket(fileno=fd)
    sys.path[0] = os.getcwd()  # the workspace: its modules import, as a script's folder would
    namespace = types.ModuleType("__main__")
    sys.modules["__main__"] = namespace
    null = os.open(os.devnull, os.O_RDWR)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(sock, 1, 2)
        except OSError:
            return
        if len(fds) != 2:
            return
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            line += chunk
        request = json.loads(line)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for each in fds:
            os.close(each)
        cpu = time.process_time()
        try:
            exit_code, outcome = _call(runner, namespace, request)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os.dup2(null, 1)
            os.dup2(null, 2)
        reply = {"exit_code": exit_code, "outcome": outcome, "cpu_time": time.process_time() - cpu}
        sock.sendall(json.dumps(reply, ensure_ascii=False).encode("utf-8", "replace") + b"\n")


def _call(runner: Any, namespace: types.ModuleType, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    path = str(request["path"])
    sys.argv = [path, *[str(arg) for arg in request.get("args") or []]]
    namespace.__file__ = path
    try:
        with open(path, "rb") as source_file:
            source = source_file.read()
        import ast

        tree = ast.parse(source, path)
        code = compile(tree, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        runner._print_exception(exc)
        return 1, {"invalid_code": f"{type(exc).__name__}: {exc}", "error": runner._error_document(exc)}
    handler_mode = runner._defines_handler(tree)
    try:
        exec(code, namespace.__dict__)
        if not handler_mode:
            return 0, {"mode": "script"}
        result, _ = runner.call_handler(namespace.__dict__, request.get("event"), request.get("context") or {})
        return 0, {"mode": "handler", "result": result}
    except SystemExit as exc:
        code_ = exc.code
        if code_ is None or isinstance(code_, int):
            status = int(code_ or 0)
        else:
            print(code_, file=sys.stderr)
            status = 1
        outcome: dict[str, Any] = {"mode": "handler" if handler_mode else "script"}
        if handler_mode:
            outcome["error"] = runner._error_document(exc)
        return status, outcome
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:  # from the user's first frame
            tb = tb.tb_next
        exc.__traceback__ = tb
        runner._print_exception(exc)
        if handler_mode:
            return 1, {"mode": "handler", "error": runner._error_document(exc)}
        return 1, {"mode": "script"}
