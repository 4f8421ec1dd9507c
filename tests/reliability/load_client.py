"""A small, fast Invoke API load generator: raw HTTP/1.1 over asyncio, keep-alive connections, one per worker.

httpx and boto3 spend far more CPU per request than the service does; on a 2-CPU machine they, not the service,
would set the pace. Here a worker writes one pre-rendered request and reads the answer with the least parsing
that still checks it: the status line, Content-Length, Connection and X-Amz-Function-Error, then exactly the
body. Every request carries a unique id in its payload; every answer must carry its own request's id, once.

`run_load` also samples the service process every `sample_every` answers (RSS from /proc/PID/status, open
descriptors from /proc/PID/fd, plus whatever `extra` returns), so a test can check they stay flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Sample:
    done: int  # answers received when it was taken
    seconds: float  # since the start
    rss_kb: int
    fds: int
    extra: Any = None


@dataclass
class LoadResult:
    sent: int = 0
    abandoned: int = 0  # requests whose caller went away at once (`abandon_every`)
    received: int = 0
    lost: int = 0  # requests sent that got no answer (connection closed, timed out)
    duplicated: int = 0  # answers carrying an id already answered
    mismatched: int = 0  # answers carrying another request's id (or none)
    not_ok: list[str] = field(default_factory=list)  # first few answers that were not a clean 200
    not_ok_count: int = 0
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0


def process_usage(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open file descriptors) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _request(host: str, port: int, function: str, payload: bytes) -> bytes:
    return (
        f"POST /2015-03-31/functions/{function}/invocations HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


async def run_load(
    host: str,
    port: int,
    functions: Sequence[str],
    *,
    total: int,
    concurrency: int,
    pid: int,
    sample_every: int = 10_000,
    extra: Callable[[], Awaitable[Any]] | None = None,
    answer_timeout: float = 60.0,
    abandon_every: int = 0,
) -> LoadResult:
    """Send `total` invokes, request i to functions[i % len(functions)], from `concurrency` workers. With
    `abandon_every` = n, every n-th request's connection is closed right after it is sent (not counted as sent)."""
    result = LoadResult()
    answered: set[int] = set()
    counter = iter(range(total))
    started = time.perf_counter()
    next_sample = sample_every

    async def sample() -> None:
        done, seconds = result.received, time.perf_counter() - started
        rss, fds = process_usage(pid)
        result.samples.append(Sample(done, seconds, rss, fds, await extra() if extra else None))

    def not_ok(what: str) -> None:
        result.not_ok_count += 1
        if len(result.not_ok) < 10:
            result.not_ok.append(what)

    async def worker() -> None:
        nonlocal next_sample
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        for i in counter:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            function = functions[i % len(functions)]
            writer.write(_request(host, port, function, b'{"id":%d,"fn":"%s"}' % (i, function.encode())))
            if abandon_every and i % abandon_every == 0:  # a caller that goes away before its answer
                await writer.drain()
                writer.close()
                reader = writer = None
                result.abandoned += 1
                continue
            result.sent += 1
            try:
                status, headers, body = await asyncio.wait_for(_read_response(reader), answer_timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                result.lost += 1
                not_ok(f"request {i}: no answer ({exc!r})")
                writer.close()
                reader = writer = None
                continue
            result.received += 1
            try:
                got = orjson.loads(body).get("id")
            except (orjson.JSONDecodeError, AttributeError):
                got = None
            if got in answered:  # an answer again, read as this request's
                result.duplicated += 1
                not_ok(f"request {i}: an earlier request's answer again: {body[:200]!r}")
            elif got != i:
                result.mismatched += 1
                not_ok(f"request {i}: answer carries id {got!r}: {body[:200]!r}")
            else:
                answered.add(got)
            if status != 200 or b"x-amz-function-error" in headers:
                not_ok(f"request {i}: status {status} {headers.get(b'x-amz-function-error')!r} {body[:200]!r}")
            if headers.get(b"connection", b"").lower() == b"close":
                writer.close()
                reader = writer = None
            if result.received >= next_sample:
                next_sample += sample_every
                await sample()
        if writer is not None:
            assert reader is not None
            with contextlib.suppress(TimeoutError):  # nothing may follow the last answer
                stray = await asyncio.wait_for(reader.read(65536), 0.2)
                if stray:
                    result.duplicated += 1
                    not_ok(f"bytes after the last answer: {stray[:200]!r}")
            writer.close()

    await sample()  # before the first invoke
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def get_json(host: str, port: int, path: str) -> Any:
    """GET a JSON document from the service (e.g. /health) on a connection of its own."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        status, _, body = await _read_response(reader)
        assert status == 200, (status, body)
        return orjson.loads(body)
    finally:
        writer.close()
