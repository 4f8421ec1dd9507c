"""structlog set-up: JSON lines by default, readable console output on a terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

import structlog

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
    # Libraries that use stdlib logging (uvicorn) follow the same level, on the same stream.
    logging.basicConfig(level=_LEVELS.get(level.lower(), logging.INFO), stream=stream, format="%(message)s")


class _SafePrintLogger(structlog.PrintLogger):
    """A log stream that has gone away (a closed pipe) must not break what is being logged about."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
