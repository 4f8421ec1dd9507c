"""Warm invoke latency: sequential invokes on one keep-alive connection, floor and service alternating."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from .clients import Boto3Invoker, RawClient
from .procs import FUNCTION
from .stats import percentile, summary_ms


def alternate(floor: Callable[[], float], service: Callable[[], float], warmup: int, samples: int) -> dict[str, Any]:
    for _ in range(warmup):
        floor()
        service()
    floor_s: list[float] = []
    service_s: list[float] = []
    gc.collect()
    gc.disable()  # the client's own collections would land on whichever side happens to be running
    try:
        for i in range(samples):
            # Alternate which goes first, so neither side always follows the other.
            if i % 2:
                floor_s.append(floor())
                service_s.append(service())
            else:
                service_s.append(service())
                floor_s.append(floor())
    finally:
        gc.enable()
    # The p50 ratio within each fifth of the run: how much the machine's noise moves it.
    blocks = 5
    size = max(1, samples // blocks)
    block_ratios = [
        percentile(service_s[i : i + size], 50) / percentile(floor_s[i : i + size], 50)
        for i in range(0, size * blocks, size)
        if service_s[i : i + size]
    ]
    return {"floor": summary_ms(floor_s), "service": summary_ms(service_s), "p50_ratio_by_block": block_ratios}


def measure_raw(floor_port: int, service_port: int, *, warmup: int, samples: int) -> dict[str, Any]:
    floor, service = RawClient(floor_port, FUNCTION), RawClient(service_port, FUNCTION)
    try:
        return alternate(floor.timed, service.timed, warmup, samples)
    finally:
        floor.close()
        service.close()


def measure_boto3(floor_url: str, service_url: str, *, warmup: int, samples: int) -> dict[str, Any]:
    floor, service = Boto3Invoker(floor_url, FUNCTION), Boto3Invoker(service_url, FUNCTION)
    try:
        return alternate(floor.timed, service.timed, warmup, samples)
    finally:
        floor.close()
        service.close()
