"""Fuzzing the Runtime API (runtime_api/runtime.py) from where it is reachable: inside a sandbox.

The `runtime-fuzz` function (tests/functions/rtfuzz/bootstrap, a `provided` runtime) sends each raw
HTTP request of its event on a fresh connection to its own endpoint and reports the status lines. The
requests are generated here: any method, paths under /2018-06-01/ (and the other APIs of that listener,
and the service's own routes), the invocation's real id or wrong ones, wrong or conflicting
Content-Length, chunked bodies, huge headers, garbage bytes, a response posted twice. Whatever they
do: no 5xx, the invoke that carried them answers as Lambda does (200, or a function error), the
service stays healthy and serves a normal invoke after, broken environments are replaced rather than
piled up (and none outlives the service: `ServiceProcess.stop`), and its descriptors and memory do not
grow.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest
from conftest import FUNCTIONS, ServiceProcess
from fuzz_support import Snapshot, assert_no_leak, fuzz_settings
from hypothesis import assume, given
from hypothesis import strategies as st
from support import wait_for

from runtime_api.invocation import MAX_REQUEST_BYTES

pytestmark = pytest.mark.slow

_PATHS = [
    "/2018-06-01/runtime/invocation/next",
    "/2018-06-01/runtime/invocation/{RID}/response",
    "/2018-06-01/runtime/invocation/{RID}/error",
    "/2018-06-01/runtime/invocation/{RID}",
    "/2018-06-01/runtime/invocation/{RID}/response/extra",
    "/2018-06-01/runtime/invocation//response",
    "/2018-06-01/runtime/init/error",
    "/2018-06-01/ping",
    "/2018-06-01/",
    "/2018-06-01/runtime/invocation/next?x=1&y",
    "/2018-06-01/runtime/invocation/%7BRID%7D/response",
    "/2018-06-01/../2018-06-01/runtime/invocation/next",
    "/2020-01-01/extension/register",
    "/2020-01-01/extension/event/next",
    "/2020-01-01/extension/init/error",
    "/2022-07-01/telemetry",
    "/2020-08-15/logs",
    "/health",
    "/2015-03-31/functions",
    "/2015-03-31/functions/echo/invocations",
    "*",
]
_HEADER_NAMES = [
    "Lambda-Runtime-Function-Error-Type",
    "Lambda-Runtime-Function-Response-Mode",
    "Lambda-Extension-Name",
    "Lambda-Extension-Identifier",
    "Lambda-Extension-Accept-Feature",
    "Content-Type",
    "Expect",
    "Connection",
    "Trailer",
    "Lambda-Runtime-Function-Error-Body",
    "X-Anything",
]
_token = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."), min_size=1, max_size=20
)
_odd = st.text(
    st.characters(min_codepoint=0x00, max_codepoint=0xFF, exclude_characters="\r\n"), min_size=1, max_size=20
)
_VALUES = ["streaming", "buffered", "100-continue", "close", "keep-alive", "application/json", "Runtime.X"]
_value = st.integers(0, 9).flatmap(
    lambda n: (
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)  # DEL, latin-1
        if n == 0
        else st.builds(lambda size: "v" * size, st.sampled_from([1000, 70 * 1024]))  # past the 64 KB section limit
        if n == 1
        else _token
        if n == 2
        else st.sampled_from(_VALUES)
    )
)
_path = st.one_of(
    st.sampled_from(_PATHS),
    st.builds(
        lambda rest: "/2018-06-01/" + rest, st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
    ),
    st.builds(lambda rid: f"/2018-06-01/runtime/invocation/{rid}/response", _token),
)
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# Mostly requests the parser takes, so that they reach the handlers; the rest tests the parser's 400.
_method = st.integers(0, 9).flatmap(lambda n: (_token | _odd) if n == 0 else st.sampled_from(_METHODS))
_body = st.one_of(
    st.binary(max_size=512),
    st.sampled_from([b"", b"{}", b'{"errorMessage":"x","errorType":"Y"}', b"null", b"\xff\xfe"]),
    st.builds(lambda n: b"x" * n, st.sampled_from([64 * 1024, 1024 * 1024 + 1])),  # past /error's 1 MB
)


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=300))  # not HTTP at all
    method, path, body = draw(_method), draw(_path), draw(_body)
    name = st.integers(0, 9).flatmap(lambda n: _odd if n == 0 else _token if n < 3 else st.sampled_from(_HEADER_NAMES))
    headers = draw(st.lists(st.tuples(name, _value), max_size=4))
    framing = draw(st.sampled_from(["length", "length", "none", "short", "long", "bad", "twice", "chunked"]))
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
    elif framing == "short":  # the server sees the rest as the next request
        lines.append(f"Content-Length: {max(0, len(body) - 3)}")
    elif framing == "long":  # the server waits for bytes that never come
        lines.append(f"Content-Length: {len(body) + 10}")
    elif framing == "bad":
        lines.append(f"Content-Length: {draw(st.sampled_from(['-1', 'abc', '99999999999999999999', '1, 2', '']))}")
    elif framing == "twice":
        lines += [f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"]
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        if draw(st.booleans()):
            lines.append("Trailer: Lambda-Runtime-Function-Error-Type")
        size = draw(st.sampled_from([f"{len(body):x}", "zz", "ffffffffffffffff", f"{len(body) + 5:x}"]))
        trailer = draw(st.sampled_from([b"", b"Lambda-Runtime-Function-Error-Type: Runtime.X\r\n"]))
        body = size.encode() + b"\r\n" + body + b"\r\n0\r\n" + trailer + b"\r\n"
    head = "\r\n".join(lines).encode("latin-1", errors="replace") + b"\r\n\r\n"
    raw = head + body
    if draw(st.integers(0, 4)) == 0:
        raw += raw  # the same request twice on one connection (a response posted twice)
    return raw


@pytest.fixture(scope="module")
def fuzz_service():
    running = ServiceProcess(FUNCTIONS / "fuzz.yaml")
    yield running
    assert running.stop() == 0


def _invoke(service: ServiceProcess, function: str, event: object) -> httpx.Response:
    return httpx.post(f"{service.url}/2015-03-31/functions/{function}/invocations", json=event, timeout=90)


def _reported(service: ServiceProcess, marker: str) -> list[str]:
    found = []
    for event in service.log_events():
        text = str(event.get("event", ""))
        if text.startswith(f"RTFUZZ {marker} "):
            found.append(text.split(" ", 3)[3] if text.count(" ") >= 3 else "")
    return found


def test_the_runtime_api_answers_any_request_without_a_server_error(fuzz_service: ServiceProcess) -> None:
    service = fuzz_service
    warm = _invoke(service, "runtime-fuzz", {"marker": "warm", "requests": []})
    assert warm.status_code == 200, warm.text
    before = Snapshot(service)
    seen: dict[str, int] = {}

    @fuzz_settings(20)
    @given(st.lists(_request(), min_size=1, max_size=8))
    def run(requests: list[bytes]) -> None:
        marker = uuid.uuid4().hex
        event = {"marker": marker, "requests": [base64.b64encode(raw).decode() for raw in requests]}
        # The requests travel in the invoke's event, which Invoke takes up to 6 MB of (a larger one is
        # answered 413 before the function runs: tests/test_invoke.py has that case).
        assume(len(json.dumps(event)) < MAX_REQUEST_BYTES)
        answer = _invoke(service, "runtime-fuzz", event)
        assert answer.status_code == 200, (answer.status_code, answer.text, requests)
        assert answer.headers.get("x-amzn-ErrorType") is None
        reported = _reported(service, marker)
        for statuses in reported:
            for status in statuses.split(","):
                seen[status] = seen.get(status, 0) + 1
                assert not status.startswith("5"), (status, requests)
        if answer.headers.get("X-Amz-Function-Error") is None and answer.content.startswith(b'{"marker"'):
            assert json.loads(answer.content)["marker"] == marker  # the runtime's own answer got through

    run()
    health = service.health()
    assert health["status"] == "healthy"
    # Environments that generated requests broke (an /init/error, a crash) were replaced, not piled up:
    # invocations ran one at a time, so a few at most are alive (one may still be finishing its requests).
    environments = health["pools"]["functions"]["runtime-fuzz"]["environments"]
    assert sum(environments.values()) <= 3, environments
    normal = _invoke(service, "echo", {"after": "fuzzing"})
    assert normal.status_code == 200 and normal.json() == {"after": "fuzzing"}
    again = _invoke(service, "runtime-fuzz", {"marker": "after", "requests": []})
    assert again.status_code == 200 and again.json() == {"marker": "after", "results": []}
    assert seen, "the runtime reported no status at all"
    # Descriptors and memory settle back: nothing held per connection or per failed invocation.
    time.sleep(1)
    after = assert_no_leak(service, before)
    print(f"runtime fuzz: statuses {dict(sorted(seen.items()))}; before: {before}; after: {after}")


def test_bodies_nested_past_the_parser_get_an_answer(fuzz_service: ServiceProcess) -> None:
    # Found by fuzzing: an extension registration or an error-cause /error nested deeper than the stdlib's
    # JSON parser raised RecursionError in the handler, and the runtime never got an answer.
    deep = b"[" * 5000 + b"]" * 5000
    register = (
        b"POST /2020-01-01/extension/register HTTP/1.1\r\nHost: x\r\nLambda-Extension-Name: x\r\n"
        b"Content-Length: %d\r\n\r\n" % len(deep) + deep
    )
    error = (
        b"POST /2018-06-01/runtime/invocation/{RID}/error HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/vnd.aws.lambda.error.cause+json\r\nContent-Length: %d\r\n\r\n" % len(deep) + deep
    )
    marker = uuid.uuid4().hex
    event = {"marker": marker, "requests": [base64.b64encode(raw).decode() for raw in (register, error)]}
    answer = _invoke(fuzz_service, "runtime-fuzz", event)
    assert answer.status_code == 200 and answer.headers["X-Amz-Function-Error"] == "Unhandled"
    assert answer.content == b'"Invalid error body"'
    reported = wait_for(lambda: len(_reported(fuzz_service, marker)) == 2 and _reported(fuzz_service, marker), 10, "")
    assert reported[0] in ("400", "403") and reported[1] == "202", reported
