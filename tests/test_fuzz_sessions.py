"""Property tests of the agent sessions API (runtime_api/session_routes.py): any path, session id, file
name, body and field type gets the API's envelope (`{"success": true, "data"}` or `{"success": false,
"error": {"code", "message"}}`) and never a 5xx but the documented 507 (workspace full)."""

from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest
from conftest import FUNCTIONS, ServiceProcess
from fuzz_support import Snapshot, assert_no_leak, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from runtime_api.session_errors import ERRORS

pytestmark = pytest.mark.slow

SE = "/workspace/se"
SESSION = "fuzz"

_text = st.text(max_size=40)
_name = st.one_of(
    st.sampled_from(
        [
            "a.txt", "", ".", "..", "../x", "/etc/passwd", "/workspace/a", "/workspace/../x", "a/../../b", "dir/",
            "a\x00b", "\x00", "é/ü.txt", "a" * 255, "a" * 256, "d/" * 200 + "f", "/", "//", "a//b", " ", "\ud800",
            "CON", "a\nb", "~", "$HOME",
        ]
    ),
    st.text(min_size=1, max_size=60),
)  # fmt: skip
_encodable = _name.filter(lambda name: _utf8(name))  # a multipart header carries UTF-8 only
_code = st.sampled_from(["1", "def handler(e): return e", "x=("])
_value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), _text, st.lists(_text, max_size=3),
    st.dictionaries(_text, _text, max_size=2), st.sampled_from([1e308, -1, 0, 10**30, "10", "NaN"]),
)  # fmt: skip


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="", errors="surrogatepass")


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 507, (response.status_code, response.text[:500])
    if response.headers.get("content-type", "").startswith("application/octet-stream"):
        assert response.status_code == 200  # a download
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        assert response.status_code == 200  # a streamed execution: its last event is the outcome
        kind, data = response.text.rstrip("\n").split("\n\n")[-1].split("\n", 1)
        assert kind in ("event: result", "event: error"), response.text[-300:]
        outcome = json.loads(data.removeprefix("data: "))
        assert outcome["success"] is True if kind == "event: result" else outcome["code"] in ERRORS, outcome
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(
            f"not JSON: {response.request.method} {response.request.url} -> {response.status_code} "
            f"{response.headers} {response.content[:300]!r}"
        ) from None
    if response.status_code < 300:
        assert body["success"] is True and "data" in body, (str(response.request.url), body)
    else:
        assert body["success"] is False, body
        assert body["error"]["code"] in ERRORS and isinstance(body["error"]["message"], str), body


@pytest.fixture(scope="module")
def fuzz_service():
    running = ServiceProcess(FUNCTIONS / "fuzz.yaml", env={"SANDBOX_SESSION_POOL_SIZE": "0"})
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def http(fuzz_service: ServiceProcess):
    # follow_redirects: Starlette answers a path that differs from a route by a trailing slash with a 307
    with httpx.Client(base_url=fuzz_service.url, timeout=60, follow_redirects=True) as client:
        created = client.post(f"{SE}/session/{SESSION}")
        assert created.status_code == 200, created.text
        yield client


_calls = st.one_of(
    # files: write, read, list, upload
    st.builds(lambda name, body: ("POST", f"create/{SESSION}", {"json": {"filename": name, **body}}), _name,
              st.fixed_dictionaries({}, optional={"content": _value, "encoding": _value, "path": _value})),
    st.builds(lambda name: ("GET", f"download/{SESSION}/{_quote(name)}", {}), _name),
    st.builds(lambda name: ("GET", f"files/{SESSION}?path={_quote(name)}", {}), _name),
    st.builds(lambda name, path, data: ("POST", f"upload/{SESSION}", {"files": {"file": (name, data)},
                                                                       "data": {} if path is None else {"path": path}}),
              _encodable, st.none() | _encodable, st.binary(max_size=64)),
    st.builds(lambda raw, ctype: ("POST", f"upload/{SESSION}", {"content": raw, "headers": {"content-type": ctype}}),
              st.binary(max_size=200), st.sampled_from(["multipart/form-data", "multipart/form-data; boundary=x",
                                                        "multipart/form-data; boundary=", "text/plain"])),
    # executions with odd fields (mostly refused before anything runs)
    st.builds(lambda body: ("POST", f"execute_code/{SESSION}", {"json": body}),
              st.fixed_dictionaries({}, optional={"code": _value | _code,
                                                  "event": _value, "timeout": _value, "filename": _value,
                                                  "args": _value, "script_type": _value, "stream": _value})),
    st.builds(lambda body: ("POST", f"execute/{SESSION}", {"json": body}),
              st.fixed_dictionaries({}, optional={"command": st.one_of(_value, st.just("true")), "args": _value,
                                                  "timeout": _value, "stream": _value})),
    # sessions: odd ids and limits (a session that gets created is closed again)
    st.builds(lambda sid, body: ("POST", f"session/{_quote(sid)}", {"json": body}), _name,
              st.fixed_dictionaries({}, optional={"memory_limit": _value, "cpu_quota": _value, "timeout": _value,
                                                  "allow_network": _value, "stateful": _value})),
    st.builds(lambda sid, op: ("GET" if op in ("status", "files") else "POST" if op != "session" else "DELETE",
                               f"{op}/{_quote(sid)}", {}), _name,
              st.sampled_from(["status", "files", "session", "execute", "execute_code", "create", "upload"])),
    # anything else under the prefix, and bodies that are not JSON objects
    st.builds(lambda method, rest: (method, rest, {}), st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
              st.text(max_size=30).map(_quote)),
    st.builds(lambda raw: ("POST", f"create/{SESSION}", {"content": raw}), st.binary(max_size=100) |
              st.sampled_from([b"[]", b"null", b"NaN", b'{"filename": NaN}', b'"x"', b"{" * 3])),
)  # fmt: skip


def test_the_sessions_api_answers_anything_with_its_envelope(fuzz_service: ServiceProcess, http: httpx.Client) -> None:
    before = Snapshot(fuzz_service)
    calls: list[int] = []

    @fuzz_settings(80)
    @given(_calls)
    def run(call: tuple[str, str, dict]) -> None:
        method, path, kwargs = call
        if "json" in kwargs:  # NaN, Infinity and lone surrogates too, which a JSON parser may take
            body = {key: value for key, value in kwargs.items() if key != "json"}
            kwargs = {**body, "content": json.dumps(kwargs["json"]).encode("utf-8", "surrogatepass")}
        response = http.request(method, f"{SE}/{path}", **kwargs)
        calls.append(response.status_code)
        _check(response)
        if method == "POST" and path.startswith("session/") and response.status_code == 200:
            http.delete(f"{SE}/{path}")

    run()
    done = http.post(f"{SE}/execute/{SESSION}", json={"command": "echo", "args": ["still here"]})
    assert done.status_code == 200 and done.json()["data"]["stdout"] == "still here\n", done.text
    assert fuzz_service.health()["status"] == "healthy"
    listed = http.get(f"{SE}/files/{SESSION}")
    assert listed.status_code == 200
    print(f"sessions fuzz: {len(calls)} requests; before: {before}; after: {assert_no_leak(fuzz_service, before)}")
