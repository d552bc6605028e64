"""The legacy request (PAI-EAS ChatLLM): a plain-text prompt or a JSON object.

JSON fields: prompt, system_prompt, history [[q, a], ...], max_new_tokens,
use_stream_chat, temperature, top_k, top_p, do_sample, use_cache, stop, langchain
(+ kb: which knowledge base, default "default"). Extensions that map straight
onto SamplingParams: ignore_eos, seed, repetition_penalty. Unknown fields are
ignored; a wrong type is a 400 naming the field. `use_cache` is accepted and
ignored: it was a transformers `generate()` flag (reuse the KV cache while
decoding), which every engine here always does, so it has nothing to switch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chatllm.bridge import fields
from chatllm.bridge.errors import bad_request
from chatllm.proto import pb

DEFAULT_KB = "default"
# Server field names (in INVALID_ARGUMENT messages) -> the legacy names clients sent.
LEGACY_FIELDS = {"knowledge_base": "kb", "history": "history", "prompt": "prompt"}


@dataclass
class LegacyRequest:
    prompt: str
    system_prompt: str = ""
    history: list[tuple[str, str]] | None = None  # None: not given (WS keeps its own)
    stream: bool | None = None  # None: the protocol's default
    events: bool = False  # WebSocket `stream_format: "events"`: JSON frames with usage, timings, sources
    knowledge_base: str | None = None  # set when `langchain` is true
    sampling: dict[str, Any] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)

    def to_grpc(self, channel: str, request_id: str, history: list[tuple[str, str]]) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            prompt=self.prompt,
            system_prompt=self.system_prompt,
            history=[pb.Turn(user=q, assistant=a) for q, a in history],
            sampling=pb.SamplingParams(stop=self.stop, **self.sampling),
            request_id=request_id,
            use_knowledge_base=self.knowledge_base is not None,
            knowledge_base=self.knowledge_base or "",
            channel=channel,
        )


def from_http_body(body: bytes, content_type: str) -> LegacyRequest:
    """JSON when the client says so (or sends an object without a content type), else the prompt."""
    text = _utf8(body)
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return from_json(fields.json_object(text))
    if media.startswith("text/"):
        return LegacyRequest(prompt=text)
    return from_text_or_json(text)


def from_text_or_json(text: str) -> LegacyRequest:
    """A body or WebSocket frame with no declared type: a JSON object if it is one, else the prompt.

    Text that looks like an object ({...}) but does not parse is a 400 rather than a
    prompt: it is far more likely a broken JSON request than a question."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            if stripped.endswith("}"):
                raise bad_request(
                    "body",
                    f"invalid JSON: {exc} (send Content-Type: text/plain to use it as the prompt)",
                    code="invalid_json",
                ) from None
            return LegacyRequest(prompt=text)
        if isinstance(value, dict):
            fields.reject_lone_surrogates(value)
            return from_json(value)
    return LegacyRequest(prompt=text)


def from_json(obj: dict[str, Any]) -> LegacyRequest:
    prompt = fields.string(obj, "prompt")
    if prompt is None:
        raise bad_request("prompt", "is required")
    request = LegacyRequest(
        prompt=prompt,
        system_prompt=fields.string(obj, "system_prompt") or "",
        history=_history(obj),
        stream=fields.boolean(obj, "use_stream_chat"),
        stop=fields.string_list(obj, "stop"),
        events=_stream_format(obj) == "events",
    )
    fields.boolean(obj, "use_cache")  # type-checked, then ignored (see the module docstring)
    if fields.boolean(obj, "langchain"):
        request.knowledge_base = fields.string(obj, "kb") or DEFAULT_KB
    sampling: dict[str, Any] = {
        "max_new_tokens": fields.integer(obj, "max_new_tokens", 1, fields.UINT32_MAX),
        "temperature": fields.number(obj, "temperature"),
        "top_k": fields.integer(obj, "top_k", 0, fields.INT32_MAX),
        "top_p": fields.number(obj, "top_p"),
        "do_sample": fields.boolean(obj, "do_sample"),
        "repetition_penalty": fields.number(obj, "repetition_penalty"),
        "seed": fields.integer(obj, "seed", 0, fields.UINT64_MAX),
        "ignore_eos": fields.boolean(obj, "ignore_eos"),
    }
    request.sampling = {k: v for k, v in sampling.items() if v is not None}
    return request


def _stream_format(obj: dict[str, Any]) -> str:
    value = fields.string(obj, "stream_format") or "text"
    if value not in ("text", "events"):
        raise bad_request("stream_format", 'must be "text" (the legacy frames) or "events" (JSON frames)')
    return value


def _history(obj: dict[str, Any]) -> list[tuple[str, str]] | None:
    value = obj.get("history")
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request("history", "must be a list of [question, answer] pairs")
    turns = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise bad_request(f"history[{i}]", "must be a [question, answer] pair")
        question, answer = ("" if part is None else part for part in pair)
        if not isinstance(question, str) or not isinstance(answer, str):
            raise bad_request(f"history[{i}]", "question and answer must be strings")
        turns.append((question, answer))
    return turns


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise bad_request(
            "body", f"not valid UTF-8 ({exc.reason} at byte {exc.start})", code="invalid_encoding"
        ) from None
