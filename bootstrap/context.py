"""The `context` object a handler receives, shaped like awslambdaric's LambdaContext."""

from __future__ import annotations

import json
import os
import sys
import time

from .errors import LAMBDA_CONTEXT_UNMARSHAL_ERROR, FaultError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class CognitoIdentity:
    _FIELDS = ("cognito_identity_id", "cognito_identity_pool_id")
    __slots__ = _FIELDS

    def __init__(self, cognito_identity_id: str | None = None, cognito_identity_pool_id: str | None = None):
        self.cognito_identity_id = cognito_identity_id
        self.cognito_identity_pool_id = cognito_identity_pool_id

    def __repr__(self) -> str:
        return _describe(self, self._FIELDS)


class Client:
    _FIELDS = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")
    __slots__ = _FIELDS

    def __init__(self, fields: dict[str, Any]) -> None:
        for name in self._FIELDS:
            setattr(self, name, fields.get(name))

    def __repr__(self) -> str:
        return _describe(self, self._FIELDS)


class ClientContext:
    _FIELDS = ("custom", "env", "client")
    __slots__ = _FIELDS

    def __init__(self, fields: dict[str, Any]) -> None:
        self.custom: Any = fields.get("custom")
        self.env: Any = fields.get("env")
        client = fields.get("client")
        self.client: Client | None = Client(client) if isinstance(client, dict) else None

    def __repr__(self) -> str:
        return _describe(self, self._FIELDS)


class LambdaContext:
    """Per-invocation facts; the function's own settings are read from the environment Lambda sets."""

    def __init__(
        self,
        invoke_id: str,
        client_context: dict[str, Any] | None,
        cognito_identity: dict[str, Any] | None,
        epoch_deadline_time_in_ms: int,
        invoked_function_arn: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        environ = os.environ
        self.aws_request_id = invoke_id
        self.log_group_name = environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")  # a string, as in Lambda
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self.client_context = ClientContext(client_context) if client_context is not None else None
        identity = cognito_identity or {}
        self.identity = CognitoIdentity(identity.get("cognitoIdentityId"), identity.get("cognitoIdentityPoolId"))
        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._epoch_deadline_time_in_ms - int(time.time() * 1000))

    def log(self, msg: object) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        fields = (
            "aws_request_id",
            "log_group_name",
            "log_stream_name",
            "function_name",
            "memory_limit_in_mb",
            "function_version",
            "invoked_function_arn",
            "client_context",
            "identity",
            "tenant_id",
        )
        return _describe(self, fields)


def make_context(
    request_id: str,
    deadline_ms: str | None,
    invoked_function_arn: str | None,
    client_context: str | None,
    cognito_identity: str | None,
    tenant_id: str | None,
) -> LambdaContext:
    """A LambdaContext from the raw `/next` header values (absent headers are None)."""
    return LambdaContext(
        request_id,
        _parse_json_object(client_context, "Client Context"),
        _parse_json_object(cognito_identity, "Cognito Identity"),
        _parse_deadline(deadline_ms),
        invoked_function_arn or "",
        tenant_id,
    )


def _parse_json_object(header: str | None, name: str) -> dict[str, Any] | None:
    if not header:
        return None
    try:
        value = json.loads(header)
    except Exception as exc:
        raise FaultError(LAMBDA_CONTEXT_UNMARSHAL_ERROR, f"Unable to parse {name} JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FaultError(LAMBDA_CONTEXT_UNMARSHAL_ERROR, f"Unable to parse {name} JSON: not a JSON object")
    return value


def _parse_deadline(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def _describe(obj: object, fields: tuple[str, ...]) -> str:
    inner = ",".join(f"{name}={getattr(obj, name)}" for name in fields)
    return f"{type(obj).__name__}([{inner}])"
