"""What the OpenAI-compatible routes answer, as pydantic models (OpenAI's and vLLM's shapes): whole
replies, and the chunks of their SSE streams."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chatllm.bridge.reply_parts import Body, Usage


class FunctionCallOut(Body):
    name: str
    arguments: str


class ToolCallOut(Body):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(Body):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class TopLogprob(Body):
    token: str
    logprob: float
    bytes: list[int] = Field(description="the token's UTF-8 bytes")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Body):
    content: list[TokenLogprob]
    refusal: list[TokenLogprob] | None


ChatFinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(Body):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: ChatFinishReason | None


class ChatCompletion(Body):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(Body):
    tokens: list[str]
    token_logprobs: list[float | None] = Field(description="null for the prompt's first token (echo)")
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Body):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class Completion(Body):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class FunctionDelta(Body):
    name: str | None = None
    arguments: str


class ToolCallDelta(Body):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class ChatDelta(Body):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Body):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: ChatFinishReason | None


class ChatCompletionChunk(Body):
    """One event of a streamed chat completion; with `stream_options.include_usage` every chunk has `usage`
    (null until the last one, which has no choices)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChunk(Body):
    """One event of a streamed completion (`usage` as in ChatCompletionChunk)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Model(Body):
    id: str
    object: Literal["model"]
    created: int = Field(description="when the server loaded it, seconds since the Unix epoch")
    owned_by: str
    parent: str | None = Field(description="for a LoRA adapter: its base model")


class ModelList(Body):
    object: Literal["list"]
    data: list[Model]


class EmbeddingItem(Body):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingUsage(Body):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Body):
    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


class TokenizeResult(Body):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None


class DetokenizeResult(Body):
    prompt: str
