"""runtime_api/openapi.py: the document of GET /openapi.json is valid OpenAPI and describes every route."""

from __future__ import annotations

import re

import botocore.session
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from runtime_api.app import routes
from runtime_api.openapi import document
from runtime_api.openapi_local import EXCLUDED_PATHS


@pytest.fixture(scope="module")
def table() -> list[Route]:
    return [route for route in routes(mcp=object()) if isinstance(route, Route)]


@pytest.fixture(scope="module")
def doc(table: list[Route]) -> dict:
    return document(table)


def _skeleton(path: str) -> str:
    """A path with its parameters blanked and no trailing slash: Starlette's and OpenAPI's spellings meet."""
    return re.sub(r"\{[^}]*\}", "{}", path).rstrip("/") or "/"


def test_the_document_is_valid_openapi(doc: dict) -> None:
    assert doc["openapi"].startswith("3.")
    validate(doc)


def test_every_route_is_described_or_excluded_with_a_reason(table: list[Route], doc: dict) -> None:
    described = {(_skeleton(path), method.upper()) for path, ops in doc["paths"].items() for method in ops}
    excluded = {_skeleton(path) for path in EXCLUDED_PATHS}
    missing = []
    for route in table:
        if _skeleton(route.path) in excluded:
            continue
        for method in route.methods or ():
            if method != "HEAD" and (_skeleton(route.path), method) not in described:
                missing.append(f"{method} {route.path}")
    assert not missing, f"routes neither in /openapi.json nor in EXCLUDED_PATHS: {missing}"
    assert all(EXCLUDED_PATHS.values())


def test_every_described_path_is_served(table: list[Route], doc: dict) -> None:
    served = {_skeleton(route.path) for route in table}
    assert {_skeleton(path) for path in doc["paths"]} <= served


def test_lambda_operations_come_from_the_botocore_model(doc: dict) -> None:
    model = botocore.session.get_session().get_service_model("lambda")
    invoke = doc["paths"]["/2015-03-31/functions/{FunctionName}/invocations"]["post"]
    assert invoke["operationId"] == "Invoke"
    params = {(p["in"], p["name"]): p for p in invoke["parameters"]}
    assert params["header", "X-Amz-Invocation-Type"]["schema"]["enum"] == ["Event", "RequestResponse", "DryRun"]
    assert params["query", "Qualifier"]["schema"]["maxLength"] == 128
    assert params["path", "FunctionName"]["required"] is True
    assert set(invoke["requestBody"]["content"]) == {"application/json", "application/octet-stream"}  # raw payload
    assert {"200", "202", "204", "400", "404", "413", "429", "500"} <= set(invoke["responses"])
    assert "ResourceNotFoundException" in invoke["responses"]["404"]["headers"]["x-amzn-ErrorType"]["schema"]["enum"]
    create = doc["paths"]["/2015-03-31/functions"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    shape = model.operation_model("CreateFunction").input_shape
    assert set(body["properties"]) == set(shape.members)
    assert set(body["required"]) == set(shape.required_members)
    assert body["properties"]["MemorySize"] == {"type": "integer", "minimum": 128, "maximum": 32768}
    assert body["properties"]["Code"] == {"$ref": "#/components/schemas/FunctionCode"}
    assert doc["components"]["schemas"]["FunctionCode"]["properties"]["ZipFile"]["contentEncoding"] == "base64"
    assert "201" in create["responses"]
    untag = doc["paths"]["/2017-03-31/tags/{Resource}"]["delete"]
    keys = next(p for p in untag["parameters"] if p["name"] == "tagKeys")
    assert keys["in"] == "query" and keys["schema"]["type"] == "array" and keys["required"] is True


def test_operations_the_service_does_not_serve_are_left_out(doc: dict) -> None:
    ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert "GetPolicy" not in ids and "CreateFunctionUrlConfig" not in ids
    assert {"Invoke", "InvokeWithResponseStream", "InvokeAsync", "CreateFunction", "ListFunctions"} <= ids
