"""HTTP/1.1 to the Runtime API (2018-06-01) over one keep-alive connection, reused for every call.

A small client on a raw socket rather than `http.client`, which imports `email` and `ssl` (about 16 ms
of a cold start), parses every response's headers with the email package, and would leave stdlib
modules such as `email` in sys.modules, shadowing the function's own modules of the same name.

- A request is one `sendall` (request line, headers, body; a body over 64 KiB follows in a second one).
- A response is read up to the blank line after its headers (64 KiB at most), then its body by
  Content-Length, by chunked transfer coding, or up to the end of the stream. `Connection: close`
  (or an HTTP/1.0 answer without keep-alive) closes the connection once the body is read.
- `/next` is a long poll, so nothing has a timeout (the socket is blocking whatever
  `socket.setdefaulttimeout()` the function sets).
- A call that fails before any byte of the response arrived (the server closed or reset an idle
  keep-alive connection, or could not be reached) is retried once on a fresh connection. Any other
  failure, a malformed response, or a refusal (non-2xx) raises RuntimeClientError, after which the
  runtime must exit.
- `/response` and `/error` with a body of up to 64 KiB are pipelined with the `/next` that always
  follows them: both requests go in one `sendall`, and `next_invocation` then reads the second
  answer (the runtime's loop is unchanged). A service may hold the `202` back and send it with the
  next event, so a warm invoke costs the runtime one `send` and one `recv`. Only when the answer
  ends the connection (or the call is refused) is the `/next` not taken for granted:
  `next_invocation` asks again.
- Before a request on a connection that sat idle for over a second, a non-blocking `MSG_PEEK`
  checks that the server has not closed it meanwhile (a server's keep-alive timeout); a connection
  used just before (the event's answer, moments ago) is used as is. Either way a connection found
  dead before any byte of the answer arrived is retried once on a fresh one.
- The service's own answers are recognised whole rather than parsed line by line: its `202`
  (`ACCEPTED`) and the head of an event without optional headers (`_SERVICE_EVENT_HEAD`, one
  regular expression). On a warm invoke that parsing was a measurable share of the runtime's time
  (docs/performance.md); any other answer, from any server, takes the general parser.
- Sockets come from `_socket`, the C module under `socket`: importing `socket.py` itself (its enums,
  `selectors`) costs about 2 ms of a cold start, and none of it is needed here. The socket class and
  `getaddrinfo` are bound at import, so what gevent and the like patch later (`socket.socket`,
  `socket.create_connection`, `socket.getaddrinfo`, `select.poll`) never carries Runtime API
  traffic, nor do the `http.client` classes that APM libraries patch, never used here.
"""

from __future__ import annotations

import _socket
import re
import sys
from time import monotonic as _monotonic

_Socket = _socket.socket
_getaddrinfo = _socket.getaddrinfo
_SOCK_STREAM = _socket.SOCK_STREAM
_IPPROTO_TCP = _socket.IPPROTO_TCP
_TCP_NODELAY = _socket.TCP_NODELAY
_PEEK_NOW = _socket.MSG_PEEK | _socket.MSG_DONTWAIT

_RUNTIME = "/2018-06-01/runtime"
_NEXT = _RUNTIME + "/invocation/next"
_INIT_ERROR = _RUNTIME + "/init/error"
_ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
_CHECK_IDLE_AFTER = 1.0  # seconds a kept-alive connection may sit unused before it is checked

MAX_HEAD = 64 * 1024  # status line and headers, including the blank line; also the chunked trailers
MAX_BODY = 1 << 30  # a sanity bound on Content-Length and chunk sizes (Lambda's payloads are MBs)
_ONE_WRITE = 64 * 1024  # bodies up to this size go in the same sendall as the headers
# The Runtime API's 202 to a /response or /error exactly as our service writes it: recognised whole
# instead of parsed (a warm invoke's one answer besides its event); any other answer is parsed.
ACCEPTED_BODY = b'{"status":"OK"}\n'
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n" + ACCEPTED_BODY
_ACCEPTED_HEADERS = {"content-type": "application/json", "content-length": "16"}
# An event's head as our service writes it when the event has no optional header (client context,
# Cognito identity, tenant): values of printable ASCII without spaces, as the general parser would
# read them. `json` imports `re` anyway, so this costs no import.
_SERVICE_EVENT_HEAD = re.compile(
    rb"HTTP/1\.1 200 OK\r\nContent-Type: application/json\r\n"
    rb"Lambda-Runtime-Aws-Request-Id: ([!-~]+)\r\n"
    rb"Lambda-Runtime-Deadline-Ms: ([0-9]+)\r\n"
    rb"Lambda-Runtime-Invoked-Function-Arn: ([!-~]*)\r\n"
    rb"Lambda-Runtime-Trace-Id: ([!-~]*)\r\n"
    rb"Content-Length: ([0-9]{1,10})\r\n\r\n"
)
_RECV = 64 * 1024
_HEX = b"0123456789abcdefABCDEF"
_NO_BODY = (204, 304)
# Header values must be printable ASCII: control characters are escaped like non-ASCII ones.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


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

    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        """`headers` maps lower-case names to values (the first one, for a repeated header)."""
        get = headers.get
        self.request_id: str = get("lambda-runtime-aws-request-id") or ""
        self.deadline_ms: str | None = get("lambda-runtime-deadline-ms")
        self.invoked_function_arn: str | None = get("lambda-runtime-invoked-function-arn")
        self.trace_id: str | None = get("lambda-runtime-trace-id")
        self.client_context: str | None = get("lambda-runtime-client-context")
        self.cognito_identity: str | None = get("lambda-runtime-cognito-identity")
        self.tenant_id: str | None = get("lambda-runtime-aws-tenant-id")
        self.content_type: str | None = get("content-type")
        self.body = body


class MalformedResponse(Exception):
    """The Runtime API's answer is not valid HTTP/1.1 (never retried)."""


class _Dropped(Exception):
    """The connection ended before any byte of the response arrived (retried once)."""


class RuntimeClient:
    def __init__(self, address: str, user_agent: str) -> None:
        self.address = address
        self._host, self._port = _parse_address(address)
        host = f"[{self._host}]" if ":" in self._host else self._host
        if self._port != 80:
            host = f"{host}:{self._port}"
        self._common = f"Host: {host}\r\nUser-Agent: {_header_value(user_agent)}\r\n"
        self._next_request = f"GET {_NEXT} HTTP/1.1\r\n{self._common}\r\n".encode("ascii")
        self._sock: _socket.socket | None = None
        self._used = 0.0  # monotonic time the connection last carried an exchange
        self._prefetched: _Reader | None = None  # a /next sent with the last /response or /error

    def next_invocation(self) -> Invocation:
        answer = self._take_prefetched()
        status, headers, body = answer if answer is not None else self._call("GET", _NEXT, None, "")
        if status != 200:
            raise _refused("Failed to get next invocation", status, body)
        invocation = Invocation(headers, body)
        if not invocation.request_id:
            raise RuntimeClientError("Failed to get next invocation: no Lambda-Runtime-Aws-Request-Id header")
        return invocation

    def post_response(self, request_id: str, body: bytes, content_type: str) -> None:
        path = f"{_RUNTIME}/invocation/{request_id}/response"
        status, _, answer = self._call("POST", path, body, f"Content-Type: {content_type}\r\n", then_next=True)
        if not 200 <= status < 300:
            raise _refused("Failed to post handler success response", status, answer)

    def post_error(self, request_id: str, body: bytes, error_type: str) -> None:
        path = f"{_RUNTIME}/invocation/{request_id}/error"
        status, _, answer = self._call("POST", path, body, _error_headers(error_type), then_next=True)
        if not 200 <= status < 300:
            raise _refused("Failed to post handler error response", status, answer)

    def post_init_error(self, body: bytes, error_type: str) -> None:
        status, _, answer = self._call("POST", _INIT_ERROR, body, _error_headers(error_type))
        if not 200 <= status < 300:
            raise _refused("Failed to post initialization error", status, answer)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._prefetched = None
        if sock is not None:
            sock.close()

    def _take_prefetched(self) -> tuple[int, dict[str, str], bytes] | None:
        """The answer to the /next sent with the last /response or /error; None when there is none, or
        when the connection ended before any byte of it arrived (the caller then asks again)."""
        reader, self._prefetched = self._prefetched, None
        if reader is None:
            return None
        try:
            if not reader.buffer:
                reader.buffer = reader.sock.recv(_RECV)
        except OSError:
            reader.buffer = b""
        if not reader.buffer:  # the connection ended before any byte of the answer: ask again
            self.close()
            return None
        try:
            status, headers, body, keep_open = reader.response()
        except (OSError, MalformedResponse) as exc:
            self.close()
            raise RuntimeClientError(f"GET {_NEXT} failed: {_describe(exc)}") from None
        self._used = _monotonic()
        if not keep_open or reader.buffer:
            self.close()
        return status, headers, body

    def _call(
        self, method: str, path: str, body: bytes | None, headers: str, *, then_next: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        """One exchange: (status, headers by lower-case name, body). With `then_next`, a `GET /next`
        follows the request in the same write; its answer is left for `next_invocation`."""
        if not (path.isascii() and path.isprintable()) or " " in path:
            raise RuntimeClientError(f"{method} {path!r} failed: the path is not printable ASCII")
        head = f"{method} {path} HTTP/1.1\r\n{self._common}"
        if body is None:
            data, rest = (head + "\r\n").encode("ascii"), None
        else:
            data = f"{head}{headers}Content-Length: {len(body)}\r\n\r\n".encode("ascii")
            if len(body) <= _ONE_WRITE:
                data, rest = data + body, None
            else:
                rest = body
        # Only small bodies: a large one may be refused (413), and a runtime that stops on a refusal
        # must not have asked for another event.
        then_next = then_next and rest is None
        if then_next:
            data += self._next_request
        if self._prefetched is not None:
            self.close()  # a /next is still unanswered on that connection: it is out of step for this call
        for attempt in (1, 2):
            try:
                return self._exchange(data, rest, then_next)
            except (OSError, _Dropped) as exc:  # nothing of the response arrived: try a fresh connection
                self.close()
                if attempt == 2:
                    raise RuntimeClientError(f"{method} {path} failed: {_describe(exc)}") from None
            except _Failed as failed:
                self.close()
                raise RuntimeClientError(f"{method} {path} failed: {_describe(failed.cause)}") from None
        raise AssertionError("unreachable")

    def _exchange(self, data: bytes, rest: bytes | None, then_next: bool) -> tuple[int, dict[str, str], bytes]:
        sock = self._sock
        if sock is not None and _monotonic() - self._used > _CHECK_IDLE_AFTER and not _idle(sock):
            self.close()
            sock = None
        if sock is None:
            sock = self._sock = self._connect()
        sock.sendall(data)
        if rest is not None:
            sock.sendall(rest)
        first = sock.recv(_RECV)
        if not first:
            raise _Dropped("the connection was closed before any response arrived")
        if first.startswith(ACCEPTED):
            reader = _Reader(sock, first[len(ACCEPTED) :])
            status, headers, body, keep_open = 202, dict(_ACCEPTED_HEADERS), ACCEPTED_BODY, True
        else:
            try:
                reader = _Reader(sock, first)
                status, headers, body, keep_open = reader.response()
            except (OSError, MalformedResponse) as exc:
                raise _Failed(exc) from None
        self._used = _monotonic()
        if then_next and keep_open and 200 <= status < 300:
            self._prefetched = reader  # what follows is the /next's answer (some of it may be here already)
        elif not keep_open or reader.buffer or then_next:  # bytes past the response: the connection is out of step
            self.close()
        return status, headers, body

    def _connect(self) -> _socket.socket:
        """A blocking TCP connection with Nagle off: `socket.create_connection((host, port), None)`."""
        error: OSError | None = None
        for family, kind, proto, _, address in _getaddrinfo(self._host, self._port, 0, _SOCK_STREAM):
            sock = _Socket(family, kind, proto)
            try:
                sock.settimeout(None)  # not the default: the function may call socket.setdefaulttimeout()
                sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return sock
        raise error or OSError(f"getaddrinfo returned no address for {self._host!r}")


class _Failed(Exception):
    """A failure once the response had started: not retried."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


class _Reader:
    """Reads one response from `sock`, starting with the bytes already received."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock: _socket.socket, received: bytes) -> None:
        self.sock = sock
        self.buffer = received

    def response(self) -> tuple[int, dict[str, str], bytes, bool]:
        """(status, headers, body, whether the connection can carry another request)."""
        event = _SERVICE_EVENT_HEAD.match(self.buffer)
        return self._parsed() if event is None else self._service_event(event)

    def _parsed(self) -> tuple[int, dict[str, str], bytes, bool]:
        version, status, headers = self._head()
        while 100 <= status < 200:  # interim responses (100 Continue and the like) have no body
            version, status, headers = self._head()
        connection = _tokens(headers.get("connection", "").lower())
        keep_open = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if status in _NO_BODY:
            body = b""
        elif encoding is not None:
            if _tokens(encoding.lower()) != ["chunked"]:
                raise MalformedResponse(f"unsupported Transfer-Encoding {encoding!r}")
            body = self._chunked()
            keep_open = keep_open and length is None  # both framings: do not trust what follows
        elif length is not None:
            if not (length.isdigit() and length.isascii()) or len(length) > 10 or int(length) > MAX_BODY:
                raise MalformedResponse(f"bad Content-Length {length!r}")
            body = self._exact(int(length))
        else:  # delimited by the end of the stream
            body = self._until_closed()
            keep_open = False
        return status, headers, body, keep_open

    def _service_event(self, head: re.Match[bytes]) -> tuple[int, dict[str, str], bytes, bool]:
        """The response whose head `_SERVICE_EVENT_HEAD` matched: what `_head` and the Content-Length
        framing would make of it."""
        request_id, deadline, arn, trace_id, length = head.groups()
        size = int(length)
        if size > MAX_BODY:
            raise MalformedResponse(f"bad Content-Length {length.decode()!r}")
        self.buffer = self.buffer[head.end() :]
        headers = {
            "content-type": "application/json",
            "lambda-runtime-aws-request-id": request_id.decode(),
            "lambda-runtime-deadline-ms": deadline.decode(),
            "lambda-runtime-invoked-function-arn": arn.decode(),
            "lambda-runtime-trace-id": trace_id.decode(),
            "content-length": length.decode(),
        }
        return 200, headers, self._exact(size), True

    def _head(self) -> tuple[str, int, dict[str, str]]:
        buffer, start = self.buffer, 0
        while True:
            if not b"HTTP/".startswith(buffer[:5]):
                raise MalformedResponse(f"malformed status line {buffer[:80]!r}")
            end = buffer.find(b"\r\n\r\n", start)
            if end >= 0:
                break
            if len(buffer) >= MAX_HEAD:
                raise MalformedResponse(f"header section larger than {MAX_HEAD} bytes")
            chunk = self.sock.recv(_RECV)
            if not chunk:
                raise MalformedResponse("connection closed in the middle of the response headers")
            start = max(0, len(buffer) - 3)
            buffer += chunk
        if end + 4 > MAX_HEAD:
            raise MalformedResponse(f"header section larger than {MAX_HEAD} bytes")
        self.buffer = buffer[end + 4 :]
        text = buffer[:end].decode("latin-1")
        if "\r\n " in text or "\r\n\t" in text:  # obsolete line folding: the break becomes a space
            text = text.replace("\r\n ", " ").replace("\r\n\t", " ")
        lines = text.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or not (code.isdigit() and code.isascii() and len(code) == 3)
            or rest[3:4] not in ("", " ")
        ):
            raise MalformedResponse(f"malformed status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise MalformedResponse(f"malformed header line {line[:80]!r}")
            value = value.strip(" \t")
            if name not in headers:
                headers[name] = value
            elif name == "content-length":
                if value != headers[name]:
                    raise MalformedResponse("conflicting Content-Length headers")
            elif name in ("transfer-encoding", "connection"):
                headers[name] += ", " + value
        return version, int(code), headers

    def _exact(self, size: int) -> bytes:
        buffer = self.buffer
        if len(buffer) >= size:
            self.buffer = buffer[size:]
            return buffer[:size] if len(buffer) > size else buffer
        body = bytearray(size)
        body[: len(buffer)] = buffer
        self.buffer = b""
        view, filled, recv_into = memoryview(body), len(buffer), self.sock.recv_into
        while filled < size:
            received = recv_into(view[filled:])
            if not received:
                raise MalformedResponse(f"connection closed after {filled} of {size} body bytes")
            filled += received
        return bytes(body)

    def _line(self) -> bytes:
        buffer, start = self.buffer, 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end >= 0:
                break
            if len(buffer) >= MAX_HEAD:
                raise MalformedResponse(f"chunked body line longer than {MAX_HEAD} bytes")
            chunk = self.sock.recv(_RECV)
            if not chunk:
                raise MalformedResponse("connection closed in the middle of a chunked body")
            start = max(0, len(buffer) - 1)
            buffer += chunk
        self.buffer = buffer[end + 2 :]
        return buffer[:end]

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self._line()
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not size_text or size_text.strip(_HEX) or len(size_text) > 16:
                raise MalformedResponse(f"malformed chunk size line {line[:80]!r}")
            size = int(size_text, 16)
            total += size
            if total > MAX_BODY:
                raise MalformedResponse("chunked body too large")
            if size == 0:
                break
            parts.append(self._exact(size))
            if self._exact(2) != b"\r\n":
                raise MalformedResponse("chunk data not followed by CRLF")
        trailers = 0
        while True:  # the trailer section, up to its blank line; its fields are not used
            line = self._line()
            if not line:
                return b"".join(parts)
            trailers += len(line) + 2
            if trailers > MAX_HEAD:
                raise MalformedResponse(f"trailer section larger than {MAX_HEAD} bytes")

    def _until_closed(self) -> bytes:
        parts = [self.buffer]
        self.buffer = b""
        recv = self.sock.recv
        while True:
            chunk = recv(_RECV)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)


def _idle(sock: _socket.socket) -> bool:
    """True when nothing arrived on the kept-alive connection; EOF (the server hung up while it sat
    idle) or stray bytes mean it cannot carry another exchange."""
    try:
        sock.recv(1, _PEEK_NOW)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _parse_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` (port 80), as http.client reads it."""
    host, port = address, 80
    colon, bracket = address.rfind(":"), address.rfind("]")
    if colon > bracket:
        port_text = address[colon + 1 :]
        host = address[:colon]
        if port_text:
            if not (port_text.isdigit() and port_text.isascii()) or int(port_text) > 65535:
                raise RuntimeClientError(f"Invalid AWS_LAMBDA_RUNTIME_API {address!r}: bad port {port_text!r}")
            port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not (host.isascii() and host.isprintable()) or " " in host:
        raise RuntimeClientError(f"Invalid AWS_LAMBDA_RUNTIME_API {address!r}: bad host")
    return host, port


def _describe(exc: Exception) -> str:
    if isinstance(exc, MalformedResponse):
        return f"malformed response: {exc}"
    if isinstance(exc, _Dropped):
        return str(exc)
    return repr(exc)


def _tokens(value: str) -> list[str]:
    return [token.strip() for token in value.split(",") if token.strip()]


def _header_value(value: str) -> str:
    return value.encode("ascii", "backslashreplace").decode("ascii").translate(_CONTROL_ESCAPES)


def _error_headers(error_type: str) -> str:
    # A class name may be any string; the header carries it as printable ASCII.
    return f"Content-Type: application/json\r\n{_ERROR_TYPE}: {_header_value(error_type)}\r\n"


def user_agent() -> str:
    version = sys.version_info
    return f"sandbox-runtime-bootstrap/{version[0]}.{version[1]}.{version[2]}"


def _refused(what: str, status: int, body: bytes) -> RuntimeClientError:
    text = body.decode("utf-8", "replace").strip()
    return RuntimeClientError(f"{what}. Http response code: {status}. Response body: {text[:1000]}")
