"""Invoke over raw HTTP/1.1, against the service's own HTTP protocol (runtime_api/http_protocol.py), which
answers small Invoke requests without ASGI and hands everything else to uvicorn's: both kinds of request
must get the same answers, on connections that behave the same (keep-alive, pipelining, Connection:
close, HTTP/1.0, chunked bodies, Expect: 100-continue, a caller that hangs up)."""

from __future__ import annotations

import json
import socket
import time

from conftest import ServiceProcess

PATH = "/2015-03-31/functions/echo/invocations"
SMALL = json.dumps({"n": 1}).encode()
LARGE = json.dumps({"fill": "x" * 100_000}).encode()  # over 64 KiB: uvicorn's ASGI handling


def request(body: bytes, *, path: str = PATH, version: str = "HTTP/1.1", extra: str = "") -> bytes:
    head = f"POST {path} {version}\r\nHost: test\r\nContent-Type: application/json\r\n{extra}"
    if "Transfer-Encoding" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def read_answer(buffer: bytearray, sock: socket.socket) -> Answer:
    """One HTTP answer from `sock` (Content-Length framed); what follows it stays in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside an answer's body"
        rest += chunk
    buffer[:] = rest[length:]
    return Answer(status, headers, rest[:length])


def connect(service: ServiceProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=30)


def exchange(service: ServiceProcess, data: bytes, answers: int = 1) -> tuple[list[Answer], bool]:
    """Send `data` on a new connection; the answers, and whether the service closed the connection
    after them (an open one is told by a second of silence)."""
    with connect(service) as sock:
        sock.sendall(data)
        buffer = bytearray()
        got = [read_answer(buffer, sock) for _ in range(answers)]
        sock.settimeout(1)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return got, closed


def answer_to(service: ServiceProcess, data: bytes) -> Answer:
    """The one answer to `data`, on a connection of its own, not waiting to see whether it stays open."""
    with connect(service) as sock:
        sock.sendall(data)
        return read_answer(bytearray(), sock)


def test_small_and_large_invokes_get_the_same_answer(service):
    """A small Invoke (the protocol's own) and a large one (uvicorn's ASGI handling): same status, same
    header names in the same order, the body the function returned."""
    small = answer_to(service, request(SMALL))
    large = answer_to(service, request(LARGE))
    assert (small.status, json.loads(small.body)) == (200, {"n": 1})
    assert (large.status, json.loads(large.body)) == (200, json.loads(LARGE))
    assert list(small.headers) == list(large.headers)
    assert small.headers["x-amz-executed-version"] == "$LATEST"
    assert small.headers["content-type"] == "application/json" and "date" in small.headers
    errors = [answer_to(service, request(body)) for body in (b"{not json", b"{not json" + b" " * 70_000)]
    assert [e.status for e in errors] == [400, 400]
    assert errors[0].headers["x-amzn-errortype"] == errors[1].headers["x-amzn-errortype"]
    assert list(errors[0].headers) == list(errors[1].headers)


def test_keep_alive_and_pipelined_invokes_are_answered_in_order(service):
    requests = [request(json.dumps({"i": i}).encode()) for i in range(5)]
    answers, closed = exchange(service, b"".join(requests), answers=5)  # all five in one write
    assert [json.loads(a.body) for a in answers] == [{"i": i} for i in range(5)]
    assert len({a.headers["x-amzn-requestid"] for a in answers}) == 5
    assert not closed
    with connect(service) as sock:  # one after the other on one connection, small and large mixed
        buffer = bytearray()
        for body in (SMALL, LARGE, SMALL):
            sock.sendall(request(body))
            assert json.loads(read_answer(buffer, sock).body) == json.loads(body)


def test_connection_close_and_http_1_0_close_after_the_answer(service):
    (answer,), closed = exchange(service, request(SMALL, extra="Connection: close\r\n"))
    assert answer.status == 200 and answer.headers["connection"] == "close" and closed
    (answer,), closed = exchange(service, request(SMALL, version="HTTP/1.0"))
    assert answer.status == 200 and json.loads(answer.body) == {"n": 1} and closed


def test_chunked_and_100_continue_requests(service):
    chunked = request(b"", extra="Transfer-Encoding: chunked\r\n")
    chunked += b"4\r\n" + SMALL[:4] + b"\r\n" + f"{len(SMALL) - 4:x}\r\n".encode() + SMALL[4:] + b"\r\n0\r\n\r\n"
    answer = answer_to(service, chunked)
    assert (answer.status, json.loads(answer.body)) == (200, {"n": 1})
    with connect(service) as sock:
        head, _, body = request(SMALL, extra="Expect: 100-continue\r\n").partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = read_answer(bytearray(), sock)
        assert (answer.status, json.loads(answer.body)) == (200, {"n": 1})


def test_a_caller_that_hangs_up_mid_invoke_leaves_the_service_serving(service, client):
    """The function still runs to its end; the answer has nowhere to go and is dropped; the environment
    serves the next caller."""
    before = service.health()["pools"]["environments"]["live"]
    with connect(service) as sock:
        sock.sendall(request(json.dumps({"seconds": 0.5}).encode(), path="/2015-03-31/functions/sleep/invocations"))
        time.sleep(0.1)
    time.sleep(0.8)
    response = client.invoke(FunctionName="sleep", Payload=b'{"seconds": 0}')
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert service.health()["pools"]["environments"]["live"] <= before + 1
    assert "request.failed" not in service.logs()
