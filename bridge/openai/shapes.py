"""OpenAI's response shapes: chat completions and completions, whole and as SSE chunks.

The encoders plug into the answer pipeline (chatllm.bridge.answer); everything here is
OpenAI's exact shape (`logprobs.content[].top_logprobs[].bytes`, tool-call deltas with
`index` / `id` / `type` / `function`, `usage.prompt_tokens_details.cached_tokens`). A whole
reply is its model (replies.py); the chunks of a stream are written as JSON text straight away
(one per token: no model is built for them), and a test checks them against ChatCompletionChunk
and CompletionChunk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chatllm.bridge.answer.pipeline import ChoiceChange
from chatllm.bridge.answer.progress import Choice, Progress
from chatllm.bridge.errors import ApiError
from chatllm.bridge.openai.replies import ChatCompletion, Completion
from chatllm.proto import pb

DONE = b"data: [DONE]\n\n"


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


def finish_reason(name: str | None) -> str | None:
    """OpenAI knows stop, length and tool_calls; an aborted answer ended early, which clients read as stop."""
    if name is None:
        return None
    return name if name in ("length", "tool_calls") else "stop"


def _top(entry: pb.TopLogprob | pb.TokenLogprob) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.token_bytes)}


def chat_logprobs(entries: Sequence[pb.TokenLogprob]) -> dict[str, Any]:
    content = [{**_top(e), "top_logprobs": [_top(t) for t in e.top_logprobs]} for e in entries]
    return {"content": content, "refusal": None}


class CompletionLogprobs:
    """Completions' logprobs ({tokens, token_logprobs, top_logprobs, text_offset}) of one choice;
    keeps the running text offset across chunks."""

    def __init__(self, start: int = 0) -> None:
        self.offset = start

    def render(self, entries: Sequence[pb.TokenLogprob], first_is_prompt_start: bool = False) -> dict[str, Any]:
        tokens, logprobs, tops, offsets = [], [], [], []
        for i, e in enumerate(entries):
            tokens.append(e.token)
            # The prompt's first token has no logprob (nothing came before it): OpenAI sends null.
            logprobs.append(None if first_is_prompt_start and i == 0 else e.logprob)
            tops.append(None if first_is_prompt_start and i == 0 else {t.token: t.logprob for t in e.top_logprobs})
            offsets.append(self.offset)
            self.offset += len(e.token)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def tool_call_deltas(deltas: Sequence[pb.ToolCallDelta]) -> list[dict[str, Any]]:
    out = []
    for d in deltas:
        item: dict[str, Any] = {"index": d.index}
        function: dict[str, Any] = {"arguments": d.arguments}
        if d.id:
            item["id"], item["type"] = d.id, "function"
        if d.name:
            function["name"] = d.name
        item["function"] = function
        out.append(item)
    return out


def tool_calls(choice: Choice, final: pb.GenerateFinal | None) -> list[dict[str, Any]]:
    """The complete tool calls of a choice (from the final message)."""
    ends = {end.index: end for end in final.choices} if final is not None else {}
    end = ends.get(choice.index)
    if end is None:
        return []
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in end.tool_calls
    ]


class ChatShape:
    """/v1/chat/completions."""

    object_name, chunk_name, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"
    reply = ChatCompletion

    def __init__(self, logprobs: bool) -> None:
        self.logprobs = logprobs

    def whole_choice(self, choice: Choice, progress: Progress) -> dict[str, Any]:
        calls = tool_calls(choice, progress.final)
        message: dict[str, Any] = {"role": "assistant", "content": choice.text if choice.text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        return {
            "index": choice.index,
            "message": message,
            "logprobs": chat_logprobs(choice.logprobs) if self.logprobs else None,
            "finish_reason": finish_reason(choice.finish_reason),
        }

    def opening(self, progress: Progress, n: int) -> list[dict[str, Any]]:
        return [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            for i in range(n)
        ]

    def piece(self, change: ChoiceChange) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if change.text:
            delta["content"] = change.text
        if change.tool_calls:
            delta["tool_calls"] = tool_call_deltas(change.tool_calls)
        logprobs = chat_logprobs(change.logprobs) if self.logprobs and change.logprobs else None
        return {
            "index": change.index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish_reason(change.finish_reason),
        }


class CompletionShape:
    """/v1/completions (echo prepends the prompt, with its logprobs when asked)."""

    object_name, chunk_name, id_prefix = "text_completion", "text_completion", "cmpl"
    reply = Completion

    def __init__(self, logprobs: bool, echo: str) -> None:
        self.logprobs = logprobs
        self.echo = echo
        self._offsets: dict[int, CompletionLogprobs] = {}

    def _logprobs(self, index: int) -> CompletionLogprobs:
        return self._offsets.setdefault(index, CompletionLogprobs())

    def _echoed(self, progress: Progress, index: int) -> tuple[str, list[pb.TokenLogprob]]:
        return self.echo, list(progress.prompt_logprobs) if self.echo else []

    def whole_choice(self, choice: Choice, progress: Progress) -> dict[str, Any]:
        echo, prompt_logprobs = self._echoed(progress, choice.index)
        logprobs = None
        if self.logprobs:
            rendered = self._logprobs(choice.index)
            head = rendered.render(prompt_logprobs, first_is_prompt_start=True) if prompt_logprobs else None
            body = rendered.render(choice.logprobs)
            logprobs = {k: (head[k] if head else []) + body[k] for k in body}
        return {
            "index": choice.index,
            "text": echo + choice.text,
            "logprobs": logprobs,
            "finish_reason": finish_reason(choice.finish_reason),
        }

    def opening(self, progress: Progress, n: int) -> list[dict[str, Any]]:
        if not self.echo:
            return []
        out = []
        for i in range(n):
            _, prompt_logprobs = self._echoed(progress, i)
            logprobs = None
            if self.logprobs:
                logprobs = self._logprobs(i).render(prompt_logprobs, first_is_prompt_start=True)
            out.append({"index": i, "text": self.echo, "logprobs": logprobs, "finish_reason": None})
        return out

    def piece(self, change: ChoiceChange) -> dict[str, Any]:
        logprobs = self._logprobs(change.index).render(change.logprobs) if self.logprobs else None
        return {
            "index": change.index,
            "text": change.text,
            "logprobs": logprobs,
            "finish_reason": finish_reason(change.finish_reason),
        }


Shape = ChatShape | CompletionShape


class OpenAIStream:
    """Encoder of OpenAI's SSE stream: chunks, then a usage chunk (include_usage), then [DONE]."""

    def __init__(
        self, shape: Shape, envelope: dict[str, Any], n: int, include_usage: bool, continuous_usage: bool
    ) -> None:
        self.shape = shape
        self.envelope = {**envelope, "object": shape.chunk_name}
        self.n = n
        self.include_usage = include_usage
        self.continuous_usage = continuous_usage
        self._frame: tuple[str, bytes, bytes] | None = None  # (model, the chunk before its choices, after them)

    def _chunk(self, choices: list[dict[str, Any]], progress: Progress) -> bytes:
        if self.include_usage and self.continuous_usage:
            return sse({**self.envelope, "model": progress.model, "choices": choices, "usage": progress.usage()})
        # One chunk per token, and only its choices change: the rest is encoded once, the same bytes as sse().
        if self._frame is None or self._frame[0] != progress.model:
            head = json.dumps({**self.envelope, "model": progress.model}, ensure_ascii=False)[:-1]
            tail = ', "usage": null}' if self.include_usage else "}"
            self._frame = (progress.model, f'data: {head}, "choices": '.encode(), f"{tail}\n\n".encode())
        _, head_bytes, tail_bytes = self._frame
        return head_bytes + json.dumps(choices, ensure_ascii=False).encode() + tail_bytes

    def opening(self, progress: Progress) -> list[bytes]:
        return [self._chunk([c], progress) for c in self.shape.opening(progress, self.n)]

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        return [self._chunk([self.shape.piece(change)], progress) for change in changes]

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        chunks = self.update(progress, changes)
        if self.include_usage:
            chunks.append(sse({**self.envelope, "model": progress.model, "choices": [], "usage": progress.usage()}))
        return [*chunks, DONE]

    def failure(self, error: ApiError) -> list[bytes]:
        return [sse(error.body()), DONE]


def whole_body(shape: Shape, envelope: dict[str, Any], progress: Progress) -> ChatCompletion | Completion:
    choices = [shape.whole_choice(c, progress) for _, c in sorted(progress.choices.items())]
    return shape.reply.model_validate(
        {
            **envelope,
            "model": progress.model,
            "object": shape.object_name,
            "choices": choices,
            "usage": progress.usage(),
        }
    )
