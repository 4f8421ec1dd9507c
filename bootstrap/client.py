"""HTTP to the Runtime API (2018-06-01) over one keep-alive connection, reused for every call.

`/next` is a long poll, so no call has a timeout. A call that fails because the connection dropped
is retried once on a fresh connection; any other failure, or a refusal (non-2xx), raises
RuntimeClientError, after which the runtime must exit.
"""

from __future__ import annotations

import http.client
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from email.message import Message

_RUNTIME = "/2018-06-01/runtime"
_NEXT = _RUNTIME + "/invocation/next"
_INIT_ERROR = _RUNTIME + "/init/error"
_ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
_poll, _POLLIN = select.poll, select.POLLIN  # bound now: gevent and the like replace select.poll


class RuntimeClientError(Exception):
    """The Runtime API refused a call or could not be reached."""


class Invocation:
    """One event from `/next`: its body and the header values (None when a header is absent)."""

    __slots__ = (
        "body",
        "client_context",
        "cognito_identity",
        "content_type",
        "deadline_ms",
        "invoked_function_arn",
        "request_id",
        "tenant_id",
        "trace_id",
    )

    def __init__(self, headers: Message, body: bytes) -> None:
        # One pass over the headers; with a repeated header the first one wins, as with Message.get.
        values = {name.lower(): value for name, value in reversed(headers.items())}
        get = values.get
        self.request_id: str = get("lambda-runtime-aws-request-id") or ""
        self.deadline_ms: str | None = get("lambda-runtime-deadline-ms")
        self.invoked_function_arn: str | None = get("lambda-runtime-invoked-function-arn")
        self.trace_id: str | None = get("lambda-runtime-trace-id")
        self.client_context: str | None = get("lambda-runtime-client-context")
        self.cognito_identity: str | None = get("lambda-runtime-cognito-identity")
        self.tenant_id: str | None = get("lambda-runtime-aws-tenant-id")
        self.content_type: str | None = get("content-type")
        self.body = body


def _private_copy(cls: type, **overrides: object) -> type:
    """A subclass carrying its own references to every method of `cls`.

    APM and tracing libraries (X-Ray, Datadog, Sentry, ...) patch `http.client` classes once the
    function imports them; the Runtime API traffic must not show up in their traces or logs.
    """
    namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    namespace.update(overrides)
    return type(cls)(f"_Runtime{cls.__name__}", (cls,), namespace)


try:
    _Response = _private_copy(http.client.HTTPResponse)
    _Connection = _private_copy(http.client.HTTPConnection, response_class=_Response)
except Exception:  # an interpreter whose class namespaces cannot be copied: do without the isolation
    _Connection = http.client.HTTPConnection


class RuntimeClient:
    def __init__(self, address: str, user_agent: str) -> None:
        self.address = address
        try:
            # timeout=None, not the default: the function may call socket.setdefaulttimeout().
            self._conn: http.client.HTTPConnection = _Connection(address, timeout=None)
        except http.client.InvalidURL as exc:
            raise RuntimeClientError(f"Invalid AWS_LAMBDA_RUNTIME_API {address!r}: {exc}") from None
        self._headers = {"User-Agent": user_agent}

    def next_invocation(self) -> Invocation:
        status, body, headers = self._call("GET", _NEXT, None, self._headers)
        if status != 200:
            raise _refused("Failed to get next invocation", status, body)
        invocation = Invocation(headers, body)
        if not invocation.request_id:
            raise RuntimeClientError("Failed to get next invocation: no Lambda-Runtime-Aws-Request-Id header")
        return invocation

    def post_response(self, request_id: str, body: bytes, content_type: str) -> None:
        path = f"{_RUNTIME}/invocation/{request_id}/response"
        status, answer, _ = self._call("POST", path, body, {**self._headers, "Content-Type": content_type})
        if not 200 <= status < 300:
            raise _refused("Failed to post handler success response", status, answer)

    def post_error(self, request_id: str, body: bytes, error_type: str) -> None:
        path = f"{_RUNTIME}/invocation/{request_id}/error"
        status, answer, _ = self._call("POST", path, body, self._error_headers(error_type))
        if not 200 <= status < 300:
            raise _refused("Failed to post handler error response", status, answer)

    def post_init_error(self, body: bytes, error_type: str) -> None:
        status, answer, _ = self._call("POST", _INIT_ERROR, body, self._error_headers(error_type))
        if not 200 <= status < 300:
            raise _refused("Failed to post initialization error", status, answer)

    def close(self) -> None:
        self._conn.close()

    def _error_headers(self, error_type: str) -> dict[str, str]:
        # Header values must be latin-1; a class name may not be.
        safe_type = error_type.encode("ascii", "backslashreplace").decode("ascii")
        return {**self._headers, "Content-Type": "application/json", _ERROR_TYPE: safe_type}

    def _call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, Message]:
        for attempt in (1, 2):
            conn = self._live_connection()
            try:
                conn.request(method, path, body, headers)
                response = conn.getresponse()
                return response.status, response.read(), response.msg
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if attempt == 2:
                    raise RuntimeClientError(f"{method} {path} failed: {exc!r}") from None
        raise AssertionError("unreachable")

    def _live_connection(self) -> http.client.HTTPConnection:
        """The connection, closed first if the server hung up while it sat idle (keep-alive timeout)."""
        conn = self._conn
        sock = conn.sock
        if sock is not None:
            poller = _poll()
            poller.register(sock, _POLLIN)
            if poller.poll(0):  # idle, yet readable: end of stream (or junk); reconnect either way
                conn.close()
        return conn


def user_agent() -> str:
    version = sys.version_info
    return f"sandbox-runtime-bootstrap/{version[0]}.{version[1]}.{version[2]}"


def _refused(what: str, status: int, body: bytes) -> RuntimeClientError:
    text = body.decode("utf-8", "replace").strip()
    return RuntimeClientError(f"{what}. Http response code: {status}. Response body: {text[:1000]}")
