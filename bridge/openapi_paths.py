"""The bridge's routes as OpenAPI path items: each operation's summary, parameters, replies and
error statuses. The body schemas they point at (`#/components/schemas/...`) are generated from the
pydantic models in chatllm.bridge.openapi, which assembles the document."""

from __future__ import annotations

from typing import Any

from chatllm.kernel.request_rules import KNOWLEDGE_BASE_NAME_PATTERN

Schema = dict[str, Any]
# A text/event-stream body is described per event (OpenAPI 3.2's itemSchema; schemathesis reads it so).
SSE_EVENT: Schema = {
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


TOKEN: list[dict[str, list[str]]] = [{"token": []}]
PUBLIC: list[dict[str, list[str]]] = []
ERROR_REASONS = {
    400: "bad input: `error.param` and the start of `error.message` name the field",
    401: "missing or wrong token (only when the server runs with --token)",
    403: "forbidden path",
    404: "no such route, document or knowledge base, or the API is off (--no-api / --api-only)",
    413: "body over --max-body-bytes, or a file over --max-upload-bytes",
    429: "overloaded: --max-concurrent generating and --max-queue waiting; retry after Retry-After seconds",
    502: "the upstream gRPC server is unreachable or failed the request",
    503: "the server is loading or draining, the knowledge base is off, or too many WebSockets",
    504: "--request-timeout passed",
}
GENERATION_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)
UPSTREAM_ERRORS = (401, 502, 503, 504)
WEBSOCKET = """WebSocket (send `Upgrade: websocket`; the token goes in the handshake's Authorization header).
Each client frame (text, or UTF-8 binary) is a LegacyRequest as JSON, or a bare prompt. The answer comes
as text frames with the deltas (`use_stream_chat` defaults to true here), or one frame with the whole answer
when it is false, then a frame that is exactly `<EOS>`. With `langchain: true` a `{"sources": [...]}` frame
comes just before `<EOS>`. With `"stream_format": "events"`: `{"delta": "..."}` frames, then one
`{"final": {finish_reason, usage, timings, sources, request_id}}`. A failed round sends one Error object as a
frame, then `<EOS>`: a client that reads until `<EOS>` never hangs. Frames are answered in order; the
connection keeps its history (trimmed to max_round); a frame with `history` replaces it. Closing the socket
mid-answer cancels the answer. More than --ws-max-pending queued frames closes the socket with 1013 (try
again later); a draining server finishes the answer in progress and closes with 1001."""
LEGACY = """The PAI-EAS ChatLLM protocol. A body that is not JSON (or sent as text/plain) is the prompt itself.
Without `use_stream_chat` (or with false): one LegacyReply. With `use_stream_chat: true`: a stream of
LegacyReply objects, each followed by one NUL byte (`\\u0000`), `response` being the whole answer so far;
with `Accept: text/event-stream` the same objects come as SSE `data:` events. A failure before the first
object keeps its HTTP status; a failure mid-stream ends the stream with one Error object."""


def json_body(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def errors(*statuses: int, schema: str = "Error") -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {"description": ERROR_REASONS[status], "content": json_body(ref(schema))}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
        responses[str(status)] = response
    return responses


def operation(operation_id: str, tag: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "tags": [tag], "summary": summary, **extra, "responses": responses}


def path_parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


REQUEST_ID = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "your id for the request (printable, at most 128 characters); echoed back",
    "schema": {"type": "string"},
}
REQUEST_ID_HEADER = {"X-Request-Id": {"description": "the request's id", "schema": {"type": "string"}}}
TAIL = path_parameter("tail", "any path: a deployment may put any prefix in front")


def legacy_operations(suffix: str = "", parameters: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    post = operation(
        f"legacyChat{suffix}",
        "legacy",
        "Ask a question (PAI-EAS ChatLLM: JSON or plain text; one reply, NUL-delimited or SSE stream)",
        {
            "200": {
                "description": "the answer: one LegacyReply (JSON), NUL-delimited LegacyReply objects "
                "(text/plain) or LegacyReply objects as SSE data events (text/event-stream)",
                "headers": REQUEST_ID_HEADER,
                "content": {
                    **json_body(ref("LegacyReply")),
                    "text/plain": text,
                    "text/event-stream": {"schema": SSE_EVENT},
                },
            },
            **errors(*GENERATION_ERRORS),
        },
        description=LEGACY,
        security=TOKEN,
        parameters=[*parameters, REQUEST_ID],
        requestBody={
            "required": True,
            "description": "a LegacyRequest, or the prompt itself as text/plain",
            "content": {**json_body(ref("LegacyRequest")), "text/plain": text},
        },
    )
    get = operation(
        f"webPageOrWebSocket{suffix}",
        "legacy",
        "The web chat page at `/` (404 on other paths); with Upgrade: websocket, the WebSocket API on any path",
        {
            "101": {"description": "WebSocket accepted"},
            "200": {"description": "the web chat page", "content": {"text/html": {"schema": {"type": "string"}}}},
            **errors(401, 404, 503),
        },
        description=WEBSOCKET,
        security=PUBLIC,
        **({"parameters": list(parameters)} if parameters else {}),
    )
    return {"get": get, "post": post}


def openai_paths() -> dict[str, Any]:
    def completion(operation_id: str, request: str, reply: str, summary: str) -> dict[str, Any]:
        return {
            "post": operation(
                operation_id,
                "openai",
                summary,
                {
                    "200": {
                        "description": "the completion, or SSE chunks ending with `data: [DONE]` when stream is true",
                        "headers": REQUEST_ID_HEADER,
                        "content": {**json_body(ref(reply)), "text/event-stream": {"schema": SSE_EVENT}},
                    },
                    **errors(*GENERATION_ERRORS),
                },
                security=TOKEN,
                parameters=[REQUEST_ID],
                requestBody={"required": True, "content": json_body(ref(request))},
            )
        }

    def simple(operation_id: str, summary: str, request: str, reply: str) -> dict[str, Any]:
        return operation(
            operation_id,
            "openai",
            summary,
            {
                "200": {"description": "the result", "content": json_body(ref(reply))},
                **errors(400, 404, *UPSTREAM_ERRORS),
            },
            security=TOKEN,
            requestBody={"required": True, "content": json_body(ref(request))},
        )

    unknown = operation(
        "openaiUnknownRoute",
        "openai",
        "Any other /v1/ route and method: a 404 error object",
        errors(401, 404),
        security=TOKEN,
        parameters=[TAIL],
    )
    return {
        "/v1/chat/completions": completion(
            "createChatCompletion", "ChatCompletionRequest", "ChatCompletion", "OpenAI-compatible chat completion"
        ),
        "/v1/completions": completion(
            "createCompletion", "CompletionRequest", "Completion", "OpenAI-compatible completion of a raw prompt"
        ),
        "/v1/embeddings": {
            "post": simple(
                "createEmbedding",
                "Embeddings of texts (the knowledge base's embedder)",
                "EmbeddingRequest",
                "EmbeddingList",
            )
        },
        "/tokenize": {
            "post": simple(
                "tokenize",
                "Token ids of a prompt, or of messages rendered with the chat template (vLLM's shape)",
                "TokenizeRequest",
                "TokenizeResult",
            )
        },
        "/detokenize": {
            "post": simple("detokenize", "Text of token ids (vLLM's shape)", "DetokenizeRequest", "DetokenizeResult")
        },
        "/v1/models": {
            "get": operation(
                "listModels",
                "openai",
                "The served model",
                {
                    "200": {"description": "models", "content": json_body(ref("ModelList"))},
                    **errors(404, *UPSTREAM_ERRORS),
                },
                security=TOKEN,
            )
        },
        "/v1/models/{model}": {
            "get": operation(
                "getModel",
                "openai",
                "One served model",
                {
                    "200": {"description": "the model", "content": json_body(ref("Model"))},
                    **errors(404, *UPSTREAM_ERRORS),
                },
                security=TOKEN,
                parameters=[path_parameter("model", "the model id")],
            )
        },
        "/v1/{tail}": {"get": unknown, "post": {**unknown, "operationId": "openaiUnknownRoutePost"}},
    }


def knowledge_base_paths() -> dict[str, Any]:
    kb = path_parameter("kb", "knowledge base name", pattern=KNOWLEDGE_BASE_NAME_PATTERN)
    document_id = path_parameter("id", "document id (64 hex characters)")
    kb_errors = errors(400, 404, 413, *UPSTREAM_ERRORS)

    def ok(schema: str, description: str) -> dict[str, Any]:
        return {"200": {"description": description, "content": json_body(ref(schema))}}

    upload = operation(
        "uploadDocuments",
        "knowledge-base",
        "Upload documents (multipart fields named `file`); each file is stored whole or not at all",
        {**ok("UploadResult", "the stored documents"), **errors(400, 404, 413, *UPSTREAM_ERRORS, schema="UploadError")},
        security=TOKEN,
        parameters=[kb],
        requestBody={"required": True, "content": {"multipart/form-data": {"schema": ref("UploadForm")}}},
    )
    return {
        "/api/kb": {
            "get": operation(
                "listKnowledgeBases",
                "knowledge-base",
                "Knowledge bases with their sizes",
                {**ok("KnowledgeBaseList", "the knowledge bases"), **errors(*UPSTREAM_ERRORS)},
                security=TOKEN,
            )
        },
        "/api/kb/{kb}": {
            "delete": operation(
                "deleteKnowledgeBase",
                "knowledge-base",
                "Delete a whole knowledge base",
                {**ok("DeletedKnowledgeBase", "what was deleted"), **kb_errors},
                security=TOKEN,
                parameters=[kb],
            )
        },
        "/api/kb/{kb}/documents": {
            "get": operation(
                "listDocuments",
                "knowledge-base",
                "The documents of a knowledge base",
                {**ok("DocumentList", "the documents"), **kb_errors},
                security=TOKEN,
                parameters=[kb],
            ),
            "post": upload,
        },
        "/api/kb/{kb}/documents/{id}": {
            "delete": operation(
                "deleteDocument",
                "knowledge-base",
                "Delete one document",
                {**ok("DeletedDocument", "what was deleted"), **kb_errors},
                security=TOKEN,
                parameters=[kb, document_id],
            )
        },
    }


def operations_paths() -> dict[str, Any]:
    plain = {"text/plain": {"schema": {"type": "string"}}}
    day = {"in": "query", "required": False, "schema": {"type": "string", "format": "date"}}
    return {
        "/api/usage": {
            "get": operation(
                "usage",
                "operations",
                "Tokens used per token name, model and UTC day, from the state store (admin tokens only)",
                {
                    "200": {"description": "the usage", "content": json_body(ref("UsageReport"))},
                    **errors(400, 401, 403, 503),
                },
                security=TOKEN,
                parameters=[
                    {**day, "name": "start", "description": "first UTC day, YYYY-MM-DD (default: unbounded)"},
                    {**day, "name": "end", "description": "last UTC day, YYYY-MM-DD (default: unbounded)"},
                    {
                        "in": "query",
                        "name": "token",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "only this token name",
                    },
                ],
            )
        },
        "/healthz": {
            "get": operation(
                "liveness",
                "operations",
                "Liveness: the bridge process answers",
                {"200": {"description": "alive", "content": json_body(ref("Alive"))}},
                security=PUBLIC,
            )
        },
        "/readyz": {
            "get": operation(
                "readiness",
                "operations",
                "Readiness: the upstream server reports SERVING and the bridge is not draining",
                {
                    "200": {"description": "ready", "content": json_body(ref("Readiness"))},
                    "503": {"description": "not ready, or draining", "content": json_body(ref("Readiness"))},
                },
                security=PUBLIC,
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "operations",
                "Prometheus metrics (open by default; --protect-metrics requires the token)",
                {"200": {"description": "text exposition format", "content": plain}, **errors(401)},
                security=[{}, {"token": []}],
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapiDocument",
                "operations",
                "This document",
                {"200": {"description": "OpenAPI 3.1 document", "content": json_body({"type": "object"})}},
                security=PUBLIC,
            )
        },
    }


def web_page_paths() -> dict[str, Any]:
    return {
        "/api/info": {
            "get": operation(
                "serverInfo",
                "web",
                "The served model, the server's state and limits, and the model catalogue",
                {"200": {"description": "info", "content": json_body(ref("Info"))}, **errors(*UPSTREAM_ERRORS)},
                security=TOKEN,
            )
        },
        "/api/chat": {
            "get": operation(
                "webPageSocket",
                "web",
                "The web page's WebSocket: the legacy WebSocket protocol, kept with --no-api",
                {"101": {"description": "WebSocket accepted"}, **errors(400, 401, 503)},
                description=WEBSOCKET + " Same-origin browsers may send the token in the `chatllm_token` cookie.",
                security=TOKEN,
            )
        },
        "/static/{filename}": {
            "get": operation(
                "staticFile",
                "web",
                "The web page's scripts and styles",
                {
                    "200": {"description": "the file", "content": {"*/*": {"schema": {"type": "string"}}}},
                    **errors(403, 404),
                },
                security=PUBLIC,
                parameters=[path_parameter("filename", "file under bridge/static/")],
            )
        },
    }
