"""Errors of the AWS-facing APIs: one class per modeled shape, rendered in one place.

botocore picks the exception class from the `x-amzn-ErrorType` header and the message from the
body's `message` (or `Message`), so every error carries the exact shape name and member casing of
the Lambda service model.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LambdaServiceError(Exception):
    """An error answered by the service itself (as opposed to a function's own failure)."""

    status: ClassVar[int] = 400
    fault: ClassVar[str] = "User"  # "User" for client faults, "Service" for ours
    message_key: ClassVar[str] = "message"  # the member's casing in the service model

    def __init__(self, message: str, **members: Any) -> None:
        super().__init__(message)
        self.message = message
        self.members = members

    @property
    def code(self) -> str:
        return type(self).__name__

    def body(self) -> dict[str, Any]:
        return {"Type": self.fault, self.message_key: self.message, **self.members}

    def headers(self) -> dict[str, str]:
        return {"x-amzn-ErrorType": self.code}


class ResourceNotFoundException(LambdaServiceError):
    status = 404
    message_key = "Message"


class InvalidRequestContentException(LambdaServiceError):
    status = 400


class InvalidParameterValueException(LambdaServiceError):
    status = 400


class ValidationException(LambdaServiceError):
    """Not in the Lambda model; AWS still answers it for malformed names (botocore raises ClientError)."""

    status = 400


class RequestTooLargeException(LambdaServiceError):
    status = 413


class TooManyRequestsException(LambdaServiceError):
    status = 429

    def __init__(self, message: str, *, reason: str, retry_after: int | None = None) -> None:
        super().__init__(message, Reason=reason)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class CodeStorageExceededException(LambdaServiceError):
    """Lambda: the account's code storage is used up. Here: no space left under SANDBOX_DATA_DIR."""

    status = 400


class InvalidRuntimeException(LambdaServiceError):
    status = 502
    fault = "Service"
    message_key = "Message"


class ServiceException(LambdaServiceError):
    status = 500
    fault = "Service"
    message_key = "Message"


class UnknownOperationException(LambdaServiceError):
    status = 404


class MethodNotAllowedException(LambdaServiceError):
    status = 405


class ResourceConflictException(LambdaServiceError):
    status = 409


class PreconditionFailedException(LambdaServiceError):
    status = 412


class ResourceNotReadyException(LambdaServiceError):
    status = 502
    fault = "Service"
