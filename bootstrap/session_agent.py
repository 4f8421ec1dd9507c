"""The agent of an agent session: the command of a session's sandbox, which runs what the service sends.

Started inside the sandbox (cwd /workspace) as
`python3 -c "import sys; sys.path.insert(0, '/var/runtime'); from sandbox_bootstrap.session_agent import main; main()"`.
It connects to the service at SANDBOX_SESSION_AGENT (127.0.0.1:9001: a listener the service made inside
this sandbox's network namespace, so the connection can only come from here), says hello, then reads
one JSON document per line and answers each on the same connection, in any order, by its id:

    -> {"type": "exec", "id": 3, "argv": ["/bin/bash", "-c", "ls"], "timeout": 30.0, "max_output": 1048576,
        "runner": false}
    <- {"type": "result", "id": 3, "exit_code": 0, "signal": null, "timed_out": false, "stdout": "...",
        "stderr": "", "stdout_bytes": 12, "stderr_bytes": 0, "stdout_truncated": false,
        "stderr_truncated": false, "duration": 0.004, "cpu_time": 0.003, "outcome": null}
    -> {"type": "ping", "id": 4}            <- {"type": "pong", "id": 4}

Each exec runs in a thread of its own, as a child in a new session (its own process group) with its
own stdout and stderr pipes, read as they fill and kept up to `max_output` bytes each. A timeout kills
the child's process group; the agent and the session carry on. A `runner` exec (session_runner.py) gets
two more pipes, named to it by _SANDBOX_RUNNER_FDS: the event to read, and its outcome (a handler's
result, or why the code is invalid) to write, as JSON. Runner execs are forked by the fork server
(session_forks.py, started with the agent) when it is up, which saves an interpreter start each; the
message's `argv` is the fallback. The children are the kernel's first choice when the sandbox runs out
of memory (oom_score_adj 1000), so the agent normally outlives them. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from typing import Any

# `subprocess` and `selectors` (9-13 ms of imports) are imported where they are used, after the hello: the
# session is ready sooner, and they are loaded by the time its first execution arrives.

WORKSPACE = "/workspace"
_OUTCOME_LIMIT = 8 * 1024 * 1024  # a runner's outcome beyond this is dropped (the service allows 6 MB results)
_READ = 65536


class _Capture:
    """The head of one output stream, up to `limit` bytes; the rest is only counted. With `emit`, what is
    kept is also passed on as it comes (decoded: a character split between reads waits for its rest)."""

    def __init__(self, limit: int, emit: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self._emit = emit
        self._decoder: Any = None
        if emit is not None:
            import codecs

            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, data: bytes) -> None:
        kept = sum(len(chunk) for chunk in self.chunks)
        if kept < self.limit:
            piece = data[: self.limit - kept]
            self.chunks.append(piece)
            if self._emit is not None and (text := self._decoder.decode(piece)):
                self._emit(text)
        self.size += len(data)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


class Agent:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._child_env = {key: value for key, value in os.environ.items() if key != "SANDBOX_SESSION_AGENT"}
        self._forks: _Forks | None = None
        self._forks_lock = threading.Lock()
        self._kernel: _Kernel | None = None  # a stateful session's interpreter, started at its first call
        self._kernel_lock = threading.Lock()

    def forks(self) -> _Forks | None:
        """The fork server, (re)started if need be; None if it cannot run (children are spawned then)."""
        with self._forks_lock:
            if self._forks is None or self._forks.dead:
                try:
                    self._forks = _Forks(self._child_env)
                except OSError:
                    self._forks = None
            return self._forks

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace") + b"\n"
        with self._send_lock:
            self._sock.sendall(data)

    def serve(self) -> None:
        self.send({"type": "hello", "pid": os.getpid(), "python": sys.version.split()[0]})
        self.forks()  # started now: it imports while the session waits for its first execution
        reader = self._sock.makefile("rb")
        for line in reader:
            try:
                message = json.loads(line)
                kind = message.get("type")
            except (ValueError, AttributeError):
                continue
            if kind == "exec":
                threading.Thread(target=self._exec, args=(message,), daemon=True).start()
            elif kind == "ping":
                self.send({"type": "pong", "id": message.get("id")})
            else:
                self.send({"type": "error", "id": message.get("id"), "message": f"unknown message type {kind!r}"})

    def _exec(self, message: dict[str, Any]) -> None:
        emit = None
        if message.get("stream"):  # output messages as it comes, before the result

            def emit(stream: str, text: str) -> None:
                with contextlib.suppress(OSError):
                    self.send({"type": "output", "id": message.get("id"), "stream": stream, "data": text})

        try:
            if message.get("stateful") and message.get("path"):
                reply = self._stateful(message, emit)
            else:
                forks = self.forks() if message.get("runner") and message.get("path") else None
                reply = run(message, self._child_env, forks, emit)
        except Exception as exc:  # never leave the service waiting for an answer
            reply = {"type": "error", "message": f"{type(exc).__name__}: {exc}"}
        reply["id"] = message.get("id")
        with contextlib.suppress(OSError):  # the service has gone; the sandbox goes with it
            self.send(reply)

    def _stateful(self, message: dict[str, Any], emit: Callable[[str, str], None] | None) -> dict[str, Any]:
        """Run a stateful session's code in its kernel, started if there is none (or it was reset)."""
        with self._kernel_lock:
            if self._kernel is None:
                self._kernel = _Kernel(self._child_env)
            reply = self._kernel.call(message, emit)
            if reply.get("reset"):
                self._kernel = None
            return reply


class _Child:
    """A running execution: a child of ours (spawned) or of the fork server; `pidfd` watches it."""

    def __init__(self, pid: int, pidfd: int, proc: subprocess.Popen[bytes] | None, forks: _Forks | None) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self._proc = proc
        self._forks = forks
        self.forked = forks is not None

    def reap(self) -> tuple[int, float]:
        """Once it has ended: its wait status and CPU seconds."""
        if self._forks is not None:
            ended = self._forks.wait_exit(self.pid, timeout=10)
            if ended is None:  # the fork server died with it: the status is lost
                return 255 << 8, 0.0
            return int(ended["status"]), float(ended["cpu_time"])
        _, status, usage = os.wait4(self.pid, 0)
        assert self._proc is not None
        self._proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        return status, usage.ru_utime + usage.ru_stime


def _spawn_server(
    module: str, kind: int, env: dict[str, str], *, quiet: bool = False, **popen: Any
) -> tuple[Any, socket.socket]:
    """Start `<this package>.<module>.serve(fd)` in a new interpreter, connected by a socket pair; the
    process and our end of the pair. `quiet` sends its stdout and stderr to /dev/null."""
    import subprocess

    ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
    package = __name__.rpartition(".")[0]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    launch = (
        f"import sys; sys.path.insert(0, {root!r}); from {package}.{module} import serve; "
        f"del sys.path[0]; serve({theirs.fileno()})"
    )
    if quiet:
        popen.update(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", launch], env=env, cwd=WORKSPACE if os.path.isdir(WORKSPACE) else "/",
            stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), **popen,
        )  # fmt: skip
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


class _Forks:
    """The agent's end of the fork server (session_forks.py)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc, self.sock = _spawn_server("session_forks", socket.SOCK_SEQPACKET, env)
        self.dead = False
        self._spawn_lock = threading.Lock()
        self._spawned: list[tuple[dict[str, Any], list[int]]] = []
        self._exits: dict[int, dict[str, Any]] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._read, name="forks", daemon=True).start()

    def spawn(self, request: dict[str, Any], fds: list[int]) -> tuple[int, int]:
        """Fork a runner child; its pid and a pidfd on it. OSError if the fork server cannot."""
        with self._spawn_lock:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
            with self._changed:
                if not self._changed.wait_for(lambda: self._spawned or self.dead, timeout=10):
                    raise OSError("the fork server did not answer")
                if not self._spawned:
                    raise OSError("the fork server has ended")
                reply, pidfds = self._spawned.pop(0)
        if reply.get("type") != "spawned" or len(pidfds) != 1:
            for fd in pidfds:
                os.close(fd)
            raise OSError(str(reply.get("message", "the fork server could not fork")))
        return int(reply["pid"]), pidfds[0]

    def wait_exit(self, pid: int, timeout: float) -> dict[str, Any] | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or self.dead, timeout=timeout)
            return self._exits.pop(pid, None)

    def _read(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 65536, 1)
            except OSError:
                data, fds = b"", []
            if not data:
                break
            try:
                message = json.loads(data)
            except ValueError:
                break
            with self._changed:
                if message.get("type") == "exit":
                    self._exits[int(message["pid"])] = message
                else:
                    self._spawned.append((message, fds))
                self._changed.notify_all()
        with self._changed:
            self.dead = True
            self._changed.notify_all()
        self.sock.close()


def run(
    message: dict[str, Any],
    base_env: dict[str, str],
    forks: _Forks | None = None,
    emit: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Run one exec message to its end (or its timeout); the result message. A runner exec goes to the
    fork server when there is one, else (and every other exec) is spawned."""
    timeout = float(message.get("timeout") or 300)
    limit = int(message.get("max_output") or 1024 * 1024)
    cwd = str(message.get("cwd") or WORKSPACE)
    env = dict(base_env)
    env.update({str(k): str(v) for k, v in (message.get("env") or {}).items()})
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    theirs, ours = [out_w, err_w], [out_r, err_r]  # ends for the child / kept here
    if message.get("runner"):
        event_r, event_w = os.pipe()
        outcome_r, outcome_w = os.pipe()
        theirs += [event_r, outcome_w]
        ours += [event_w, outcome_r]
        env["_SANDBOX_RUNNER_CONTEXT"] = json.dumps(message.get("context") or {})
    started = time.monotonic()
    try:
        child = _start(message, env, cwd, theirs, forks)
    except OSError as exc:
        for fd in ours:
            os.close(fd)
        return {"type": "error", "message": f"cannot start {message['argv'][0]}: {exc.strerror or exc}"}
    finally:
        for fd in theirs:
            os.close(fd)
    if len(ours) == 4:
        event = json.dumps(message.get("event"), ensure_ascii=False).encode("utf-8", "replace")
        threading.Thread(target=_feed, args=(ours[2], event), daemon=True).start()
    out, err = _captures(limit, emit)
    outcome = _Capture(_OUTCOME_LIMIT)
    captures = {out_r: out, err_r: err}
    if len(ours) == 4:
        captures[ours[3]] = outcome
    try:
        timed_out, status, cpu = _follow(child, captures, started + timeout)
    finally:
        for fd in captures:
            os.close(fd)
    duration = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    reply: dict[str, Any] = {
        "type": "result",
        "exit_code": 128 - code if code < 0 else code,
        "signal": -code if code < 0 else None,
        "timed_out": timed_out,
        **_output_reply(out, err),
        "duration": round(duration, 6),
        "cpu_time": round(cpu, 6),
        "outcome": None,
        "forked": child.forked,
    }
    if len(ours) == 4:
        if outcome.size > _OUTCOME_LIMIT:
            note = f"the handler's result is over {_OUTCOME_LIMIT} bytes"
            reply["outcome"] = {"error": {"errorType": "ResultTooLarge", "errorMessage": note, "stackTrace": []}}
        elif outcome.size:
            try:
                reply["outcome"] = json.loads(b"".join(outcome.chunks))
            except ValueError:
                reply["outcome"] = None
    return reply


def _captures(limit: int, emit: Callable[[str, str], None] | None) -> tuple[_Capture, _Capture]:
    if emit is None:
        return _Capture(limit), _Capture(limit)
    return _Capture(limit, lambda text: emit("stdout", text)), _Capture(limit, lambda text: emit("stderr", text))


def _output_reply(out: _Capture, err: _Capture) -> dict[str, Any]:
    return {
        "stdout": out.text(),
        "stderr": err.text(),
        "stdout_bytes": out.size,
        "stderr_bytes": err.size,
        "stdout_truncated": out.size > out.limit,
        "stderr_truncated": err.size > err.limit,
    }


class _Kernel:
    """A stateful session's interpreter (session_kernel.py): one process, its own process group, fed
    one call at a time over a Unix socket; killed (and so reset) at a call's timeout."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc, self.sock = _spawn_server(
            "session_kernel", socket.SOCK_STREAM, env, quiet=True, start_new_session=True
        )
        _expendable(self.proc.pid)
        self.pidfd = os.pidfd_open(self.proc.pid)

    def call(self, message: dict[str, Any], emit: Callable[[str, str], None] | None) -> dict[str, Any]:
        import selectors

        timeout = float(message.get("timeout") or 300)
        limit = int(message.get("max_output") or 1024 * 1024)
        started = time.monotonic()
        deadline = started + timeout
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request = {"path": str(message["path"]), "args": [str(a) for a in message.get("args") or []],
                   "event": message.get("event"), "context": message.get("context") or {}}  # fmt: skip
        data = json.dumps(request, ensure_ascii=False).encode("utf-8", "replace") + b"\n"
        dead = False
        try:
            socket.send_fds(self.sock, [b"x"], [out_w, err_w])
            threading.Thread(target=self._send, args=(data,), daemon=True).start()
        except OSError:
            dead = True
        finally:
            os.close(out_w)
            os.close(err_w)
        out, err = _captures(limit, emit)
        captures = {out_r: out, err_r: err}
        answer = b""
        reply_line: bytes | None = None
        timed_out = False
        selector = selectors.DefaultSelector()
        for fd in captures:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self.pidfd, selectors.EVENT_READ)
        try:
            while not dead and reply_line is None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(wait):
                    if key.fd == self.pidfd:
                        dead = True
                    elif key.fileobj is self.sock:
                        try:
                            chunk = self.sock.recv(1 << 20)
                        except OSError:
                            chunk = b""
                        if not chunk:
                            dead = True
                        answer += chunk
                        if answer.endswith(b"\n"):
                            reply_line = answer
                    elif not _read(key.fd, captures[key.fd]):
                        selector.unregister(key.fd)
            reset = reply_line is None
            if reset:
                _kill_group(self.proc.pid)
                _, status, usage = os.wait4(self.proc.pid, 0)
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.sock.close()
                os.close(self.pidfd)
            for fd, capture in captures.items():
                while _read(fd, capture):
                    pass
        finally:
            selector.close()
            for fd in captures:
                os.close(fd)
        reply: dict[str, Any] = {"type": "result", "timed_out": timed_out, "reset": reset, "stateful": True,
                                 "signal": None, "outcome": None, "forked": False}  # fmt: skip
        if reply_line is not None:
            try:
                answered = json.loads(reply_line)
            except ValueError:
                answered = {}
            reply["exit_code"] = int(answered.get("exit_code") or 0)
            reply["outcome"] = answered.get("outcome")
            reply["cpu_time"] = round(float(answered.get("cpu_time") or 0), 6)
        else:
            code = os.waitstatus_to_exitcode(status)
            reply["exit_code"] = 128 - code if code < 0 else code
            reply["signal"] = -code if code < 0 else None
            reply["cpu_time"] = round(usage.ru_utime + usage.ru_stime, 6)
        reply.update(_output_reply(out, err))
        reply["duration"] = round(time.monotonic() - started, 6)
        return reply

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)


def _start(message: dict[str, Any], env: dict[str, str], cwd: str, fds: list[int], forks: _Forks | None) -> _Child:
    """The child for `message`, given its ends of the pipes (stdout, stderr[, event, outcome])."""
    if forks is not None and len(fds) == 4:
        request = {"path": str(message["path"]), "args": [str(a) for a in message.get("args") or []],
                   "env": env, "cwd": cwd}  # fmt: skip
        try:
            pid, pidfd = forks.spawn(request, fds)
        except OSError:
            pass  # spawned instead, below
        else:
            return _Child(pid, pidfd, None, forks)
    if len(fds) == 4:
        env["_SANDBOX_RUNNER_FDS"] = f"{fds[2]},{fds[3]}"
    import subprocess

    proc = subprocess.Popen(
        [str(arg) for arg in message["argv"]],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=fds[0],
        stderr=fds[1],
        pass_fds=tuple(fds[2:]),
        start_new_session=True,  # its own process group: a timeout kills all of it
    )
    _expendable(proc.pid)
    return _Child(proc.pid, os.pidfd_open(proc.pid), proc, None)


def _follow(child: _Child, captures: dict[int, _Capture], deadline: float) -> tuple[bool, int, float]:
    """Read the child's pipes until it exits (killing its group at the deadline); then take what it
    wrote before exiting. Background processes it left may keep the pipes open: they are not waited for."""
    import selectors

    selector = selectors.DefaultSelector()
    for fd in captures:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    selector.register(child.pidfd, selectors.EVENT_READ)
    timed_out = False
    exited = False
    try:
        while not exited:
            if not timed_out and time.monotonic() >= deadline:  # checked even while output keeps coming
                timed_out = True
                _kill_group(child.pid)
            wait = None if timed_out else max(0.0, deadline - time.monotonic())
            for key, _ in selector.select(wait):
                if key.fd == child.pidfd:
                    exited = True
                elif not _read(key.fd, captures[key.fd]):
                    selector.unregister(key.fd)
        status, cpu = child.reap()
        if timed_out:
            _kill_group(child.pid)
        for fd, capture in captures.items():
            while _read(fd, capture):
                pass
    finally:
        selector.close()
        os.close(child.pidfd)
    return timed_out, status, cpu


def _read(fd: int, capture: _Capture) -> bool:
    """Take what the pipe holds now; False at its end or when it is empty."""
    try:
        data = os.read(fd, _READ)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
    if not data:
        return False
    capture.add(data)
    return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # not its own group yet (a fork before its setsid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _expendable(pid: int) -> None:
    """Make the child the out-of-memory killer's first choice: it, not the agent, should die."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass


def _feed(fd: int, data: bytes) -> None:
    """Write the event to the runner; it may never read it (a script), then the write fails when it exits."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass
    finally:
        os.close(fd)


def main() -> None:
    host, _, port = os.environ.get("SANDBOX_SESSION_AGENT", "127.0.0.1:9001").rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with contextlib.suppress(OSError, KeyboardInterrupt):
        Agent(sock).serve()
    os._exit(0)  # exec threads may still run: the sandbox ends with the agent


if __name__ == "__main__":
    main()
