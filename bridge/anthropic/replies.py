"""What /v1/messages answers, as pydantic models (Anthropic's shapes): the message, the token count, the
error, and the events of the message stream (written as JSON text per token by shapes.py; a test checks
them against these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from chatllm.bridge.reply_parts import Body


class AnthropicUsage(Body):
    input_tokens: int = Field(description="prompt tokens read afresh (the cached ones are cache_read_input_tokens)")
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int = Field(description="prompt tokens whose KV cache was reused (prefix caching)")


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class AnthropicMessage(Body):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]] = Field(description="text blocks and tool_use blocks ({type, id, name, input})")
    stop_reason: StopReason | None
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


class MessageStartEvent(Body):
    type: Literal["message_start"]
    message: AnthropicMessage


class PingEvent(Body):
    type: Literal["ping"]


class ContentBlockStartEvent(Body):
    type: Literal["content_block_start"]
    index: int
    content_block: dict[str, Any] = Field(description="an empty text block, or a tool_use block ({type, id, name})")


class TextDelta(Body):
    type: Literal["text_delta"]
    text: str


class InputJsonDelta(Body):
    type: Literal["input_json_delta"]
    partial_json: str


class ContentBlockDeltaEvent(Body):
    type: Literal["content_block_delta"]
    index: int
    delta: Annotated[TextDelta | InputJsonDelta, Field(discriminator="type")]


class ContentBlockStopEvent(Body):
    type: Literal["content_block_stop"]
    index: int


class MessageDelta(Body):
    stop_reason: StopReason
    stop_sequence: str | None


class MessageDeltaEvent(Body):
    type: Literal["message_delta"]
    delta: MessageDelta
    usage: AnthropicUsage


class MessageStopEvent(Body):
    type: Literal["message_stop"]


class StreamErrorEvent(Body):
    """A failure mid-stream."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class MessageStreamEvent(
    RootModel[
        Annotated[
            MessageStartEvent
            | PingEvent
            | ContentBlockStartEvent
            | ContentBlockDeltaEvent
            | ContentBlockStopEvent
            | MessageDeltaEvent
            | MessageStopEvent
            | StreamErrorEvent,
            Field(discriminator="type"),
        ]
    ]
):
    """One event of a streamed message (`event:` names its type)."""
