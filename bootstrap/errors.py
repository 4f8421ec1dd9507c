"""The errors a function can see, and how any failure becomes a Runtime API error payload.

A payload is `{"errorMessage", "errorType", "requestId", "stackTrace"}` in that key order; the
request id is "" for init errors. Exceptions raised by the function are named after their class and
carry the stack below the bootstrap's own frames; runtime faults carry a `Runtime.*` type.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class FaultError(Exception):
    """A failure reported under a `Runtime.*` type instead of the exception's class name."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace

    def payload(self, request_id: str = "") -> dict[str, Any]:
        return make_error(self.message, self.error_type, self.stack_trace, request_id)


def make_error(
    message: str | None, error_type: str | None, stack_trace: list[str] | None, request_id: str = ""
) -> dict[str, Any]:
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id,
        "stackTrace": stack_trace or [],
    }


def error_from_exception(exc: BaseException, request_id: str = "") -> dict[str, Any]:
    """The payload for an exception the function raised (at import or during an invocation)."""
    return make_error(_message_of(exc), type(exc).__name__, user_stack_trace(exc), request_id)


def user_stack_trace(exc: BaseException) -> list[str]:
    """`traceback.format_list` of the exception's frames, without the bootstrap's own leading frames.

    Frames become plain (file, line, function, text) tuples first, so Python 3.11+ adds no `^^^`
    position markers. When every frame is the bootstrap's, all of them are kept.
    """
    # Imported at the first error, not at start: traceback brings linecache, tokenize and textwrap, about
    # 0.4 MB of every idle environment's private memory and 3 ms of its start (docs/performance.md).
    import traceback

    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)]
    first_user = 0
    while first_user < len(frames) and os.path.dirname(frames[first_user][0]) == _PACKAGE_DIR:
        first_user += 1
    if first_user < len(frames):
        frames = frames[first_user:]
    return traceback.format_list(frames)  # type: ignore[arg-type]


def _message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not take the runtime down
        return f"<unprintable {type(exc).__name__} object>"
