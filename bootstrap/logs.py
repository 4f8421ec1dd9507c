"""What the function's output looks like: stdio set-up, the root logger's handler, error records.

- stdout/stderr are made unbuffered, so output reaches the pipe as it is written.
- The root logger gets one handler writing to the current `sys.stdout`, in Text format
  (`[LEVEL]\\t<UTC time>.<ms>Z\\t<request id>\\t<message>\\n`) or, with AWS_LAMBDA_LOG_FORMAT=JSON,
  one JSON object per line. AWS_LAMBDA_LOG_LEVEL sets the root level (TRACE means DEBUG).
- An error reported to the Runtime API is also written to stdout: one `\\r`-joined record in Text
  mode, one JSON object with `log_level` in JSON mode.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import traceback

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .marshalling import JsonCodec

UNHANDLED_EXCEPTION_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, "
    "or can be applied automatically. To determine if the runtime has been updated, check the runtime "
    "version in the INIT_START log entry. If this error correlates with a change in the runtime version, "
    "you may be able to mitigate this error by temporarily rolling back to the previous runtime version. "
    "For more information, see https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html"
)

TEXT_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
TEXT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
JSON_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NO_BREAK_SPACE = "\u00a0"
# LogRecord attributes (and ours) that are not copied into a JSON record as `extra` fields.
_RECORD_FIELDS = frozenset(
    (
        "name",
        "msg",
        "args",
        "levelname",
        "levelno",
        "pathname",
        "filename",
        "module",
        "exc_info",
        "exc_text",
        "stack_info",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "processName",
        "process",
        "taskName",
        "message",
        "asctime",
        "aws_request_id",
        "tenant_id",
    )
)


class _Invocation:
    """The invocation in progress, as seen by log records (from any thread)."""

    request_id = ""
    tenant_id: str | None = None


def set_invocation(request_id: str, tenant_id: str | None) -> None:
    _Invocation.request_id = request_id
    _Invocation.tenant_id = tenant_id


def log_level_from_env(value: str | None) -> str:
    """The root logger level named by AWS_LAMBDA_LOG_LEVEL, or "" to leave Python's default."""
    name = (value or "").upper()
    if name == "TRACE":
        name = "DEBUG"
    return name if isinstance(logging.getLevelName(name), int) else ""


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _Invocation.request_id
        record.tenant_id = _Invocation.tenant_id
        return True


class StdoutHandler(logging.Handler):
    """Writes each formatted record to whatever `sys.stdout` is at that moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._encode = json.JSONEncoder(ensure_ascii=False, default=str).encode

    def format(self, record: logging.LogRecord) -> str:
        level = min(50, max(0, record.levelno)) // 10 * 10
        exc = record.exc_info if record.exc_info and record.exc_info[0] is not None else None
        result: dict[str, Any] = {
            "timestamp": time.strftime(JSON_DATE_FORMAT, time.gmtime(record.created)),
            "level": logging.getLevelName(level),
            "message": record.getMessage(),
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc[2]) if exc else None,
            "errorType": exc[0].__name__ if exc else None,
            "errorMessage": str(exc[1]) if exc else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": f"{record.pathname}:{record.funcName}:{record.lineno}" if exc else None,
        }
        tenant_id = getattr(record, "tenant_id", None)
        if tenant_id is not None:
            result["tenantId"] = tenant_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in result:
                result[key] = value
        return self._encode({key: value for key, value in result.items() if value is not None}) + "\n"


def setup_logging(json_format: bool, level: str) -> logging.Handler:
    """Install the handler on the root logger (so `logging.basicConfig` then does nothing, as in Lambda)."""
    logging.Formatter.converter = time.gmtime
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT, TEXT_DATE_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    if level:
        root.setLevel(level)
    root.addHandler(handler)
    return handler


def format_error_text(error: dict[str, Any]) -> str:
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    stack_trace = error.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for entry in stack_trace:
            if entry == "":
                lines.append("")
            else:
                lines.extend(_indent_with_no_break_spaces(line) for line in entry.splitlines())
    return "\r".join(lines) + "\n"


def format_error_json(error: dict[str, Any], codec: JsonCodec) -> str:
    record = {"timestamp": time.strftime(JSON_DATE_FORMAT, time.gmtime()), "log_level": "ERROR", **error}
    return codec.dumps(record) + "\n"


def write_error(error: dict[str, Any], json_format: bool, codec: JsonCodec) -> None:
    sys.stdout.write(format_error_json(error, codec) if json_format else format_error_text(error))


def unbuffer_stdio() -> None:
    """Replace sys.stdout/sys.stderr with write-through streams on the same fds (what `python -u` does)."""
    sys.stdout = _unbuffered(sys.stdout)
    sys.stderr = _unbuffered(sys.stderr)


def flush_stdio() -> None:
    """Push everything the function printed into the pipes (before its result is posted)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _unbuffered(stream: Any) -> Any:
    try:
        stream.flush()
        raw = io.FileIO(stream.fileno(), "w", closefd=False)
        encoding, errors = stream.encoding, stream.errors
    except (AttributeError, OSError, ValueError):
        return stream
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="\n", write_through=True)


def _indent_with_no_break_spaces(line: str) -> str:
    stripped = line.lstrip(" ")
    return _NO_BREAK_SPACE * (len(line) - len(stripped)) + stripped
