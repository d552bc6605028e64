"""The bridge's OpenAPI 3.1 document, served at GET /openapi.json (public, like the probes).

The routes are described in openapi_paths.py; every body schema is generated from the pydantic
models the handlers parse with (legacy/request.py, openai/request.py) and the reply models beside
each protocol (legacy/replies.py, openai/replies.py, knowledge_base/replies.py, ...). The document
is committed as bridge/openapi.json, which is what the bridge serves; after changing a route or a
model, regenerate it with `python -m chatllm.bridge.openapi`. tests/unit/test_openapi.py fails when
the committed file is stale, invalid, or lists other routes than the app.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chatllm.bridge.anthropic.openapi import messages_paths
from chatllm.bridge.anthropic.schemas import MESSAGE_MODELS
from chatllm.bridge.errors import Error
from chatllm.bridge.health import Alive, Readiness
from chatllm.bridge.knowledge_base.replies import (
    DeletedDocument,
    DeletedKnowledgeBase,
    DocumentList,
    KnowledgeBaseList,
    UploadError,
    UploadResult,
)
from chatllm.bridge.legacy.replies import LegacyReply
from chatllm.bridge.legacy.request import LegacyRequest
from chatllm.bridge.openai.replies import (
    ChatCompletion,
    Completion,
    DetokenizeResult,
    EmbeddingList,
    Model,
    ModelList,
    TokenizeResult,
)
from chatllm.bridge.openai.request import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from chatllm.bridge.openapi_paths import (
    TAIL,
    TOKEN,
    Schema,
    knowledge_base_paths,
    legacy_operations,
    openai_paths,
    operations_paths,
    web_page_paths,
)
from chatllm.bridge.responses.openapi import responses_paths
from chatllm.bridge.responses.request import ResponseCreateRequest
from chatllm.bridge.responses.schemas import RESPONSE_MODELS
from chatllm.bridge.usage import UsageReport
from chatllm.bridge.web_page import Info

REQUESTS: tuple[type[BaseModel], ...] = (
    LegacyRequest,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    TokenizeRequest,
    DetokenizeRequest,
    ResponseCreateRequest,
)
RESPONSES: tuple[type[BaseModel], ...] = (
    Error,
    UploadError,
    LegacyReply,
    ChatCompletion,
    Completion,
    Model,
    ModelList,
    EmbeddingList,
    TokenizeResult,
    DetokenizeResult,
    KnowledgeBaseList,
    DocumentList,
    UploadResult,
    DeletedDocument,
    DeletedKnowledgeBase,
    Info,
    Alive,
    Readiness,
    UsageReport,
)
UPLOAD_FORM: Schema = {
    "type": "object",
    "properties": {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "description": "one or more files: .txt .md .docx .pdf",
        }
    },
    "required": ["file"],
}


def all_schemas() -> dict[str, Schema]:
    """Every body schema, generated from the models (a reply's field with a default may be absent)."""
    models = [(m, "validation") for m in (*REQUESTS, *RESPONSES, *RESPONSE_MODELS, *MESSAGE_MODELS)]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    return {**top["$defs"], "UploadForm": UPLOAD_FORM}


DOCUMENT_FILE = Path(__file__).resolve().with_name("openapi.json")


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of the bridge."""
    paths: dict[str, Any] = {
        "/": legacy_operations(),
        **openai_paths(),
        **responses_paths(),
        **messages_paths(),
        **knowledge_base_paths(),
        **web_page_paths(),
        **operations_paths(),
        "/{tail}": legacy_operations("AnyPath", (TAIL,)),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ChatLLM Serve bridge",
            "version": "1",
            "description": "HTTP, WebSocket and OpenAI-compatible front of the ChatLLM gRPC server. "
            "Errors are always the Error object; with --token every route but the probes, /metrics "
            "(unless --protect-metrics), this document and the web page needs `Authorization: <token>` "
            "(a `Bearer ` prefix is accepted).",
        },
        "servers": [{"url": "http://localhost:8000", "description": "`chatllm serve` / `chatllm bridge` default"}],
        "security": TOKEN,
        "tags": [{"name": name} for name in ("legacy", "openai", "anthropic", "knowledge-base", "web", "operations")],
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
            "schemas": all_schemas(),
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


@functools.cache
def _served_bytes() -> bytes:
    return DOCUMENT_FILE.read_bytes()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_served_bytes(), content_type="application/json")


if __name__ == "__main__":
    DOCUMENT_FILE.write_text(render())
    print(f"wrote {DOCUMENT_FILE}")
