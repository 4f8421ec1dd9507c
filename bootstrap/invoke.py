"""One invocation: context, event, the handler's call, and its result or error posted back."""

from __future__ import annotations

from .context import make_context
from .environ import set_variable
from .errors import FaultError, error_from_exception
from .logs import flush_stdio, set_invocation, write_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .client import Invocation, RuntimeClient
    from .handler import Handler
    from .marshalling import JsonCodec


def handle_invocation(
    invocation: Invocation, handler: Handler, client: RuntimeClient, codec: JsonCodec, json_logs: bool
) -> None:
    request_id = invocation.request_id
    set_invocation(request_id, invocation.tenant_id)
    _set_trace_id(invocation.trace_id)
    error: dict[str, Any] | None = None
    try:
        context = make_context(
            request_id,
            invocation.deadline_ms,
            invocation.invoked_function_arn,
            invocation.client_context,
            invocation.cognito_identity,
            invocation.tenant_id,
        )
        event = codec.unmarshal_event(invocation.body, invocation.content_type)
        result = handler.function(event, context) if handler.takes_context else handler.function(event)
        body, content_type = codec.marshal_response(result)
    except FaultError as fault:
        error = fault.payload(request_id)
    except Exception as exc:
        error = error_from_exception(exc, request_id)
    if error is None:
        flush_stdio()  # the service attributes output to this invocation when the result arrives
        client.post_response(request_id, body, content_type)
    else:
        write_error(error, json_logs, codec)
        flush_stdio()
        client.post_error(request_id, codec.encode_error(error), error["errorType"])


def _set_trace_id(trace_id: str | None) -> None:
    set_variable("_X_AMZN_TRACE_ID", trace_id or None)  # not os.environ[...]: glibc keeps every value set
