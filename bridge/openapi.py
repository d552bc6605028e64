"""The bridge's OpenAPI 3.1 document, generated from the route table (route_table.py): every route's
operation, and the schemas of the pydantic models its entries name (request bodies, replies, stream
events, WebSocket frames, errors). The bridge serves the committed bridge/openapi.json at
GET /openapi.json; after changing a route or a model, regenerate it with
`python -m chatllm.bridge.openapi`. tests/unit/test_openapi.py fails when the committed file is
stale, invalid, or lists other routes than the router.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chatllm.bridge.errors import ERROR_STATUSES, Error
from chatllm.bridge.health import DOCUMENT_FILE
from chatllm.bridge.route_table import ROUTES
from chatllm.bridge.routes import (
    Auth,
    Content,
    Json,
    NulStream,
    Raw,
    Reply,
    Route,
    Schema,
    openapi_path,
)
from chatllm.kernel.request_rules import KNOWLEDGE_BASE_NAME_PATTERN

TOKEN: list[dict[str, list[str]]] = [{"token": []}, {"apiKey": []}]
SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    Auth.TOKEN: TOKEN,
    Auth.SIGNED: TOKEN,
    Auth.PUBLIC: [],
    Auth.PAGE: [],
    Auth.METRICS: [{}, *TOKEN],
}
PATH_PARAMETERS: dict[str, Schema] = {
    "kb": {"description": "knowledge base name", "pattern": KNOWLEDGE_BASE_NAME_PATTERN},
    "id": {"description": "document id (64 hex characters)"},
    "model": {"description": "the model id"},
    "filename": {"description": "file under bridge/static/"},
    "tail": {"description": "any path: a deployment may put any prefix in front"},
}
REQUEST_ID = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "your id for the request (printable, at most 128 characters); echoed back",
    "schema": {"type": "string"},
}
REQUEST_ID_HEADER = {"X-Request-Id": {"description": "the request's id", "schema": {"type": "string"}}}
RETRY_AFTER_HEADER = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}


def ref(model: type[BaseModel]) -> Schema:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_event(model: type[BaseModel], failure: type[BaseModel] | None = Error) -> Schema:
    """A string holding one JSON object: `model`, or the `failure` that ends a failed stream."""
    either = {"anyOf": [ref(model), ref(failure)]} if failure is not None else ref(model)
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": either}


def media(content: Content) -> dict[str, Any]:
    if isinstance(content, Json):
        return {"schema": ref(content.model)}
    if isinstance(content, Raw):
        return {"schema": content.schema}
    if isinstance(content, NulStream):
        return {
            "schema": {"type": "string", "description": f"{content.item.__name__} objects, each followed by a NUL"},
            "x-item-schema": json_event(content.item)["contentSchema"],
        }
    # Server-sent events are described per event (OpenAPI 3.2's itemSchema; schemathesis reads it so).
    data = json_event(content.event, content.failure)
    if content.done:
        data = {"anyOf": [{"const": "[DONE]"}, data]}
    return {
        "schema": {
            "type": "object",
            "properties": {"data": data, "event": {"type": "string"}, "id": {"type": "string"}},
            "required": ["data"],
        }
    }


def reply(route: Route, status: int, documented: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": documented.description}
    if route.request_id and status == 200:
        out["headers"] = REQUEST_ID_HEADER
    if documented.content:
        out["content"] = {media_type: media(content) for media_type, content in documented.content.items()}
    if documented.websocket is not None:
        out["x-websocket-frames"] = {"anyOf": [ref(frame) for frame in documented.websocket.frames]}
    return out


def error(route: Route, status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": ERROR_STATUSES[status],
        "content": {"application/json": {"schema": ref(route.error_model)}},
    }
    if status in (429, 503):
        out["headers"] = RETRY_AFTER_HEADER
    return out


def parameters(route: Route, path: str) -> list[dict[str, Any]]:
    found = []
    for name in re.findall(r"\{(\w+)\}", path):
        described = {**PATH_PARAMETERS.get(name, {}), **route.parameters.get(name, {})}
        description = described.pop("description")  # every path parameter is described
        schema = {"type": "string", **described}
        found.append({"name": name, "in": "path", "required": True, "description": description, "schema": schema})
    for name, described in route.query.items():
        found.append({"name": name, "in": "query", "required": False, **described})
    return [*found, REQUEST_ID] if route.request_id else found


def operation(route: Route, operation_id: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id, "tags": [route.tag], "summary": route.summary}
    if route.description:
        op["description"] = route.description
    op["security"] = SECURITY[route.auth]
    if found := parameters(route, path):
        op["parameters"] = found
    if route.body is not None:
        body: dict[str, Any] = {"required": True}
        if route.body.description:
            body["description"] = route.body.description
        body["content"] = {media_type: media(content) for media_type, content in route.body.content.items()}
        op["requestBody"] = body
    replies = {str(status): reply(route, status, documented) for status, documented in sorted(route.replies.items())}
    op["responses"] = {**replies, **{str(status): error(route, status) for status in route.errors}}
    return op


def operations(route: Route) -> Iterator[tuple[str, str, str]]:
    """(path, method, operationId) of each operation a route serves: "*" is GET and POST; a catch-all's
    extra paths (`also_at`) come first, and keep the plain operationId."""
    paths = [*route.also_at, openapi_path(route.path)]
    methods = ("get", "post") if route.method == "*" else (route.method.lower(),)
    for path in paths:
        for method in methods:
            suffix = ("AnyPath" if path != paths[0] else "") + (method.capitalize() if method != methods[0] else "")
            yield path, method, route.operation_id + suffix


def models(routes: tuple[Route, ...]) -> list[type[BaseModel]]:
    """Every model the routes name, once, in the order they first appear."""
    found: dict[type[BaseModel], None] = {Error: None}
    for route in routes:
        found.update(dict.fromkeys(route.models()))
    return list(found)


def document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of the bridge."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for path, method, operation_id in operations(route):
            paths.setdefault(path, {})[method] = operation(route, operation_id, path)
    _, schemas = models_json_schema(
        [(model, "validation") for model in models(routes)], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ChatLLM Serve bridge",
            "version": "1",
            "description": "HTTP, WebSocket and OpenAI-compatible front of the ChatLLM gRPC server. "
            "Errors are the Error object (Anthropic's shape on its routes); with --token every route but the "
            "probes, /metrics (unless --protect-metrics), this document and the web page needs "
            "`Authorization: <token>` (a `Bearer ` prefix is accepted) or `x-api-key: <token>`.",
        },
        "servers": [{"url": "http://localhost:8000", "description": "`chatllm serve` / `chatllm bridge` default"}],
        "security": TOKEN,
        "tags": [{"name": tag} for tag in dict.fromkeys(route.tag for route in routes)],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "the server's --token, raw or as `Bearer <token>`",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "the server's --token, as Anthropic's clients send it (any route takes it)",
                },
            },
            "schemas": schemas["$defs"],
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    DOCUMENT_FILE.write_text(render())
    print(f"wrote {DOCUMENT_FILE}")
