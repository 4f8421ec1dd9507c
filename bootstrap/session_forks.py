"""The fork server of a session's agent: a Python already started, with the runner's modules imported, that
forks one child per execute_code. A child costs a fork instead of an interpreter start (about 1 ms
instead of 20 here), and starts from the same clean state every time.

Started by the agent (session_agent.py) as
`python3 -c "...from sandbox_bootstrap.session_forks import serve; serve(FD)"`, FD being its end of an
AF_UNIX SOCK_SEQPACKET pair. Single-threaded (forking a threaded process is unsafe): it reads spawn
requests, each a JSON document with four descriptors (stdout, stderr, the event to read, the outcome to
write), forks, answers `{"type": "spawned", "pid": N}` with a pidfd of the child (so the agent can watch
it without a race with the reaping here), and when a child ends reaps it and sends
`{"type": "exit", "pid": N, "status": S, "cpu_time": T}`. It ends when the agent closes its end.

A child is what `python3 -c RUNNER FILE ARGS...` would be: a new session (its own process group, for the
timeout), stdin /dev/null, the environment and working folder it was sent; it runs `session_runner.main`
and exits as the interpreter would (non-daemon threads joined, atexit functions run, output flushed).
Standard library only.
"""

from __future__ import annotations

# What a runner commonly needs (besides what it imports itself), imported once here so every child has it.
import ast  # noqa: F401
import contextlib
import json
import os
import selectors
import socket
import sys
import traceback  # noqa: F401

from . import session_runner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MAX_REQUEST = 1 << 20


def serve(fd: int) -> None:
    _expendable()
    sock = socket.socket(fileno=fd)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                try:
                    message, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 4)
                except OSError:
                    return
                if not message:
                    return  # the agent is gone
                _spawn(sock, selector, message, fds)
            else:
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status, usage = os.wait4(key.data, 0)
                cpu = round(usage.ru_utime + usage.ru_stime, 6)
                _send(sock, {"type": "exit", "pid": key.data, "status": status, "cpu_time": cpu})


def _spawn(sock: socket.socket, selector: selectors.BaseSelector, message: bytes, fds: list[int]) -> None:
    try:
        request = json.loads(message)
        if len(fds) != 4:
            raise ValueError(f"expected 4 descriptors, got {len(fds)}")
        pid = os.fork()
    except (OSError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        _send(sock, {"type": "error", "message": f"cannot fork: {exc}"})
        return
    if pid == 0:
        _child(request, fds, sock, selector)  # never returns
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)  # our child, not reaped yet: it names that process and no other
    selector.register(pidfd, selectors.EVENT_READ, pid)
    socket.send_fds(sock, [json.dumps({"type": "spawned", "pid": pid}).encode()], [pidfd])


def _child(request: dict[str, Any], fds: list[int], sock: socket.socket, selector: selectors.BaseSelector) -> None:
    code = 1
    try:
        for key in list(selector.get_map().values()):
            if key.data is not None:
                os.close(key.fd)  # the other children's pidfds
        selector.close()
        sock.close()
        os.setsid()
        out, err, event, outcome = fds
        devnull = os.open(os.devnull, os.O_RDONLY)
        for target, fd in ((0, devnull), (1, out), (2, err)):
            os.dup2(fd, target)
        for fd in (devnull, out, err):
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["_SANDBOX_RUNNER_FDS"] = f"{event},{outcome}"
        sys.argv = ["-c", request["path"], *request["args"]]
        code = _run()
    except BaseException as exc:
        session_runner._print_exception(exc)
    finally:
        os._exit(code)


def _run() -> int:
    """session_runner.main, ending as an interpreter ends; the exit status."""
    try:
        session_runner.main()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    except BaseException as exc:  # KeyboardInterrupt and the like: as the interpreter reports them
        session_runner._print_exception(exc)
        code = 1
    threading = sys.modules.get("threading")
    try:
        if threading is not None:
            threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads are waited for
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    return code


def _exit_status(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.send(json.dumps(message).encode())


def _expendable() -> None:
    """The out-of-memory killer's first choice (and so are the children, which inherit it), not the agent."""
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass
