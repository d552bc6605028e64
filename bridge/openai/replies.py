"""What the OpenAI-compatible routes answer, as pydantic models (OpenAI's and vLLM's shapes)."""

from __future__ import annotations

from typing import Any, Literal

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


class ChatChoice(Body):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletion(Body):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(Body):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length"] | None


class Completion(Body):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


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
