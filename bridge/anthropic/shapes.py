"""Anthropic's message (whole, and as its event stream) and error shapes, from an answer's Progress.

Stream (`event: <type>` + `data:`): message_start, ping, per content block content_block_start,
content_block_delta (text_delta / input_json_delta)..., content_block_stop; then message_delta (with
stop_reason, stop_sequence and usage) and message_stop. A failure mid-stream is an `error` event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from chatllm.bridge.answer.pipeline import ChoiceChange
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.errors import ApiError
from chatllm.proto import pb

# HTTP status -> Anthropic's error type (https://docs.anthropic.com/en/api/errors)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(error: ApiError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status, "invalid_request_error" if error.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def error_response(error: ApiError) -> web.Response:
    headers = dict(error.headers)  # WWW-Authenticate
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return web.json_response(error_body(error), status=error.status, headers=headers)


def arguments_object(arguments: str) -> Any:
    """A tool call's arguments as tool_use `input` (an object); text that is not JSON stays a string."""
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments


def stop_reason(progress: Progress, stop_sequences: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence): end_turn, max_tokens, tool_use, or stop_sequence naming the one that matched."""
    ends = {end.index: end for end in progress.final.choices} if progress.final is not None else {}
    end = ends.get(0)
    finish = progress.finish_reason
    if finish == "length":
        return "max_tokens", None
    if finish == "tool_calls" or (end is not None and end.tool_calls):
        return "tool_use", None
    matched = end.stop_reason if end is not None else ""
    if matched and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def usage(progress: Progress) -> dict[str, int]:
    """Anthropic counts cached prompt tokens apart: input_tokens are the ones read afresh."""
    u = progress.final.usage if progress.final is not None else None
    prompt = u.prompt_tokens if u is not None else progress.prompt_tokens
    cached = u.cached_prompt_tokens if u is not None else 0
    completion = u.completion_tokens if u is not None else progress.completion_tokens
    return {
        "input_tokens": prompt - cached,
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def tool_use_block(call: pb.ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments_object(call.arguments)}


@dataclass
class MessageMeta:
    model: str
    stop_sequences: list[str]
    id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")

    def message(self, content: list[dict[str, Any]], progress: Progress, final: bool) -> dict[str, Any]:
        reason, sequence = stop_reason(progress, self.stop_sequences) if final else (None, None)
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage(progress),
        }

    def whole(self, progress: Progress) -> dict[str, Any]:
        text = progress.choice(0).text
        ends = {end.index: end for end in progress.final.choices} if progress.final is not None else {}
        calls = list(ends[0].tool_calls) if 0 in ends else []
        content = [{"type": "text", "text": text}] if text or not calls else []
        return self.message(content + [tool_use_block(c) for c in calls], progress, final=True)


class MessagesStream:
    """Encoder of Anthropic's event stream: one content block open at a time (text, or a tool_use)."""

    def __init__(self, meta: MessageMeta) -> None:
        self.meta = meta
        self.blocks = 0
        self.open_call: int | None = None  # the tool call index of the open block, -1 for text
        self.opened = False

    @staticmethod
    def _event(kind: str, **fields: Any) -> bytes:
        data = json.dumps({"type": kind, **fields}, ensure_ascii=False)
        return f"event: {kind}\ndata: {data}\n\n".encode()

    def opening(self, progress: Progress) -> list[bytes]:
        start = self._event("message_start", message=self.meta.message([], progress, final=False))
        return [start, self._event("ping")]

    def _start(self, block: dict[str, Any], call: int) -> list[bytes]:
        events = self._stop()
        self.open_call, self.opened = call, True
        return [*events, self._event("content_block_start", index=self.blocks, content_block=block)]

    def _stop(self) -> list[bytes]:
        if not self.opened:
            return []
        self.opened = False
        self.blocks += 1
        return [self._event("content_block_stop", index=self.blocks - 1)]

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        events: list[bytes] = []
        for change in (c for c in changes if c.index == 0):
            if change.text:
                if not self.opened or self.open_call != -1:
                    events += self._start({"type": "text", "text": ""}, -1)
                delta = {"type": "text_delta", "text": change.text}
                events.append(self._event("content_block_delta", index=self.blocks, delta=delta))
            for piece in change.tool_calls:
                if not self.opened or self.open_call != piece.index:
                    block = {"type": "tool_use", "id": piece.id, "name": piece.name, "input": {}}
                    events += self._start(block, piece.index)
                if piece.arguments:
                    delta = {"type": "input_json_delta", "partial_json": piece.arguments}
                    events.append(self._event("content_block_delta", index=self.blocks, delta=delta))
        return events

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        events = self.update(progress, changes)
        if self.blocks == 0 and not self.opened:  # an empty answer is one empty text block, as the whole message
            events += self._start({"type": "text", "text": ""}, -1)
        events += self._stop()
        reason, sequence = stop_reason(progress, self.meta.stop_sequences)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        events.append(self._event("message_delta", delta=delta, usage=usage(progress)))
        return [*events, self._event("message_stop")]

    def failure(self, error: ApiError) -> list[bytes]:
        return [self._event("error", error=error_body(error)["error"])]
