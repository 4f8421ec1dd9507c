"""Schema-driven fuzzing: schemathesis generates requests for every operation of the service's own
GET /openapi.json (runtime_api/openapi.py) and checks each answer: no 5xx, a documented status code,
Content-Type and headers, a body that matches the documented schema.

The service is this module's own (its functions come from tests/functions/fuzz.yaml): DeleteFunction,
UpdateFunctionConfiguration and the others may change it in any way without touching other tests.
Path parameters are steered half of the time to names that exist (a function, an alias, the session
"fuzz"), or the control plane would answer 404 to almost everything.
"""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from conftest import FUNCTIONS, ServiceProcess
from fuzz_support import Snapshot, assert_no_leak, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runtime_api.app import routes
from runtime_api.openapi import document

pytestmark = pytest.mark.slow

ARN = "arn:aws:lambda:us-east-1:123456789012:function"
KNOWN = {
    "FunctionName": ["echo", "echo:$LATEST", "echo:live", "echo:1", f"{ARN}:echo", "123456789012:function:echo",
                     "arn:aws:lambda:eu-west-1:123456789012:function:echo", "fail", "runtime-fuzz"],
    "Name": ["live", "1", "$LATEST"],
    "Resource": [f"{ARN}:echo", f"{ARN}:echo:live", f"{ARN}:fail"],
    "session_id": ["fuzz"],
    "filename": ["a.txt", "../etc/passwd", "sub/dir/x", "%2e%2e/x"],
}  # fmt: skip


def documented_server_errors_only(ctx, response, case) -> None:
    """Instead of schemathesis' not_a_server_error: a 5xx the operation documents for a state the input can
    bring about is an answer, not a failure; e.g. Invoke's 502 InvalidRuntimeException for a function that
    a fuzzed UpdateFunctionConfiguration moved to a runtime this machine cannot run. A 500 (ServiceException,
    INTERNAL_ERROR: the service's own failure) and anything undocumented fail."""
    status = response.status_code
    if status < 500:
        return
    documented = case.operation.definition.raw["responses"].get(str(status))
    values = [v for k, v in response.headers.items() if k.lower() == "x-amzn-errortype"]
    error_type = (values[0][0] if isinstance(values[0], list) else values[0]) if values else None
    types = ((documented or {}).get("headers", {}).get("x-amzn-ErrorType") or {}).get("schema", {}).get("enum")
    if status == 500 or documented is None or (types is not None and error_type not in types):
        raise AssertionError(f"server error {status} {error_type or ''}: {response.text[:500]}")


CHECKS = [
    documented_server_errors_only,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_service():
    running = ServiceProcess(
        FUNCTIONS / "fuzz.yaml", env={"SANDBOX_EVENT_RETRY_DELAY": "0.2", "SANDBOX_SESSION_POOL_SIZE": "0"}
    )
    created = httpx.post(f"{running.url}/workspace/se/session/fuzz", timeout=60)
    assert created.status_code == 200, created.text
    before = Snapshot(running)
    yield running
    httpx.post(f"{running.url}/workspace/se/cleanup-all", timeout=60)  # sessions the fuzzing created
    print(f"openapi fuzz: {assert_no_leak(running, before)} (before: {before})")
    assert running.health()["status"] == "healthy"
    assert running.stop() == 0


DOCUMENT = document(routes(mcp=object()))  # what GET /openapi.json serves (checked below)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [(path, method.upper()) for path, methods in DOCUMENT["paths"].items() for method in methods]


def test_the_service_serves_the_document(fuzz_service: ServiceProcess) -> None:
    served = httpx.get(f"{fuzz_service.url}/openapi.json", timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json() == json.loads(json.dumps(DOCUMENT))


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{method} {path}" for path, method in OPERATIONS])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(
    fuzz_service: ServiceProcess, path: str, method: str, mode: GenerationMode
) -> None:
    """Positive: requests the document allows, every answer checked against it. Negative: requests it
    does not allow (a wrong type, a value out of bounds, a missing member), answered without a 5xx."""
    operation = SCHEMA[path][method]
    if mode is GenerationMode.NEGATIVE and not _has_input(operation.definition.raw):
        pytest.skip("nothing to make invalid: no parameters, no body")

    @fuzz_settings(15)
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case, data) -> None:
        for name, choices in KNOWN.items():
            if name in (case.path_parameters or {}) and data.draw(st.booleans(), label=f"known {name}"):
                case.path_parameters[name] = data.draw(st.sampled_from(choices), label=name)
        response = case.call(base_url=fuzz_service.url, timeout=60)
        checks = CHECKS if mode is GenerationMode.POSITIVE else [documented_server_errors_only]
        case.validate_response(response, checks=checks)

    run()


def _has_input(definition: dict) -> bool:
    return bool(definition.get("parameters") or definition.get("requestBody"))
