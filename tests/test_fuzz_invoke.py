"""Property tests of the Invoke API (runtime_api/invoke.py): any payload, name, qualifier and header gets
an AWS-shaped answer (invoke-api.md §2.3-2.6) and never a 5xx.

An error answer carries `x-amzn-ErrorType` and a JSON body with `Type` and `message`/`Message`; a success
is 200 (RequestResponse, `X-Amz-Executed-Version`), 202 (Event, empty) or 204 (DryRun, empty); every
answer has an `x-amzn-RequestId`.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import httpx
import pytest
from conftest import FUNCTIONS, ServiceProcess
from fuzz_support import Snapshot, assert_no_leak, fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st

from runtime_api.invocation import MAX_REQUEST_BYTES

pytestmark = pytest.mark.slow

ACCOUNT, REGION = "123456789012", "us-east-1"

_name = st.one_of(
    st.sampled_from(["echo", "fail", "missing", "echo:$LATEST", "echo:$latest", "echo:1", "echo:live", "fail:"]),
    st.builds(
        lambda partition, region, account, name, qualifier: (
            f"arn:{partition}:lambda:{region}:{account}:function:{name}{qualifier}"
        ),
        st.sampled_from(["aws", "aws-cn", "", "x"]),
        st.sampled_from([REGION, "eu-west-1", "", "us-east-1x"]),
        st.sampled_from([ACCOUNT, "000000000000", "", "12"]),
        st.sampled_from(["echo", "fail", "nope", ""]),
        st.sampled_from(["", ":$LATEST", ":1", ":live", ":", "::"]),
    ),
    st.builds(lambda name: f"{ACCOUNT}:function:{name}", st.sampled_from(["echo", "echo:$LATEST", "x" * 70])),
    st.builds(lambda name: f"function:{name}", st.sampled_from(["echo", "fail"])),
    st.text(min_size=1, max_size=80),
    st.sampled_from(["x" * 64, "x" * 65, "a" * 300, ".", "..", "%", "a/b", "a b", "\x00", "é", "\ud800"]),
)
_qualifier = st.one_of(
    st.none(), st.sampled_from(["$LATEST", "$latest", "1", "live", "", "$LATEST.PUBLISHED", "x" * 200]), st.text()
)
_payload = st.one_of(
    st.binary(max_size=2048),
    st.builds(
        lambda value: json.dumps(value).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=20,
        ),
    ),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"{}",
            b"null",
            b'"\\ud800"',  # a lone surrogate: valid JSON, not valid Unicode
            b"\xef\xbb\xbf{}",  # a byte order mark
            b"\xff\xfe",
            b"NaN",
            b"[1e999999]",
            b"123456789012345678901234567890",
            b"{" * 10,
            b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than any parser's recursion
            b'{"a":' * 5000 + b"1" + b"}" * 5000,
        ]
    ),
)
_client_context = st.one_of(
    st.none(),
    st.builds(lambda v: base64.b64encode(json.dumps(v).encode()).decode(), st.dictionaries(st.text(max_size=5),
                                                                                         st.text(max_size=5))),
    st.builds(lambda raw: base64.b64encode(raw).decode(), st.binary(max_size=64)),
    st.sampled_from(["", "!!!", "e30", "W10=", "bnVsbA==", base64.b64encode(b"{" * 3000).decode(), "a" * 5000]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=50).map(str.strip),  # as HTTP allows
)  # fmt: skip
_enum = st.one_of(st.none(), st.sampled_from(["RequestResponse", "Event", "DryRun", "None", "Tail", "", "event"]))


# Invoke, InvokeWithResponseStream and InvokeAsync: the same name, payload and header handling
_ENDPOINTS = {
    "Invoke": "/2015-03-31/functions/{}/invocations",
    "InvokeWithResponseStream": "/2021-11-15/functions/{}/response-streaming-invocations",
    "InvokeAsync": "/2014-11-13/functions/{}/invoke-async/",
}


def _check_answer(response: httpx.Response, operation: str, invocation_type: str | None) -> None:
    assert response.status_code < 500, (response.status_code, response.headers, response.content[:500])
    assert response.headers.get("x-amzn-RequestId")
    if response.status_code >= 400:
        error_type = response.headers.get("x-amzn-ErrorType")
        assert error_type, response.headers
        body = response.json()
        assert body["Type"] in ("User", "Service"), body
        assert isinstance(body.get("message", body.get("Message")), str), body
    elif operation == "InvokeAsync":
        assert response.status_code == 202 and response.json() == {"Status": 202}
    elif response.status_code == 200:
        assert response.headers.get("X-Amz-Executed-Version"), response.headers
        assert invocation_type in (None, "RequestResponse")
        if operation == "InvokeWithResponseStream":
            assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    else:
        assert response.status_code == {"Event": 202, "DryRun": 204}[str(invocation_type)]
        assert response.content == b""


@pytest.fixture(scope="module")
def fuzz_service():
    running = ServiceProcess(FUNCTIONS / "fuzz.yaml", env={"SANDBOX_EVENT_RETRY_DELAY": "0.2"})
    yield running
    assert running.stop() == 0


@pytest.mark.parametrize("operation", list(_ENDPOINTS))
def test_invoke_answers_any_request_as_aws_does(fuzz_service: ServiceProcess, operation: str) -> None:
    service = fuzz_service
    client = httpx.Client(base_url=service.url, timeout=60)
    assert client.post("/2015-03-31/functions/echo/invocations", content=b"{}").status_code == 200
    before = Snapshot(service)

    @fuzz_settings(60)
    @given(
        name=_name,
        encode=st.booleans(),
        qualifier=_qualifier,
        payload=_payload,
        invocation_type=_enum,
        log_type=_enum,
        client_context=_client_context,
    )
    @example(name="echo", encode=True, qualifier=None, payload=b"[" * 100_000 + b"]" * 100_000,
             invocation_type=None, log_type=None, client_context=None)  # fmt: skip
    def run(
        name: str,
        encode: bool,
        qualifier: str | None,
        payload: bytes,
        invocation_type: str | None,
        log_type: str | None,
        client_context: str | None,
    ) -> None:
        path = urllib.parse.quote(name, safe="" if encode else ":$", errors="surrogatepass")
        params = {} if qualifier is None else {"Qualifier": qualifier.encode("utf-8", "surrogatepass")}
        headers = {}
        for header, value in (
            ("X-Amz-Invocation-Type", invocation_type),
            ("X-Amz-Log-Type", log_type),
            ("X-Amz-Client-Context", client_context),
        ):
            if value is not None:
                headers[header] = value
        response = client.post(_ENDPOINTS[operation].format(path), params=params, content=payload, headers=headers)
        _check_answer(response, operation, invocation_type)

    run()
    assert client.post("/2015-03-31/functions/echo/invocations", content=b'{"a": 1}').json() == {"a": 1}
    print(f"invoke fuzz: before: {before}; after: {assert_no_leak(service, before)}")


def test_payloads_at_and_over_the_limit(fuzz_service: ServiceProcess) -> None:
    client = httpx.Client(base_url=fuzz_service.url, timeout=60)
    over = client.post("/2015-03-31/functions/echo/invocations", content=b" " * (MAX_REQUEST_BYTES + 1))
    assert over.status_code == 413 and over.headers["x-amzn-ErrorType"] == "RequestTooLargeException"
    event = client.post(
        "/2015-03-31/functions/echo/invocations",
        content=b" " * (300 * 1024),
        headers={"X-Amz-Invocation-Type": "Event"},
    )
    assert event.status_code in (202, 413), event.text
