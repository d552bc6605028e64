"""OpenAI's Responses event stream, as an Encoder of the answer pipeline.

    response.created, response.in_progress,
    per output item: response.output_item.added, then
      a message: response.content_part.added, response.output_text.delta..., response.output_text.done,
                 response.content_part.done
      a function call: response.function_call_arguments.delta..., response.function_call_arguments.done
    response.output_item.done; finally response.completed (or response.incomplete when
    max_output_tokens cut it), or on a failure `error` then response.failed.

Every event carries `sequence_number`; item events carry `output_index` and `item_id`. The last
event (`last_event()`) carries the response the store keeps (`self.result`); the handler sends it
after storing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chatllm.bridge.answer.pipeline import ChoiceChange
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.errors import ApiError
from chatllm.bridge.openai.shapes import chat_logprobs
from chatllm.bridge.responses.shapes import ResponseMeta, call_item, message_item, text_part
from chatllm.proto import pb


@dataclass
class _OpenItem:
    """The output item being streamed: the message (`call` None) or function call `call`."""

    output_index: int
    item_id: str
    call: int | None = None
    text: str = ""
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)
    head: pb.ToolCallDelta | None = None


class ResponsesStream:
    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.sequence = 0
        self.open: _OpenItem | None = None
        self.items = 0
        self.result: dict[str, Any] | None = None
        self._logprobs = meta.body.logprobs is not None

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: ".encode() + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"

    def opening(self, progress: Progress) -> list[bytes]:
        response = self.meta.response("in_progress")
        created = self._event("response.created", response=response)
        return [created, self._event("response.in_progress", response=response)]

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        events = []
        for change in changes:
            if change.index != 0:
                continue
            if change.text:
                events += self._text(change)
            for delta in change.tool_calls:
                events += self._call(delta)
        return events

    def _text(self, change: ChoiceChange) -> list[bytes]:
        events = []
        if self.open is None or self.open.call is not None:
            events += self._close() + self._open_message()
        assert self.open is not None
        self.open.text += change.text
        self.open.logprobs.extend(change.logprobs)
        logprobs = chat_logprobs(change.logprobs)["content"] if self._logprobs else []
        events.append(self._event("response.output_text.delta", **self._where(), delta=change.text, logprobs=logprobs))
        return events

    def _open_message(self) -> list[bytes]:
        self.open = _OpenItem(self._next_index(), self.meta.ids.message)
        item = message_item(self.open.item_id, "", "in_progress", None)
        return [
            self._event("response.output_item.added", output_index=self.open.output_index, item=item),
            self._event("response.content_part.added", **self._where(), part=text_part("", [])),
        ]

    def _call(self, delta: pb.ToolCallDelta) -> list[bytes]:
        events = []
        if self.open is None or self.open.call != delta.index:
            events += self._close()
            self.open = _OpenItem(self._next_index(), self.meta.ids.call(delta.index), call=delta.index, head=delta)
            item = call_item(self.open.item_id, delta, "in_progress", "")
            events.append(self._event("response.output_item.added", output_index=self.open.output_index, item=item))
        if delta.arguments:
            self.open.text += delta.arguments
            where = {"item_id": self.open.item_id, "output_index": self.open.output_index}
            events.append(self._event("response.function_call_arguments.delta", **where, delta=delta.arguments))
        return events

    def _next_index(self) -> int:
        self.items += 1
        return self.items - 1

    def _where(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open.item_id, "output_index": self.open.output_index, "content_index": 0}

    def _close(self, status: str = "completed") -> list[bytes]:
        item, self.open = self.open, None
        if item is None:
            return []
        if item.call is None:
            logprobs = item.logprobs if self._logprobs else None
            part = text_part(item.text, logprobs)
            where = {"item_id": item.item_id, "output_index": item.output_index, "content_index": 0}
            done = message_item(item.item_id, item.text, status, logprobs)
            return [
                self._event("response.output_text.done", **where, text=item.text, logprobs=part["logprobs"]),
                self._event("response.content_part.done", **where, part=part),
                self._event("response.output_item.done", output_index=item.output_index, item=done),
            ]
        assert item.head is not None
        where = {"item_id": item.item_id, "output_index": item.output_index}
        done = call_item(item.item_id, item.head, "completed", item.text)
        return [
            self._event("response.function_call_arguments.done", **where, name=item.head.name, arguments=item.text),
            self._event("response.output_item.done", output_index=item.output_index, item=done),
        ]

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        events = self.update(progress, changes)
        if self.items == 0:  # an empty answer is still one (empty) message, as in the whole response
            events += self._open_message()
        self.result = self.meta.finished(progress)
        events += self._close("incomplete" if self.result["status"] == "incomplete" else "completed")
        return events

    def failure(self, error: ApiError) -> list[bytes]:
        self.result = self.meta.failed(error)
        return [self._event("error", code=error.code, message=error.message, param=error.param)]

    def last_event(self) -> bytes:
        """response.completed / .incomplete / .failed: sent once the response is stored, so a client that
        reads it can retrieve or continue the response at once."""
        assert self.result is not None
        kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
            self.result["status"], "response.completed"
        )
        return self._event(kind, response=self.result)
