"""Errors of the agent sessions API: one class per error code, defined once.

The service raises them and renders them (`session_routes`) as
`{"success": false, "error": {"code": ..., "message": ..., "details"?: {...}}}` with the class's HTTP
status; the SDK (`sdk`) raises the same classes from such an answer, so `except SessionNotFoundError`
reads the same on both sides. Dependency-free: the SDK imports this module on machines that do not
run the service.

Each class is also the builtin exception a Python caller would expect: an unknown or expired session
is a KeyError, refused input (a path, code, a request field) a ValueError, a missing file a
FileNotFoundError. Their `str()` is the message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SessionError(Exception):
    """An error answered by the sessions API. `code` is the stable name to test for."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if status is not None:
            self.status = status  # type: ignore[misc]  # an instance may answer with another status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"success": False, "error": error}

    def __str__(self) -> str:
        return self.message  # not KeyError's quoted repr

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class SessionNotFoundError(SessionError, KeyError):
    """No session has this id (never created, or closed)."""

    code = "SESSION_NOT_FOUND"
    status = 404


class SessionExpiredError(SessionError, KeyError):
    """The session existed but was closed for being idle too long (or its sandbox ended)."""

    code = "SESSION_EXPIRED"
    status = 410


class ExecutionTimeoutError(SessionError):
    """The execution ran past its timeout and was killed; `details` has its output so far. The session
    itself is still usable. (The Python API reports this as `ExecutionResult.timed_out`; the HTTP API
    and the SDK as this error.)"""

    code = "EXECUTION_TIMEOUT"
    status = 408


class ResourceLimitError(SessionError):
    """A limit was reached: the execution's memory or process limit (400, `details` has its output),
    the number of live sessions (429), or a file's size (413)."""

    code = "RESOURCE_LIMIT"
    status = 400


class InvalidCodeError(SessionError, ValueError):
    """The code cannot run: empty, or a syntax error (`details` has the message and the traceback)."""

    code = "INVALID_CODE"
    status = 400


class SessionFileNotFoundError(SessionError, FileNotFoundError):
    """No regular file at that path in the session's workspace."""

    code = "FILE_NOT_FOUND"
    status = 404


class InvalidPathError(SessionError, ValueError):
    """A path outside the workspace (`..`, an absolute path other than /workspace/...), through a
    symbolic link, or naming something that is not a regular file or folder."""

    code = "INVALID_PATH"
    status = 400


class InvalidRequestError(SessionError, ValueError):
    """A malformed request: not JSON, a missing or ill-typed field, an invalid session id."""

    code = "INVALID_REQUEST"
    status = 400


class SessionExistsError(SessionError):
    """A live session already has this id."""

    code = "SESSION_EXISTS"
    status = 409


class InternalError(SessionError):
    """Something failed on the service's side (see its log), e.g. a sandbox that would not start."""

    code = "INTERNAL_ERROR"
    status = 500


ERRORS: dict[str, type[SessionError]] = {
    cls.code: cls
    for cls in (
        SessionNotFoundError,
        SessionExpiredError,
        ExecutionTimeoutError,
        ResourceLimitError,
        InvalidCodeError,
        SessionFileNotFoundError,
        InvalidPathError,
        InvalidRequestError,
        SessionExistsError,
        InternalError,
    )
}


def error_from_body(status: int, body: Any) -> SessionError:
    """The exception an error answer stands for (an unknown code gives the base class)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return SessionError(f"HTTP {status}: {str(body)[:500]}", status=status)
    cls = ERRORS.get(str(error.get("code")), SessionError)
    details = error.get("details") if isinstance(error.get("details"), dict) else None
    exc = cls(str(error.get("message", "")), details=details, status=status)
    if cls is SessionError:
        exc.code = str(error.get("code"))  # type: ignore[misc]
    return exc
