"""Where a Docker cold start's time goes: the steps inside `DockerBackend._start_blocking`, timed by
wrapping (in this process only) the Docker API client it calls and the netns listener, then the
bootstrap's start up to its first `GET /next`. bwrap starts of the same spec alternate with the
Docker ones, for comparison.

    python -m bench.docker_spans [--samples 30] [--warmup 2] [--json PATH]

Nothing in sandbox/ is changed: the backend runs as the service runs it, from a `SandboxSpec` made as
`Service._new_environment` makes one for the echo function (network allowed, as by default: the egress
proxy's listener is made too). Not part of `python -m bench`; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import sandbox.docker as docker_backend
from runtime_api.config import Settings
from sandbox import SandboxSpec, UidPool
from sandbox.bwrap import BwrapBackend
from sandbox.egress import PROXY_PORT

from .backends import DOCKER_HOST, engine_problem
from .cold import spec_args
from .stats import percentile

# The client's methods that talk to the engine (the rest are local helpers such as create_host_config).
_ENGINE_CALLS = {
    "create_container",
    "start",
    "inspect_container",
    "attach_socket",
    "attach",
    "wait",
    "kill",
    "remove_container",
    "containers",
}
_OUTSIDE = "(the rest: Python, host configs, seccomp JSON)"
_NEXT = b"GET /2018-06-01/runtime/invocation/next"


class Recorder:
    """Spans (name, start, end) recorded on the thread that runs `_start_blocking`, per sample."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []
        self.thread: int | None = None  # only this thread's calls count (not the output thread's)
        self.roles: dict[str, str] = {}  # container id -> holder | function

    def span(self, name: str, start: float) -> None:
        if threading.get_ident() == self.thread:
            self.spans.append((name, start, time.perf_counter()))


class TimedAPI:
    """The docker `APIClient`, each engine call timed and named by the container's role."""

    def __init__(self, api: Any, recorder: Recorder) -> None:
        self._api = api
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if name not in _ENGINE_CALLS:
            return attr

        @functools.wraps(attr)
        def timed(*args: Any, **kwargs: Any) -> Any:
            recorder = self._recorder
            if name == "create_container":
                role = (kwargs.get("labels") or {}).get(docker_backend.ROLE_LABEL, "?")
            else:
                container = args[0] if args else kwargs.get("container")
                role = recorder.roles.get(container if isinstance(container, str) else "", "?")
            start = time.perf_counter()
            result = attr(*args, **kwargs)
            recorder.span(f"{role} {name}", start)
            if name == "create_container":
                recorder.roles[result["Id"]] = role
            return result

        return timed


class TimedClient:
    def __init__(self, client: Any, recorder: Recorder) -> None:
        self._client = client
        self.api = TimedAPI(client.api, recorder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def instrument(backend: docker_backend.DockerBackend, recorder: Recorder) -> None:
    """Time the engine calls, the netns listeners and `_start_blocking` as a whole, in this process."""
    backend.connect()
    backend._client = TimedClient(backend._client, recorder)
    listen = docker_backend.listen_in_netns

    def timed_listen(pid: int, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return listen(pid, host, port, *args, **kwargs)
        finally:
            recorder.span("egress proxy listener" if port == PROXY_PORT else "Runtime API listener", start)

    docker_backend.listen_in_netns = timed_listen  # type: ignore[assignment]
    start_blocking = backend._start_blocking

    def timed_start(*args: Any, **kwargs: Any) -> Any:
        recorder.thread = threading.get_ident()
        start = time.perf_counter()
        try:
            return start_blocking(*args, **kwargs)
        finally:
            recorder.span("_start_blocking", start)

    backend._start_blocking = timed_start  # type: ignore[method-assign]


async def first_next(backend: Any, spec: SandboxSpec) -> dict[str, float]:
    """Start a sandbox; answer nothing, wait for the bootstrap's first `GET /next`; stop it.
    Seconds from the start call: `started` (the backend returned), `next` (the request arrived),
    and `teardown` (kill to exit, containers removed; not part of a cold start)."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    sandbox = await backend.start(spec)
    started = time.perf_counter() - start
    listener = sandbox.listener
    try:
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 30)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await asyncio.wait_for(loop.sock_recv(conn, 4096), 30)
            if not chunk:
                break
            request += chunk
        reached = time.perf_counter() - start
        conn.close()
        if not request.startswith(_NEXT):
            raise RuntimeError(f"expected the bootstrap's GET /next, got {request[:200]!r}")
    finally:
        listener.close()
        if sandbox.proxy_listener is not None:
            sandbox.proxy_listener.close()
        killed = time.perf_counter()
        sandbox.kill()
        await sandbox.wait()
        os.close(sandbox.output_fd)
    return {"started": started, "next": reached, "teardown": time.perf_counter() - killed}


def _ms(values: list[float]) -> str:
    return f"{percentile(values, 50) * 1000:7.1f} {percentile(values, 90) * 1000:7.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.docker_spans", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every span as JSON to PATH")
    args = parser.parse_args(argv)
    if problem := engine_problem():
        print(f"skipped: {problem}")
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="sandbox-runtime-spans-"))
    os.chmod(workdir, 0o711)
    uid_base = 900000 + (os.getpid() % 400) * 500 + 200  # inside this pid's bench block, off the services'
    settings = Settings()
    launch, fields = spec_args(workdir / "state", "bench-spans", network=settings.allow_network)
    spec = SandboxSpec(command=launch.command, cpu_cores=settings.cpu_quota or None, **fields)
    recorder = Recorder()
    # No spare holders: every start makes its own, so the holder's steps show (a burst of cold starts
    # larger than the spares costs this much; `python -m bench --only docker` measures the spares).
    docker = docker_backend.DockerBackend(
        uid_pool=UidPool(uid_base, 8), docker_host=DOCKER_HOST, spawn_threads=1, spare_holders=0
    )
    bwrap = BwrapBackend(uid_pool=UidPool(uid_base + 8, 8), cgroups=None, spawn_threads=1)
    loop = asyncio.new_event_loop()
    spans: dict[str, list[float]] = defaultdict(list)
    offsets: dict[str, list[float]] = defaultdict(list)
    totals: dict[str, dict[str, list[float]]] = {"docker": defaultdict(list), "bwrap": defaultdict(list)}
    try:
        instrument(docker, recorder)
        print(
            f"{args.samples} Docker and bwrap starts of the echo function's bootstrap, alternating "
            f"({args.warmup} warm-up pairs dropped); load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
        for i in range(args.samples + args.warmup):
            recorder.spans = []
            order: list[tuple[str, Any]] = [("docker", docker), ("bwrap", bwrap)]
            for name, backend in order if i % 2 == 0 else order[::-1]:
                result = loop.run_until_complete(first_next(backend, spec))
                if i >= args.warmup:
                    for key, value in result.items():
                        totals[name][key].append(value)
            if i < args.warmup:
                continue
            whole = next((start, end) for name, start, end in recorder.spans if name == "_start_blocking")
            steps = sorted((span for span in recorder.spans if span[0] != "_start_blocking"), key=lambda s: s[1])
            for name, start, end in steps:
                spans[name].append(end - start)
                offsets[name].append(start - whole[0])
            spans["_start_blocking"].append(whole[1] - whole[0])
            spans[_OUTSIDE].append(whole[1] - whole[0] - sum(end - start for _, start, end in steps))
    finally:
        loop.close()
        docker.close()
        bwrap.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nDocker start, by step (ms; {args.samples} samples; steps in call order):")
    print(f"  {'step':52s} {'p50':>7s} {'p90':>7s}  {'starts at (p50)':>15s}")
    for name in sorted(spans, key=lambda n: percentile(offsets[n], 50) if n in offsets else 1e9):
        offset = f"{percentile(offsets[name], 50) * 1000:15.1f}" if name in offsets else ""
        print(f"  {name:52s} {_ms(spans[name])}  {offset}")
    for name, total in totals.items():
        print(
            f"{name:6s}: backend.start returned {_ms(total['started'])} ms (p50 p90); first GET /next "
            f"{_ms(total['next'])} ms; bootstrap (start returned -> /next) "
            f"{_ms([n - s for n, s in zip(total['next'], total['started'], strict=True)])} ms; "
            f"teardown {_ms(total['teardown'])} ms"
        )
    if args.json:
        args.json.write_text(json.dumps({"spans": spans, "offsets": offsets, "totals": totals}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
