"""The status page: GET / (one static page, `static/status.*`, no build step) and the JSON it polls.

    GET /status/functions            every function version: configuration, state, environments by state
    GET /status/sessions             live agent sessions: a digest of the id, idle or busy, age
    GET /status/invocations?limit=   the last invocations, newest first (`recent`)
    GET /status/logs?after=&limit=   log lines after a cursor, oldest first (`recent`)

The page shows nothing /health does not already show but function output and START/END/REPORT lines (in
the service log too) and what ListFunctions answers anyway (runtime, memory, timeout). A session's id is
what lets a caller run code in it, so only a digest of it is shown. The page's script puts every value in
the page as text (never as markup), and its Content-Security-Policy allows no script but its own.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import ValidationException
from .functions import FunctionSpec

if TYPE_CHECKING:
    from .service import Service

STATIC = Path(__file__).resolve().parent / "static"
MAX_LIMIT = 1000  # `limit` at most, for invocations and log lines
MAX_CURSOR = 2**63 - 1
INVOCATIONS_LIMIT = 50  # without `limit`
LINES_LIMIT = 200
ID_DIGEST_CHARS = 16

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII digits only (int() takes "+1", " 1", "1_0" and other scripts' digits)


@functools.cache
def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _file(name: str, media_type: str) -> Any:
    async def serve(request: Request) -> Response:
        return Response(_static(name), media_type=media_type, headers=_PAGE_HEADERS)

    return serve


def _json(content: dict[str, Any]) -> Response:
    return JSONResponse(content, headers=_JSON_HEADERS)


def _integer(request: Request, name: str, low: int, high: int) -> int | None:
    """The query parameter `name`, a whole number from `low` to `high`; None when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ValidationException(f"{name} must be a whole number from {low} to {high}, got {shown!r}")
    return value


async def functions(request: Request) -> Response:
    service: Service = request.app.state.service
    return _json(
        {
            "functions": [_function(service, spec) for spec in service.registry.all_specs()],
            "environments": {"live": service.capacity.live, "limit": service.capacity.limit},
        }
    )


def _function(service: Service, spec: FunctionSpec) -> dict[str, Any]:
    key = spec.key
    pool = service.pools.get(key)
    reason = service.unavailable.get(key)
    if (pending := service.pending.get(key)) is not None:
        state = pending
    elif reason is not None:
        state = "Failed"
    else:
        state = "Active" if pool is not None else "Inactive"
    described: dict[str, Any] = pool.describe() if pool is not None else {}
    return {
        "name": spec.name,
        "version": spec.version,
        "runtime": spec.runtime,
        "package_type": spec.package_type,
        "memory_size": spec.memory_size,
        "timeout": spec.timeout,
        "state": state,
        "state_reason": reason,
        "environments": described.get("environments", {}),
        "queued": described.get("queued", 0),
        "concurrency_limit": described.get("concurrency_limit"),
        "cold_starts": described.get("cold_starts", 0),
    }


async def sessions(request: Request) -> Response:
    service: Service = request.app.state.service
    manager = service.sessions
    described = manager.describe()
    now, clock = time.time(), time.monotonic()
    return _json(
        {
            "available": described["available"],
            "problem": described["problem"],
            "limit": described["limit"],
            "sessions": [
                {
                    "id_sha256": hashlib.sha256(session_id.encode()).hexdigest()[:ID_DIGEST_CHARS],
                    "state": "busy" if session.busy else "idle",
                    "age_seconds": round(now - session.created_at, 1),
                    "idle_seconds": round(clock - session.last_activity, 1),
                    "executions": session.executions,
                }
                for session_id, session in manager.live()
            ],
        }
    )


async def invocations(request: Request) -> Response:
    service: Service = request.app.state.service
    limit = _integer(request, "limit", 1, MAX_LIMIT)
    recent = service.recent
    return _json(
        {
            "invocations": recent.invocations(INVOCATIONS_LIMIT if limit is None else limit),
            "recorded": recent.recorded,
            "capacity": recent.invocation_capacity,
        }
    )


async def logs(request: Request) -> Response:
    service: Service = request.app.state.service
    after = _integer(request, "after", 0, MAX_CURSOR)
    limit = _integer(request, "limit", 1, MAX_LIMIT)
    recent = service.recent
    lines = recent.lines(after, LINES_LIMIT if limit is None else limit)
    return _json({**lines, "capacity": recent.line_capacity})


def routes() -> list[Route]:
    return [
        Route("/", _file("status.html", "text/html; charset=utf-8"), methods=["GET"]),
        Route("/status/page.js", _file("status.js", "text/javascript; charset=utf-8"), methods=["GET"]),
        Route("/status/page.css", _file("status.css", "text/css; charset=utf-8"), methods=["GET"]),
        Route("/status/functions", functions, methods=["GET"]),
        Route("/status/sessions", sessions, methods=["GET"]),
        Route("/status/invocations", invocations, methods=["GET"]),
        Route("/status/logs", logs, methods=["GET"]),
    ]
