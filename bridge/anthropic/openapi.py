"""The /v1/messages routes as OpenAPI path items (bodies: request.py and schemas.py)."""

from __future__ import annotations

from typing import Any

from chatllm.bridge.openapi_paths import (
    GENERATION_ERRORS,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    SSE_EVENT,
    errors,
    json_body,
    operation,
    ref,
)

API_KEY: list[dict[str, list[str]]] = [{"token": []}, {"apiKey": []}]
STREAM = """With `stream: true`, Anthropic's events as SSE (`event: <type>` and `data: <event>`): message_start, ping,
per content block content_block_start, content_block_delta (text_delta or input_json_delta)..., content_block_stop;
then message_delta (stop_reason, stop_sequence, usage) and message_stop; a failure mid-stream is an `error` event.
Errors are AnthropicError objects; `anthropic-version` and `anthropic-beta` headers are accepted."""


def messages_paths() -> dict[str, Any]:
    create = operation(
        "createMessage",
        "anthropic",
        "Anthropic's Messages API: a message, or its event stream",
        {
            "200": {
                "description": "the message, or its events as SSE when stream is true",
                "headers": REQUEST_ID_HEADER,
                "content": {**json_body(ref("AnthropicMessage")), "text/event-stream": {"schema": SSE_EVENT}},
            },
            **errors(*GENERATION_ERRORS, schema="AnthropicError"),
        },
        description=STREAM,
        security=API_KEY,
        parameters=[REQUEST_ID],
        requestBody={"required": True, "content": json_body(ref("MessagesRequest"))},
    )
    count = operation(
        "countMessageTokens",
        "anthropic",
        "The tokens the model would read for a conversation (system, tools and messages)",
        {
            "200": {"description": "the count", "content": json_body(ref("TokenCount"))},
            **errors(400, 401, 404, 502, 503, 504, schema="AnthropicError"),
        },
        security=API_KEY,
        requestBody={"required": True, "content": json_body(ref("CountTokensRequest"))},
    )
    return {"/v1/messages": {"post": create}, "/v1/messages/count_tokens": {"post": count}}
