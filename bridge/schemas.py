"""What the bridge answers, as pydantic models: the OpenAPI document's response schemas.

The handlers build these bodies as plain dicts (per-token chunks stay cheap); the fuzz
tests (schemathesis) check every response against these models, so they cannot drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Body):
    message: str = Field(description="what went wrong; for a bad field it starts with `field: `")
    type: str = Field(description="error class: invalid_request_error, authentication_error, rate_limit_error, ...")
    param: str | None = Field(description="the request field at fault")
    code: str | None = Field(description="snake_case reason: invalid_field, invalid_api_key, overloaded, ...")
    status: int = Field(ge=400, le=599, description="the HTTP status")


class Error(Body):
    """Every error of the bridge, HTTP and WebSocket alike (the OpenAI error shape)."""

    error: ErrorDetail


class TokenDetails(Body):
    cached_tokens: int = Field(description="prompt tokens whose KV cache was reused (prefix caching)")


class Usage(Body):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: TokenDetails | None = None


class Source(Body):
    file: str
    chunk: int = Field(description="position of the chunk in its document, from 0")
    score: float = Field(description="fused relevance score; higher is closer")
    text: str


class LegacyReply(Body):
    """The non-stream reply, and each object of a stream."""

    response: str = Field(description="the whole answer so far (cumulative) or the new text (delta stream mode)")
    history: list[list[str]] = Field(description="the history including this round")
    usage: Usage
    sources: list[Source] | None = Field(None, description="with langchain=true: the chunks the answer was given")


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


class ModelList(Body):
    object: Literal["list"]
    data: list[Model]


class KnowledgeBaseSize(Body):
    name: str
    documents: int
    chunks: int


class KnowledgeBaseList(Body):
    knowledge_bases: list[KnowledgeBaseSize]


class Document(Body):
    id: str = Field(description="64-character hex content hash")
    filename: str
    chunks: int
    size_bytes: int
    created_unix: float


class DocumentList(Body):
    knowledge_base: str
    documents: list[Document]


class IngestedDocument(Body):
    filename: str
    document_id: str
    chunks: int
    unchanged: bool = Field(description="the same bytes were already stored")
    replaced_document_ids: list[str]
    characters: int


class UploadResult(Body):
    knowledge_base: str
    documents: list[IngestedDocument]


class UploadError(Error):
    documents: list[IngestedDocument] = Field(
        default_factory=list, description="files stored before the failing one (absent when none was read)"
    )


class DeletedDocument(Body):
    knowledge_base: str
    deleted: str
    chunks_deleted: int


class DeletedKnowledgeBase(Body):
    knowledge_base: str
    documents_deleted: int


class Info(BaseModel):
    """The served model(s), the server's state and limits, the model catalogue (ModelInfo, ServerInfo and
    CatalogModel of the gRPC API, as JSON with the proto's field names)."""

    model: dict[str, Any] | None
    models: list[dict[str, Any]]
    server: dict[str, Any]
    catalog: list[dict[str, Any]]


class Alive(Body):
    status: Literal["alive"]


class Readiness(Body):
    status: Literal["ready", "not ready", "draining"]
    detail: str


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
)
