"""The error every Runtime API handler raises for an answer other than success (rendered by `runtime`)."""

from __future__ import annotations


class RuntimeAPIError(Exception):
    """An answer of the Runtime, Extensions or Telemetry API other than success."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message
