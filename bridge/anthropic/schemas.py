"""What /v1/messages answers, as pydantic models (the OpenAPI document's schemas; Anthropic's shapes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from chatllm.bridge.reply_parts import Body


class AnthropicUsage(Body):
    input_tokens: int = Field(description="prompt tokens read afresh (the cached ones are cache_read_input_tokens)")
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int = Field(description="prompt tokens whose KV cache was reused (prefix caching)")


class AnthropicMessage(Body):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]] = Field(description="text blocks and tool_use blocks ({type, id, name, input})")
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: AnthropicUsage


class TokenCount(Body):
    input_tokens: int


class AnthropicErrorDetail(Body):
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, rate_limit_error, ...")
    message: str = Field(description="what went wrong; for a bad field it starts with `field: `")


class AnthropicError(Body):
    """Every error of the Messages routes (Anthropic's shape)."""

    type: Literal["error"]
    error: AnthropicErrorDetail


MESSAGE_MODELS = (AnthropicMessage, TokenCount, AnthropicError)
