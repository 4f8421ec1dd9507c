"""Throughput: N client threads, each with its own keep-alive client, for a fixed time; floor and
service take turns (floor first in odd rounds, service first in even ones)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .clients import Boto3Invoker, InvokeFailed, RawClient
from .procs import FUNCTION
from .stats import summary_ms

Timed = Callable[[], float]


def _load(
    workers: Sequence[Timed], warmup: float, duration: float, reset: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run every worker in its own thread; count invokes that complete inside the measured window.

    `reset` runs first: it closes the clients' connections, which sat idle during the other side's
    turn and may have passed the server's keep-alive timeout (uvicorn's 5 s); they reconnect
    during the warm-up."""
    if reset is not None:
        reset()
    barrier = threading.Barrier(len(workers) + 1)
    window: list[float] = [0.0, 0.0]
    counts = [0] * len(workers)
    errors = [0] * len(workers)
    latencies: list[list[float]] = [[] for _ in workers]

    def run(index: int, timed: Timed) -> None:
        barrier.wait()
        start, end = window
        mine = latencies[index]
        while True:
            try:
                elapsed = timed()
            except (InvokeFailed, OSError, http.client.HTTPException):
                errors[index] += 1
                elapsed = None
            now = time.perf_counter()
            if now >= end:
                return
            if now >= start and elapsed is not None:
                counts[index] += 1
                mine.append(elapsed)

    threads = [threading.Thread(target=run, args=(i, w), daemon=True) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    window[:] = [now + warmup, now + warmup + duration]
    barrier.wait()
    for thread in threads:
        thread.join()
    return {
        "requests": sum(counts),
        "errors": sum(errors),
        "seconds": duration,
        "latency_ms": summary_ms([x for per in latencies for x in per]),
    }


def _rounds(
    floor: Sequence[Any], service: Sequence[Any], *, rounds: int, warmup: float, duration: float
) -> dict[str, Any]:
    """`floor` and `service`: clients with `timed()` and `reconnect()`."""
    results: dict[str, list[dict[str, Any]]] = {"floor": [], "service": []}
    sides = {"floor": floor, "service": service}

    def reset(clients: Sequence[Any]) -> Callable[[], None]:
        def reconnect_all() -> None:
            for client in clients:
                client.reconnect()

        return reconnect_all

    # A first, longer warm-up for both: every connection open, every environment used once.
    for clients in sides.values():
        _load([c.timed for c in clients], warmup * 2, 0.2, reset(clients))
    for r in range(rounds):
        names = ["floor", "service"] if r % 2 == 0 else ["service", "floor"]
        for name in names:
            clients = sides[name]
            results[name].append(_load([c.timed for c in clients], warmup, duration, reset(clients)))
    out: dict[str, Any] = {}
    for name, runs in results.items():
        requests = sum(run["requests"] for run in runs)
        seconds = sum(run["seconds"] for run in runs)
        out[name] = {
            "rps": requests / seconds,
            "requests": requests,
            "errors": sum(run["errors"] for run in runs),
            "seconds": seconds,
            "rounds_rps": [run["requests"] / run["seconds"] for run in runs],
            "latency_ms_p50": sorted(run["latency_ms"]["p50"] for run in runs)[len(runs) // 2],
        }
    out["threads"] = len(floor)
    return out


def measure_raw(
    floor_port: int, service_port: int, *, threads: int, rounds: int, warmup: float, duration: float
) -> dict[str, Any]:
    floor = [RawClient(floor_port, FUNCTION) for _ in range(threads)]
    service = [RawClient(service_port, FUNCTION) for _ in range(threads)]
    try:
        return _rounds(floor, service, rounds=rounds, warmup=warmup, duration=duration)
    finally:
        for client in (*floor, *service):
            client.close()


def measure_boto3(
    floor_url: str, service_url: str, *, threads: int, rounds: int, warmup: float, duration: float
) -> dict[str, Any]:
    # Clients are made here, one after another (creating them is not thread-safe); each is then
    # used by one thread only.
    floor = [Boto3Invoker(floor_url, FUNCTION) for _ in range(threads)]
    service = [Boto3Invoker(service_url, FUNCTION) for _ in range(threads)]
    try:
        return _rounds(floor, service, rounds=rounds, warmup=warmup, duration=duration)
    finally:
        for client in (*floor, *service):
            client.close()
