"""The legacy request (PAI-EAS ChatLLM): a plain-text prompt or a JSON object, as one pydantic model.

JSON fields: prompt, system_prompt, history [[q, a], ...], max_new_tokens,
use_stream_chat, temperature, top_k, top_p, do_sample, use_cache, stop, langchain
(+ kb: which knowledge base, default "default"). Extensions: ignore_eos, seed,
repetition_penalty, model, stream_mode, stream_format, priority. Unknown fields are ignored (the
protocol's rule); a wrong type is a 400 naming the field. `use_cache` is accepted and
ignored: it was a transformers `generate()` flag (reuse the KV cache while decoding),
which every engine here always does, so it has nothing to switch.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from chatllm.bridge.errors import bad_request
from chatllm.bridge.field_types import LegacyBoolean, String
from chatllm.bridge.priority import PriorityClass, priority_pb
from chatllm.bridge.sampling import client_field as sampling_client_field
from chatllm.bridge.sampling import sampling_body, sampling_pb
from chatllm.bridge.validation import check_depth, decode_json, parse, reject_lone_surrogates
from chatllm.kernel.request_rules import DEFAULT_KNOWLEDGE_BASE
from chatllm.proto import pb


def _pair(value: Any) -> Any:
    """One round: [question, answer], each a string or null (an unanswered question)."""
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise PydanticCustomError("invalid_field", "must be a [question, answer] pair")
    if not all(part is None or isinstance(part, str) for part in value):
        raise PydanticCustomError("invalid_field", "question and answer must be strings")
    return tuple(value)


HistoryPair = Annotated[
    tuple[str | None, str | None],
    BeforeValidator(_pair),
    WithJsonSchema({"type": "array", "items": {"type": ["string", "null"]}, "minItems": 2, "maxItems": 2}),
]
StreamMode = Literal["cumulative", "delta"]


class _LegacyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")


# The sampling table's fields as legacy bodies spell them (max_new_tokens, temperature, top_k, top_p,
# do_sample, stop, ignore_eos, seed, repetition_penalty): chatllm.bridge.sampling makes them.
_LegacySampling: Any = sampling_body("legacy", _LegacyBody)


class LegacyRequest(_LegacySampling):  # type: ignore[misc]
    """A question in the PAI-EAS ChatLLM protocol (HTTP body or WebSocket frame)."""

    model_config = ConfigDict(extra="ignore", title="LegacyRequest")

    prompt: String = Field(description="the question (required, non-empty)")
    system_prompt: String | None = Field(None, description="replaces the server's default system prompt")
    history: list[HistoryPair] | None = Field(
        None,
        description="earlier rounds, oldest first, as [question, answer] pairs; only the rounds --max_round "
        "and --max-round-trim keep reach the model. On the WebSocket a frame with `history` replaces the "
        "connection's own.",
    )
    use_stream_chat: LegacyBoolean | None = Field(
        None,
        description="stream the answer (HTTP: NUL-delimited JSON objects, or SSE with Accept: text/event-stream; "
        "default false). WebSocket: delta frames (default true).",
    )
    stream_mode: StreamMode | None = Field(
        None,
        description="HTTP streams: `response` is the whole answer so far (`cumulative`, what the PAI-EAS ChatLLM "
        "examples read) or only the new text (`delta`, LangChain's PAI-EAS classes); default: the server's "
        "--legacy-stream",
    )
    use_cache: LegacyBoolean | None = Field(
        None, description="accepted and ignored: engines always reuse their KV cache"
    )
    langchain: LegacyBoolean | None = Field(None, description="answer from the knowledge base `kb`")
    kb: String | None = Field(None, description="knowledge base for `langchain: true` (default: default)")
    model: String | None = Field(None, description="served model or LoRA adapter (default: the base model)")
    stream_format: Literal["text", "events"] | None = Field(
        None,
        description='WebSocket: "text" (the legacy frames) or "events" (JSON frames with usage, timings, sources)',
    )
    priority: PriorityClass | None = None

    @property
    def stream(self) -> bool | None:
        return self.use_stream_chat

    @property
    def events(self) -> bool:
        return self.stream_format == "events"

    @property
    def knowledge_base(self) -> str | None:
        """The knowledge base to answer from (`langchain: true`), else None."""
        return (self.kb or DEFAULT_KNOWLEDGE_BASE) if self.langchain else None

    @staticmethod
    def client_field(server_field: str) -> str:
        """A field named by the server as this protocol's clients wrote it."""
        return "kb" if server_field == "knowledge_base" else sampling_client_field(server_field, "legacy")

    def history_pairs(self) -> list[tuple[str, str]] | None:
        """`history` with nulls as empty strings; None when not given (the WebSocket keeps its own)."""
        if self.history is None:
            return None
        return [(q or "", a or "") for q, a in self.history]

    def to_generate_request(self, channel: str, request_id: str, history: list[tuple[str, str]]) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            prompt=self.prompt,
            system_prompt=self.system_prompt or "",
            history=[pb.Turn(user=q, assistant=a) for q, a in history],
            sampling=sampling_pb(self, "legacy"),
            request_id=request_id,
            use_knowledge_base=self.knowledge_base is not None,
            knowledge_base=self.knowledge_base or "",
            channel=channel,
            model=self.model or "",
            priority=priority_pb(self.priority),
        )


def from_http_body(body: bytes, content_type: str) -> LegacyRequest:
    """JSON when the client says so (or sends an object without a content type), else the prompt."""
    text = _utf8(body)
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        value = decode_json(text)
        if not isinstance(value, dict):
            raise bad_request("body", "must be a JSON object", code="invalid_json")
        return parse(LegacyRequest, value)
    if media.startswith("text/"):
        return _prompt(text)
    return from_text_or_json(text)


def from_text_or_json(text: str) -> LegacyRequest:
    """A body or WebSocket frame with no declared type: a JSON object if it is one, else the prompt.

    Text that looks like an object ({...}) but does not parse is a 400 rather than a
    prompt: it is far more likely a broken JSON request than a question."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return _prompt(text)
    check_depth(stripped)
    try:
        value = json.loads(stripped)
    except ValueError as exc:
        if not stripped.endswith("}"):
            return _prompt(text)
        raise bad_request(
            "body", f"invalid JSON: {exc} (send Content-Type: text/plain to use it as the prompt)", code="invalid_json"
        ) from None
    if not isinstance(value, dict):
        return _prompt(text)
    reject_lone_surrogates(value)
    return parse(LegacyRequest, value)


def _prompt(text: str) -> LegacyRequest:
    return parse(LegacyRequest, {"prompt": text})


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise bad_request(
            "body", f"not valid UTF-8 ({exc.reason} at byte {exc.start})", code="invalid_encoding"
        ) from None
