"""structlog set-up: JSON lines by default, readable console output on a terminal; and the request
id every log line of a request carries.

The request id is a structlog context variable: `bind_request_id` sets it where an id is made (the
HTTP app's RequestIdMiddleware, the Invoke fast path, an Event attempt), and every event logged in
that task, or in a task it starts, has `request_id`. What outlives the request that starts it (an
environment, a session, a background service) runs in an `unbound` context instead, so it does not
tag later, unrelated lines with that request's id; lines about an invocation it serves (START, END,
REPORT, the function's output) name their request id explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

_T = TypeVar("_T")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty()) if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=lambda *args: _SafePrintLogger(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (uvicorn, asyncio, the Docker backend) follow the same level, on the
    # same stream, rendered the same way: with `logger`, and `request_id` when a request's is bound.
    handler = _SafeStreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))


class _SafeStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def handleError(self, record: logging.LogRecord) -> None:
        pass  # as `_SafePrintLogger`: a stream gone away breaks nothing


class _SafePrintLogger(structlog.PrintLogger):
    """A log stream that has gone away (a closed pipe) must not break what is being logged about."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def _request_id_var() -> contextvars.ContextVar[Any]:
    """structlog's own context variable for `request_id` (what `bind_contextvars(request_id=...)` sets),
    taken once, so binding it costs one `ContextVar.set`."""
    token = structlog.contextvars.bind_contextvars(request_id=None)["request_id"]
    token.var.reset(token)
    return token.var


_REQUEST_ID = _request_id_var()


def bind_request_id(request_id: str) -> None:
    """Every event logged from here on in this task (and in tasks it starts) carries `request_id`."""
    _REQUEST_ID.set(request_id)


def unbound() -> contextvars.Context:
    """A copy of the current context without the fields bound for logging (the request id)."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.clear_contextvars)
    return context


def detached(work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """Run `work` as a task of its own in an `unbound` context: for what outlives the request that
    starts it."""
    return asyncio.get_running_loop().create_task(work, context=unbound())
