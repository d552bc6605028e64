"""The bridge's OpenAPI document: fresh, valid OpenAPI 3, and exactly the routes the app registers."""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from openapi_spec_validator import validate

from chatllm.bridge.app import build_app
from chatllm.bridge.openapi import DOCUMENT_FILE, document, render
from chatllm.bridge.settings import BridgeSettings
from tests.servers import make_config

HTTP_METHODS = ("get", "post", "put", "delete", "patch", "options", "head", "trace")
SAMPLE_PARAMETERS = {
    "kb": "manuals",
    "id": "ab" * 32,
    "model": "m",
    "filename": "app.js",
    "tail": "some/prefix",
    "response_id": "resp_1",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> web.Application:
    return build_app(
        BridgeSettings.of(make_config(tmp_path_factory.mktemp("openapi"))), "127.0.0.1:1"
    )  # never connects


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def openapi_path(resource: web.AbstractResource) -> str:
    """aiohttp's pattern in OpenAPI templating: `{tail:.*}` -> `{tail}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", resource.canonical)


def test_the_committed_document_is_the_generated_one() -> None:
    assert json.loads(DOCUMENT_FILE.read_text()) == document(), "stale: run `python -m chatllm.bridge.openapi`"
    assert DOCUMENT_FILE.read_text() == render()


def test_the_document_is_valid_openapi_3() -> None:
    validate(json.loads(DOCUMENT_FILE.read_text()))  # raises OpenAPIValidationError naming the problem


def test_every_registered_route_is_documented(app: web.Application) -> None:
    documented = documented_operations()
    missing = []
    for resource in app.router.resources():
        path = openapi_path(resource)
        for route in resource:
            if route.method == "HEAD":
                continue  # aiohttp adds HEAD to every GET
            if route.method == "*":
                if not any(p == path for _, p in documented):
                    missing.append(f"* {path}")
            elif (route.method, path) not in documented:
                missing.append(f"{route.method} {path}")
    assert not missing, f"routes missing from bridge/openapi.json: {missing}"


async def test_every_documented_operation_reaches_its_route(app: web.Application) -> None:
    wrong = []
    for method, path in sorted(documented_operations()):
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMETERS[m.group(1)], path)
        match = await app.router.resolve(make_mocked_request(method, concrete, app=app))
        route = match.route
        if match.http_exception is not None or route.resource is None:
            wrong.append(f"{method} {path}: no route")
            continue
        reached = openapi_path(route.resource)
        # `/` is served by the catch-all routes (the legacy protocol answers on any path prefix).
        if reached != path and not (path == "/" and reached == "/{tail}"):
            wrong.append(f"{method} {path} reaches {reached}")
    assert not wrong, wrong


def test_errors_and_auth_are_described() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    error = schemas["Error"]["properties"]["error"]
    error = schemas[error["$ref"].rsplit("/", 1)[-1]] if "$ref" in error else error
    assert set(error["required"]) == {"message", "type", "param", "code", "status"}
    assert doc["components"]["securitySchemes"]["token"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "the server's --token, raw or as `Bearer <token>`",
    }
    public = {path for path, item in doc["paths"].items() for op in item.values() if op.get("security") == []}
    assert {"/healthz", "/readyz", "/openapi.json", "/static/{filename}"} <= public
    legacy = doc["paths"]["/"]["post"]
    assert set(legacy["requestBody"]["content"]) == {"application/json", "text/plain"}
    assert set(legacy["responses"]["200"]["content"]) == {"application/json", "text/plain", "text/event-stream"}
    assert "429" in legacy["responses"] and "Retry-After" in legacy["responses"]["429"]["headers"]
