"""The root logger's handler, in Text or JSON format (see `logs`).

Imported only once `logging` is: by `logs.setup_logging` at once if something imported `logging`
already, otherwise on the function's first `import logging`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback

from .logs import JSON_DATE_FORMAT, TEXT_DATE_FORMAT, TEXT_FORMAT, _Invocation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


def install(json_format: bool, level: str) -> logging.Handler:
    """Add the handler to the root logger (so `logging.basicConfig` then does nothing, as in Lambda)."""
    logging.Formatter.converter = time.gmtime
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT, TEXT_DATE_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    if level:
        root.setLevel(level)
    root.addHandler(handler)
    return handler
