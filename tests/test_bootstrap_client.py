"""bootstrap.client on its own: the HTTP/1.1 it speaks, against a scripted server that answers byte for
byte what each test says (framings, connection handling, malformed answers), and the bootstrap's
start-up imports."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_bootstrap import INTERPRETERS, Event, FakeRuntimeAPI

from bootstrap import client as client_module
from bootstrap.client import MAX_HEAD, RuntimeClient, RuntimeClientError

REPO = Path(__file__).resolve().parent.parent
NEXT = "/2018-06-01/runtime/invocation/next"
WAIT = 30


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, sock: socket.socket, requests: list[tuple[str, dict[str, str], bytes]]) -> None:
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = sock.makefile("rb")
        self._requests = requests

    def request(self) -> tuple[str, dict[str, str], bytes] | None:
        """The next request (line, headers by lower-case name, body), or None at end of stream."""
        line = self.file.readline()
        if not line:
            return None
        headers: dict[str, str] = {}
        while (field := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = field.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", 0)))
        request = (line.decode("latin-1").rstrip("\r\n"), headers, body)
        self._requests.append(request)
        return request

    def send(self, *parts: bytes, pause: float = 0.0) -> None:
        """Each part in its own write (a pause between them makes them separate segments)."""
        for part in parts:
            self.sock.sendall(part)
            if pause:
                time.sleep(pause)

    def reset(self) -> None:
        """Abort the connection: the client gets ECONNRESET."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class ScriptedServer:
    """Each accepted connection is handed to the next function of `script`; the connection is closed
    when that function returns unless it returns True (then it stays open until the server closes)."""

    def __init__(self, script: list[Callable[[Peer], bool | None]]) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self._open: list[Peer] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._script = list(script)
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        for step in self._script:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            peer = Peer(conn, self.requests)
            try:
                keep = step(peer)
            except BaseException as exc:  # surfaced by close()
                self.errors.append(exc)
                keep = False
            if keep:
                self._open.append(peer)
            else:
                peer.close()
        self.done.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
        self._listener.close()
        for peer in self._open:
            peer.close()
        assert not self.errors, self.errors


@pytest.fixture
def serve():
    servers: list[ScriptedServer] = []
    clients: list[RuntimeClient] = []

    def make(*script: Callable[[Peer], bool | None]) -> tuple[ScriptedServer, RuntimeClient]:
        servers.append(ScriptedServer(list(script)))
        clients.append(RuntimeClient(servers[-1].address, "test-agent"))
        return servers[-1], clients[-1]

    yield make
    for client in clients:
        client.close()
    for server in servers:
        server.close()


def response(status: str = "200 OK", body: bytes = b"{}", *fields: str, length: bool = True) -> bytes:
    head = [f"HTTP/1.1 {status}", *fields]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def event(request_id: str = "r-1", body: bytes = b"{}", *fields: str) -> bytes:
    return response(
        "200 OK", body, f"Lambda-Runtime-Aws-Request-Id: {request_id}", "Content-Type: application/json", *fields
    )


ACCEPTED = response("202 Accepted", b'{"status":"OK"}\n')


# -- requests --------------------------------------------------------------------------------------


def test_requests_are_plain_http11_with_content_length(serve) -> None:
    def script(peer: Peer) -> None:
        assert peer.request() is not None
        peer.send(event())
        assert peer.request() is not None  # the /response
        assert peer.request() is not None  # and the /next that came with it
        peer.send(ACCEPTED + event("r-2"))
        assert peer.request() is not None  # the /error
        assert peer.request() is not None  # and its /next
        peer.send(ACCEPTED)
        peer.request()  # until the client closes

    server, client = serve(script)
    client.next_invocation()
    client.post_response("r-1", b'{"ok": true}', "application/json")
    assert client.next_invocation().request_id == "r-2"
    client.post_error("r-2", b"{}", "Bad\r\nType\u00e9")
    client.close()
    assert server.done.wait(WAIT)
    (get, get_headers, get_body), (post, post_headers, post_body), next_, (error, error_headers, _), next2 = (
        server.requests
    )
    assert next_[0] == next2[0] == get == f"GET {NEXT} HTTP/1.1"
    host = server.address
    assert get_headers == next_[1] == {"host": host, "user-agent": "test-agent"}
    assert get_body == b""
    assert post == "POST /2018-06-01/runtime/invocation/r-1/response HTTP/1.1"
    assert post_headers == {
        "host": host,
        "user-agent": "test-agent",
        "content-type": "application/json",
        "content-length": "12",
    }
    assert post_body == b'{"ok": true}'
    assert error == "POST /2018-06-01/runtime/invocation/r-2/error HTTP/1.1"
    assert error_headers["lambda-runtime-function-error-type"] == "Bad\\x0d\\x0aType\\xe9"
    assert server.connections == 1


class RecordingSocket:
    """Wraps the client's socket to count its writes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[int] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


@pytest.mark.parametrize(("size", "writes"), [(0, 1), (65536, 1), (65537, 2)])
def test_one_write_per_request_unless_the_body_is_large(serve, size: int, writes: int) -> None:
    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(event())
        request = peer.request()
        assert request is not None and len(request[2]) == size
        peer.send(ACCEPTED)
        return True

    _, client = serve(script)
    client.next_invocation()
    recorder = RecordingSocket(client._sock)  # type: ignore[arg-type]
    client._sock = recorder  # type: ignore[assignment]
    client.post_response("r-1", b"x" * size, "application/json")
    assert recorder.writes[0] >= (size if writes == 1 else 0)
    assert len(recorder.writes) == writes


def test_socket_is_blocking_with_nagle_off_whatever_the_default_timeout(serve) -> None:
    def script(peer: Peer) -> bool:
        peer.request()
        time.sleep(0.3)  # a long poll, longer than the default timeout below
        peer.send(event())
        return True

    socket.setdefaulttimeout(0.05)
    try:
        _, client = serve(script)
        assert client.next_invocation().request_id == "r-1"
    finally:
        socket.setdefaulttimeout(None)
    sock = client._sock
    assert sock is not None
    assert sock.gettimeout() is None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_path_that_is_not_printable_ascii_is_refused(serve) -> None:
    server, client = serve()
    for request_id in ("a b", "a\r\nb", "é"):
        with pytest.raises(RuntimeClientError, match="the path is not printable ASCII"):
            client.post_response(request_id, b"{}", "application/json")
    assert server.connections == 0


# -- responses -------------------------------------------------------------------------------------


def test_header_names_are_case_insensitive_and_the_first_of_a_repeated_header_wins(serve) -> None:
    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(
            b"HTTP/1.1 200 OK\r\nLAMBDA-RUNTIME-AWS-REQUEST-ID:r-1\r\ncontent-TYPE: \t text/plain \r\n"
            b"lambda-runtime-trace-id: first\r\nLambda-Runtime-Trace-Id: second\r\n"
            b'Lambda-Runtime-Client-Context: {"a":\r\n  1}\r\ncontent-length: 3\r\n\r\nabc'
        )
        return True

    _, client = serve(script)
    invocation = client.next_invocation()
    assert (invocation.request_id, invocation.content_type, invocation.body) == ("r-1", "text/plain", b"abc")
    assert invocation.trace_id == "first"
    assert invocation.client_context == '{"a":  1}'  # an obsolete line folding becomes a space


def test_a_response_split_into_many_segments(serve) -> None:
    data = event("r-1", b'{"n": 12345}', "Lambda-Runtime-Deadline-Ms: 99")

    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(*(data[i : i + 7] for i in range(0, len(data), 7)), pause=0.002)
        return True

    _, client = serve(script)
    invocation = client.next_invocation()
    assert (invocation.body, invocation.deadline_ms) == (b'{"n": 12345}', "99")


def test_chunked_responses(serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r-1\r\nTransfer-Encoding: chunked\r\n\r\n"

    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(head, b"4;name=value\r\n", b'{"n"', b"\r\n", b"A\r\n: 1234567}\r\n", b"0\r\n", b"", pause=0.002)
        peer.send(b"X-Trailer: yes\r\n\r\n")
        peer.request()
        peer.send(b"HTTP/1.1 202 Accepted\r\ntransfer-encoding:  Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        peer.request()
        peer.send(event("r-2"))
        return True

    server, client = serve(script)
    assert client.next_invocation().body == b'{"n": 1234567}'
    client.post_response("r-1", b"{}", "application/json")
    assert client.next_invocation().request_id == "r-2"
    assert server.connections == 1  # the connection carried on after each chunked body


def test_connection_close_and_bodies_delimited_by_the_end_of_the_stream(serve) -> None:
    def closes_after_the_body(peer: Peer) -> None:
        peer.request()
        peer.send(event("r-1", b'{"a": 1}', "Connection: close"))

    def no_length_then_end_of_stream(peer: Peer) -> None:
        peer.request()
        peer.send(response("202 Accepted", b"accepted", length=False), b" later", pause=0.01)

    def http10_without_keep_alive(peer: Peer) -> None:
        peer.request()
        peer.send(event("r-2").replace(b"HTTP/1.1", b"HTTP/1.0", 1))

    def http10_keep_alive(peer: Peer) -> bool:
        peer.request()
        peer.send(event("r-3", b"{}", "Connection: Keep-Alive").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        peer.request()
        peer.send(event("r-4"))
        return True

    server, client = serve(
        closes_after_the_body, no_length_then_end_of_stream, http10_without_keep_alive, http10_keep_alive
    )
    assert client.next_invocation().body == b'{"a": 1}'
    assert client._sock is None  # closed at once, not left for the idle check
    client.post_response("r-1", b"{}", "application/json")
    assert client._sock is None
    assert client.next_invocation().request_id == "r-2"
    assert client._sock is None
    assert client.next_invocation().request_id == "r-3"
    assert client.next_invocation().request_id == "r-4"
    assert server.connections == 4


def test_chunked_wins_over_content_length_and_the_connection_is_not_reused(serve) -> None:
    def script(peer: Peer) -> None:
        peer.request()
        peer.send(b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def serves(peer: Peer) -> bool:
        peer.request()
        peer.send(event())
        return True

    server, client = serve(script, serves)
    client.post_response("r-0", b"{}", "application/json")
    assert client._sock is None
    assert client.next_invocation().request_id == "r-1"
    assert server.connections == 2


def test_interim_responses_are_skipped(serve) -> None:
    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + event())
        return True

    _, client = serve(script)
    assert client.next_invocation().request_id == "r-1"


def test_no_body_on_204(serve) -> None:
    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        peer.request()
        peer.send(event())
        return True

    server, client = serve(script)
    client.post_response("r-0", b"{}", "application/json")
    assert client.next_invocation().request_id == "r-1"
    assert server.connections == 1


def test_header_section_is_capped(serve) -> None:
    big = "X-Big: " + "a" * MAX_HEAD

    def endless_headers(peer: Peer) -> bool:
        peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\n" + big.encode() + b"\r\n")  # never ends: the cap must
        return True

    def just_under(peer: Peer) -> bool:
        peer.request()
        fields = ["Lambda-Runtime-Aws-Request-Id: r-1", "X-Big: " + "a" * (MAX_HEAD - 200)]
        peer.send(response("200 OK", b"{}", *fields))
        return True

    _, client = serve(endless_headers, just_under)
    with pytest.raises(RuntimeClientError, match=f"malformed response: header section larger than {MAX_HEAD} bytes"):
        client.next_invocation()
    assert client._sock is None
    assert client.next_invocation().request_id == "r-1"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed status line 'HTTP/1.1 2x0 OK'"),
        (b"HTTP/1.1 200OK\r\n\r\n", "malformed status line"),
        (b"HTTP/2 200\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1\r\n\r\n", "malformed status line"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "malformed status line b'SSH-2.0-OpenSSH_9.6"),  # fails before the blank line
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line 'no colon here'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length '-1'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "connection closed after 3 of 10 body bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size line b'zz'"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "chunk data not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab", "connection closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed in the middle of the response headers"),
    ],
)
def test_malformed_responses_fail_clearly_without_a_retry(serve, answer: bytes, message: str) -> None:
    def script(peer: Peer) -> None:
        peer.request()
        peer.send(answer)
        time.sleep(0.05)

    server, client = serve(script, script)
    with pytest.raises(RuntimeClientError) as info:
        client.next_invocation()
    assert str(info.value).startswith(f"GET {NEXT} failed: malformed response: ")
    assert message in str(info.value)
    assert server.connections == 1
    assert client._sock is None


# -- dropped connections ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["eof", "reset"])
def test_a_dropped_keep_alive_connection_is_retried_once(serve, how: str) -> None:
    """The server drops the connection after reading the request, before any byte of an answer (as
    when its keep-alive timeout strikes just as the request arrives)."""

    def serves_one_then_drops(peer: Peer) -> None:
        peer.request()
        peer.send(event("r-1"))
        peer.request()
        if how == "reset":
            peer.reset()

    def serves(peer: Peer) -> bool:
        peer.request()
        peer.send(event("r-2"))
        return True

    server, client = serve(serves_one_then_drops, serves)
    assert client.next_invocation().request_id == "r-1"
    assert client.next_invocation().request_id == "r-2"
    assert [line for line, _, _ in server.requests] == [f"GET {NEXT} HTTP/1.1"] * 3
    assert server.connections == 2


def test_an_idle_connection_the_server_closed_is_replaced_before_sending(
    serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    def serves_one_then_closes(peer: Peer) -> None:
        peer.request()
        peer.send(event("r-1"))

    def serves(peer: Peer) -> bool:
        peer.request()
        peer.send(event("r-2"))
        return True

    _, client = serve(serves_one_then_closes, serves)
    monkeypatch.setattr(client_module, "_CHECK_IDLE_AFTER", 0.05)  # 1 s by default
    assert client.next_invocation().request_id == "r-1"
    old = RecordingSocket(client._sock)  # type: ignore[arg-type]
    client._sock = old  # type: ignore[assignment]
    time.sleep(0.1)  # the server has hung up meanwhile
    assert client.next_invocation().request_id == "r-2"
    assert old.writes == []  # nothing was written into the dead connection
    assert old.fileno() == -1  # and it was closed


def test_gives_up_after_one_retry(serve) -> None:
    def drops(peer: Peer) -> None:
        peer.request()

    server, client = serve(drops, drops, drops)
    with pytest.raises(RuntimeClientError) as info:
        client.next_invocation()
    assert str(info.value) == f"GET {NEXT} failed: the connection was closed before any response arrived"
    assert server.connections == 2


def test_unreachable_runtime_api_is_retried_once_then_reported() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = RuntimeClient(f"127.0.0.1:{port}", "test-agent")
    with pytest.raises(RuntimeClientError, match=rf"GET {NEXT} failed: ConnectionRefusedError\("):
        client.next_invocation()


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [("127.0.0.1:9001", "127.0.0.1", 9001), ("[::1]:9001", "::1", 9001), ("localhost", "localhost", 80)],
)
def test_addresses(address: str, host: str, port: int) -> None:
    assert client_module._parse_address(address) == (host, port)


@pytest.mark.parametrize("address", ["127.0.0.1:port", "127.0.0.1:99999", ":9001", "a b:1", "host\r\n:1"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(RuntimeClientError, match="Invalid AWS_LAMBDA_RUNTIME_API"):
        RuntimeClient(address, "test-agent")


# -- large bodies ----------------------------------------------------------------------------------


def test_six_megabyte_event_and_response(tmp_path: Path) -> None:
    big = json.dumps({"data": "x" * (6 * 1024 * 1024 - 20)}).encode()
    api = FakeRuntimeAPI([Event("r-1", big)], tmp_path / "stdout.txt")
    client = RuntimeClient(api.address, "test-agent")
    try:
        invocation = client.next_invocation()
        assert invocation.body == big and type(invocation.body) is bytes
        client.post_response("r-1", big[::-1], "application/json")
    finally:
        client.close()
        api.close()
    assert api.requests[1].body == big[::-1]


def test_six_megabyte_chunked_event(serve) -> None:
    big = b"y" * (6 * 1024 * 1024)

    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r-1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(big), 1 << 20):
            piece = big[start : start + (1 << 20)]
            peer.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        peer.send(b"0\r\n\r\n")
        return True

    _, client = serve(script)
    assert client.next_invocation().body == big


# -- immunity to the function's patches ------------------------------------------------------------


def test_later_patches_of_socket_select_and_http_client_are_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.client
    import select

    def guarded(original: Callable[..., object]) -> Callable[..., object]:
        def patched(*args: object, **kwargs: object) -> object:
            # The test's server threads still need the real thing; the client runs on this thread.
            if threading.current_thread() is threading.main_thread():
                raise AssertionError("a patch (gevent, an APM library) must not see Runtime API traffic")
            return original(*args, **kwargs)

        return patched

    api = FakeRuntimeAPI([Event("r-1"), Event("r-2")], tmp_path / "stdout.txt")
    api.drop_after_next = True  # so that the client connects again after the patches
    client = RuntimeClient(api.address, "test-agent")
    try:
        assert client.next_invocation().request_id == "r-1"
        for module, names in (
            (socket, ("socket", "create_connection", "getaddrinfo")),
            (select, ("poll", "select")),
            (http.client.HTTPConnection, ("request", "putrequest", "getresponse", "_send_request", "connect")),
            (http.client.HTTPResponse, ("begin",)),
        ):
            for name in names:
                monkeypatch.setattr(module, name, guarded(getattr(module, name)))
        client.post_response("r-1", b"{}", "application/json")
        assert client.next_invocation().request_id == "r-2"
    finally:
        client.close()
        api.close()
    assert [r.method for r in api.requests] == ["GET", "POST", "GET"]


# -- what starting the bootstrap imports -----------------------------------------------------------

IMPORTS = """\
import sys
before = set(sys.modules)
sys.path.insert(0, {repo!r})
import bootstrap.main
print(" ".join(sorted(set(sys.modules) - before)))
print(" ".join(sorted(sys.modules)))
"""
NEVER_AT_START = {"http", "email", "urllib", "ssl", "logging"}


@pytest.mark.parametrize("python", INTERPRETERS)
def test_start_up_imports_no_http_client_email_ssl_urllib_or_logging(python: str) -> None:
    out = subprocess.run(
        [python, "-S", "-c", IMPORTS.format(repo=str(REPO))], capture_output=True, text=True, check=True
    ).stdout
    added, everything = (line.split() for line in out.splitlines())
    for names in (added, everything):
        assert not [name for name in names if name.split(".")[0] in NEVER_AT_START]
    assert "_socket" in added and "socket" not in added  # the C module alone: socket.py costs ~2 ms


LAZY_LOGGING = """\
import sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {shadow!r})  # a task root with a logging.py of its own
from bootstrap.logs import setup_logging, set_invocation
assert setup_logging({json_format}, "INFO") is None
assert "logging" not in sys.modules
set_invocation("req-9", None)
import importlib.util
assert importlib.util.find_spec("logging") is not None  # looking is not importing: the hook stays
assert "logging" not in sys.modules
import logging
assert logging.__file__.startswith({stdlib!r}), logging.__file__
assert type(logging.__loader__).__name__ == "SourceFileLoader", logging.__loader__
assert logging.__spec__.loader is logging.__loader__
assert not [f for f in sys.meta_path if type(f).__name__ == "_SetUpOnImport"]
assert [type(h).__name__ for h in logging.getLogger().handlers] == ["StdoutHandler"]
logging.basicConfig(format="%(message)s", stream=sys.stderr)  # does nothing, as in Lambda
logging.getLogger("app").info("hello %s", "there")
logging.getLogger("app").debug("hidden")
"""


@pytest.mark.parametrize("python", INTERPRETERS)
@pytest.mark.parametrize("json_format", [False, True])
def test_logging_is_set_up_on_its_first_import(python: str, json_format: bool, tmp_path: Path) -> None:
    (tmp_path / "logging.py").write_text("raise AssertionError('the task root logging.py was imported')\n")
    stdlib = subprocess.run(
        [python, "-S", "-c", "import os; print(os.path.dirname(os.__file__))"], capture_output=True, text=True
    ).stdout.strip()
    code = LAZY_LOGGING.format(repo=str(REPO), shadow=str(tmp_path), json_format=json_format, stdlib=stdlib)
    result = subprocess.run([python, "-S", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if json_format:
        line = json.loads(result.stdout)
        assert (line["level"], line["message"], line["logger"], line["requestId"]) == (
            "INFO",
            "hello there",
            "app",
            "req-9",
        )
    else:
        level, timestamp, request_id, message = result.stdout.split("\t")
        assert (level, request_id, message) == ("[INFO]", "req-9", "hello there\n")
        assert timestamp.endswith("Z")


# -- /next pipelined behind /response and /error -----------------------------------------------------


def test_a_small_response_and_the_next_poll_go_in_one_write(serve) -> None:
    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(event())
        peer.request()
        peer.request()
        peer.send(ACCEPTED, event("r-2"), pause=0.01)  # the 202, then the event a moment later
        return True

    server, client = serve(script)
    client.next_invocation()
    sock = RecordingSocket(client._sock)  # type: ignore[arg-type]
    client._sock = sock  # type: ignore[assignment]
    client.post_response("r-1", b"{}", "application/json")
    assert client.next_invocation().request_id == "r-2"
    assert len(sock.writes) == 1
    assert [line.split()[0] for line, _, _ in server.requests] == ["GET", "POST", "GET"]
    assert server.connections == 1


@pytest.mark.parametrize("together", [True, False], ids=["in-one-read", "apart"])
def test_the_services_own_202_is_taken_whole_and_its_event_follows(serve, together) -> None:
    def script(peer: Peer) -> bool:
        peer.request()
        peer.send(event())
        peer.request()
        peer.request()
        if together:
            peer.send(client_module.ACCEPTED + event("r-2", b'{"n":2}'))
        else:
            peer.send(client_module.ACCEPTED, event("r-2", b'{"n":2}'), pause=0.01)
        return True

    server, client = serve(script)
    client.next_invocation()
    client.post_response("r-1", b"{}", "application/json")
    invocation = client.next_invocation()
    assert (invocation.request_id, invocation.body) == ("r-2", b'{"n":2}')
    assert server.connections == 1


def test_the_202_the_bootstrap_recognises_is_the_one_the_service_writes() -> None:
    from runtime_api.runtime import _ACCEPTED, _render

    assert _render(202, _ACCEPTED) == client_module.ACCEPTED  # else every warm invoke parses it again


class _NoMoreBytes:
    """A socket with nothing more to read: a reader works on what it was given."""

    def recv(self, size: int) -> bytes:
        return b""

    def recv_into(self, buffer: memoryview) -> int:
        return 0


def _both_ways(data: bytes) -> tuple[object, object]:
    """What `response()` makes of `data` (the response and the bytes left after it, or the error), and
    what the general parser alone makes of it."""

    def outcome(read: Callable[[], tuple[object, ...]], reader: client_module._Reader) -> object:
        try:
            return (*read(), reader.buffer)
        except client_module.MalformedResponse as exc:
            return str(exc)

    reader, parser = (client_module._Reader(_NoMoreBytes(), data) for _ in range(2))  # type: ignore[arg-type]
    return outcome(reader.response, reader), outcome(parser._parsed, parser)


async def test_the_event_head_the_bootstrap_recognises_is_the_one_the_service_writes() -> None:
    from runtime_api.invocation import Invocation
    from runtime_api.runtime import _render_event

    function = type("F", (), {"arn": "arn:aws:lambda:us-east-1:123456789012:function:f"})()
    invocation = Invocation(function=function, payload=b'{"n":1}', request_id="8476a536-e9f4-11e8-9739-2dfe598c3fcd")  # type: ignore[arg-type]
    invocation.deadline_ms = 1542409706888
    data = _render_event(invocation)
    assert client_module._SERVICE_EVENT_HEAD.match(data) is not None  # else every warm invoke parses it again
    fast, parsed = _both_ways(data)
    assert fast == parsed
    assert fast[1]["lambda-runtime-trace-id"] == invocation.trace_id  # type: ignore[index]

    invocation.client_context = '{"custom": {"a": 1}}'  # an optional header: the general parser reads it
    data = _render_event(invocation)
    assert client_module._SERVICE_EVENT_HEAD.match(data) is None
    assert _both_ways(data)[0][1]["lambda-runtime-client-context"] == invocation.client_context  # type: ignore[index]


_HEADER_VALUES = st.from_regex(r"[!-~]{0,12}", fullmatch=True) | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=12
)


@given(
    request_id=_HEADER_VALUES,
    deadline=st.integers(0, 10**13).map(str) | _HEADER_VALUES,
    arn=_HEADER_VALUES,
    trace_id=_HEADER_VALUES,
    body=st.binary(max_size=20),
    length_delta=st.sampled_from([0, 0, 1, -1]),
    after=st.sampled_from([b"", b"HTTP/1.1 202 Accepted\r\n"]),
)
@example(request_id="r-1", deadline="1", arn="", trace_id="", body=b"{}", length_delta=0, after=b"")
@example(request_id="r-1", deadline="1", arn="a", trace_id="t", body=b"", length_delta=0, after=b"")
def test_a_recognised_event_head_reads_as_the_general_parser_reads_it(
    request_id: str, deadline: str, arn: str, trace_id: str, body: bytes, length_delta: int, after: bytes
) -> None:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Lambda-Runtime-Aws-Request-Id: {request_id}\r\n"
        f"Lambda-Runtime-Deadline-Ms: {deadline}\r\n"
        f"Lambda-Runtime-Invoked-Function-Arn: {arn}\r\n"
        f"Lambda-Runtime-Trace-Id: {trace_id}\r\n"
        f"Content-Length: {max(0, len(body) + length_delta)}\r\n\r\n"
    ).encode("latin-1")
    data = head + body + after
    values = (("[!-~]+", request_id), ("[0-9]+", deadline), ("[!-~]*", arn), ("[!-~]*", trace_id))
    if all(re.fullmatch(pattern, value) for pattern, value in values):  # as the service writes them
        assert client_module._SERVICE_EVENT_HEAD.match(data) is not None
    fast, parsed = _both_ways(data)
    assert fast == parsed


def test_a_prefetched_next_whose_connection_drops_is_asked_again(serve) -> None:
    def answers_then_drops(peer: Peer) -> None:
        peer.request()
        peer.send(event())
        peer.request()
        peer.request()
        peer.send(ACCEPTED)

    def serves(peer: Peer) -> bool:
        peer.request()
        peer.send(event("r-2"))
        return True

    server, client = serve(answers_then_drops, serves)
    client.next_invocation()
    client.post_response("r-1", b"{}", "application/json")
    assert client.next_invocation().request_id == "r-2"
    assert server.connections == 2


def test_a_refused_response_takes_no_event_and_a_large_one_is_not_pipelined(serve) -> None:
    def refuses(peer: Peer) -> None:
        peer.request()
        peer.send(event())
        peer.request()
        peer.send(response("413 Request Entity Too Large", b'{"errorType":"RequestEntityTooLarge"}'))

    server, client = serve(refuses)
    client.next_invocation()
    big = b"x" * (64 * 1024 + 1)
    with pytest.raises(RuntimeClientError, match="Http response code: 413"):
        client.post_response("r-1", big, "application/json")
    assert server.done.wait(WAIT)
    assert [line.split()[0] for line, _, _ in server.requests] == ["GET", "POST"]  # no /next after it
