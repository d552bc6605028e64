"""Anthropic's Messages API routes, as route table entries (errors in Anthropic's shape)."""

from __future__ import annotations

from chatllm.bridge.anthropic import handlers
from chatllm.bridge.anthropic.replies import AnthropicError, AnthropicMessage, MessageStreamEvent, TokenCount
from chatllm.bridge.anthropic.request import CountTokensRequest, MessagesRequest
from chatllm.bridge.routes import JSON, SSE, EventStream, Json, Reply, Route, Surface, generation_route, json_body

TAG = "anthropic"
STREAM = """With `stream: true`, Anthropic's events as SSE (`event: <type>` and `data: <event>`): message_start, ping,
per content block content_block_start, content_block_delta (text_delta or input_json_delta)..., content_block_stop;
then message_delta (stop_reason, stop_sequence, usage) and message_stop; a failure mid-stream is an `error` event.
Errors are AnthropicError objects; `anthropic-version` and `anthropic-beta` headers are accepted."""
ROUTES = (
    generation_route(
        "/v1/messages",
        "anthropic_messages",
        handlers.create_message,
        "createMessage",
        TAG,
        "Anthropic's Messages API: a message, or its event stream",
        MessagesRequest,
        Reply(
            "the message, or its events as SSE when stream is true",
            {JSON: Json(AnthropicMessage), SSE: EventStream(MessageStreamEvent, failure=None)},
        ),
        description=STREAM,
        error_model=AnthropicError,
    ),
    Route(
        "POST",
        "/v1/messages/count_tokens",
        "anthropic_count_tokens",
        handlers.count_tokens,
        "countMessageTokens",
        TAG,
        "The tokens the model would read for a conversation (system, tools and messages)",
        {200: Reply("the count", {JSON: Json(TokenCount)})},
        (400, 401, 404, 502, 503, 504),
        error_model=AnthropicError,
        surface=Surface.API,
        body=json_body(CountTokensRequest),
    ),
)
