"""The Response object (OpenAI's shape) and its output items, built from an answer's Progress."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.errors import ApiError
from chatllm.bridge.openai.shapes import chat_logprobs
from chatllm.bridge.responses.items import new_id
from chatllm.bridge.responses.request import ResponseCreateRequest
from chatllm.proto import pb

# How generation ended -> (the response's status, incomplete_details.reason)
ENDINGS = {"length": ("incomplete", "max_output_tokens"), "abort": ("cancelled", None), "error": ("failed", None)}


@dataclass
class ItemIds:
    """The ids of a response's output items: the message's, and each function call's by its index."""

    message: str = field(default_factory=lambda: new_id("msg"))
    calls: dict[int, str] = field(default_factory=dict)

    def call(self, index: int) -> str:
        return self.calls.setdefault(index, new_id("fc"))


@dataclass
class ResponseMeta:
    """What a response is before its output: the request it answers, its id, model and time."""

    body: ResponseCreateRequest
    model: str
    owner: str = ""  # whose token stored it (handlers.owner)
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    ids: ItemIds = field(default_factory=ItemIds)

    def response(self, status: str, output: Sequence[dict[str, Any]] = (), **extra: Any) -> dict[str, Any]:
        """The Response object; `extra` sets usage, error, incomplete_details, completed_at."""
        body = self.body
        text_format = body.text.format.echo() if body.text and body.text.format else {"type": "text"}
        tool_choice = body.tool_choice
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": bool(body.background),
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": body.max_tool_calls,
            "metadata": body.metadata or {},
            "model": self.model,
            "output": list(output),
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": body.reasoning.effort if body.reasoning else None, "summary": None},
            "service_tier": "default",
            "store": body.stored,
            "temperature": body.temperature,
            "text": {"format": text_format, "verbosity": "medium"},
            "tool_choice": tool_choice.model_dump()
            if tool_choice is not None and not isinstance(tool_choice, str)
            else tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "top_logprobs": body.top_logprobs,
            "top_p": body.top_p,
            "truncation": "disabled",
            "usage": None,
            "user": body.user,
            "safety_identifier": body.safety_identifier,
            **extra,
        }

    def finished(self, progress: Progress) -> dict[str, Any]:
        """The whole response once generation ended."""
        status, reason = ENDINGS.get(progress.finish_reason or "stop", ("completed", None))
        extra: dict[str, Any] = {"usage": usage(progress), "completed_at": int(time.time())}
        if reason is not None:
            extra["incomplete_details"] = {"reason": reason}
        if status == "failed" and progress.final is not None:
            extra["error"] = {"code": "server_error", "message": progress.final.message or "generation failed"}
        return self.response(status, output_items(progress, self.ids, self.body.logprobs is not None), **extra)

    def failed(self, error: ApiError) -> dict[str, Any]:
        return self.response("failed", error={"code": error.code or "server_error", "message": error.message})


def usage(progress: Progress) -> dict[str, Any]:
    u = progress.final.usage if progress.final is not None else None
    prompt = u.prompt_tokens if u is not None else progress.prompt_tokens
    completion = u.completion_tokens if u is not None else progress.completion_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": u.cached_prompt_tokens if u is not None else 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def text_part(text: str, logprobs: Sequence[pb.TokenLogprob] | None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    part["logprobs"] = chat_logprobs(logprobs)["content"] if logprobs is not None else []
    return part


def message_item(item_id: str, text: str, status: str, logprobs: Sequence[pb.TokenLogprob] | None) -> dict[str, Any]:
    content = [text_part(text, logprobs)] if status != "in_progress" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call: pb.ToolCall | pb.ToolCallDelta, status: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
    }


def output_items(progress: Progress, ids: ItemIds, with_logprobs: bool) -> list[dict[str, Any]]:
    """The message (when there is text, or no call) and the function calls of choice 0."""
    choice = progress.choice(0)
    ends = {end.index: end for end in progress.final.choices} if progress.final is not None else {}
    end = ends.get(0)
    calls = list(end.tool_calls) if end is not None else []
    status = "incomplete" if progress.finish_reason == "length" else "completed"
    items = []
    if choice.text or not calls:
        items.append(message_item(ids.message, choice.text, status, choice.logprobs if with_logprobs else None))
    items.extend(call_item(ids.call(i), call, "completed", call.arguments) for i, call in enumerate(calls))
    return items
