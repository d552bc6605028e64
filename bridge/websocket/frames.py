"""The legacy WebSocket protocol's answer frames: the text frames (deltas or the whole answer, the
sources with `langchain`, `<EOS>`) and the `"stream_format": "events"` JSON frames the web page reads.

Frames are per token, so they are written as JSON text straight away; the models below describe the
JSON frames once, for the OpenAPI document and the test that checks what is sent against them."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from chatllm.bridge.answer.pipeline import ChoiceChange
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.errors import ApiError, Error
from chatllm.bridge.reply_parts import Body, Source, Usage

EOS = "<EOS>"
PROTOCOL = """WebSocket (send `Upgrade: websocket`; the token goes in the handshake's Authorization header).
Each client frame (text, or UTF-8 binary) is a LegacyRequest as JSON, or a bare prompt. The answer comes
as text frames with the deltas (`use_stream_chat` defaults to true here), or one frame with the whole answer
when it is false, then a frame that is exactly `<EOS>`. With `langchain: true` a SourcesFrame comes just
before `<EOS>`. With `"stream_format": "events"`: DeltaFrame frames, then one FinalFrame. A failed round
sends one Error object as a frame, then `<EOS>`: a client that reads until `<EOS>` never hangs. Frames are
answered in order; the connection keeps its history (trimmed to max_round); a frame with `history` replaces
it. Closing the socket mid-answer cancels the answer. More than --ws-max-pending queued frames closes the
socket with 1013 (try again later); a draining server finishes the answer in progress and closes with 1001."""


class SourcesFrame(Body):
    """With `langchain: true`: the knowledge-base chunks the answer was given, just before `<EOS>`."""

    sources: list[Source]


class DeltaFrame(Body):
    """`"stream_format": "events"`: new text of the answer."""

    delta: str


class Timings(Body):
    queue_seconds: float
    time_to_first_token_seconds: float
    total_seconds: float
    retrieval_seconds: float


class Final(Body):
    finish_reason: str | None = Field(description="stop, length, tool_calls, abort or error")
    usage: Usage
    timings: Timings
    sources: list[Source]
    request_id: str


class FinalFrame(Body):
    """`"stream_format": "events"`: the end of the answer, just before `<EOS>`."""

    final: Final


FRAMES: tuple[type[Body], ...] = (SourcesFrame, DeltaFrame, FinalFrame, Error)


class TextFrames:
    """The legacy frames: deltas (or the whole answer at the end), the sources with `langchain`, `<EOS>`."""

    def __init__(self, stream: bool, with_sources: bool) -> None:
        self.stream = stream
        self.with_sources = with_sources

    def opening(self, progress: Progress) -> list[str]:
        return []

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[str]:
        text = "".join(c.text for c in changes if c.index == 0)
        return [text] if self.stream and text else []

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[str]:
        frames = self.update(progress, changes) if self.stream else [progress.text]
        if self.with_sources:  # `langchain: true`: one JSON frame with the sources before <EOS>
            frames.append(json.dumps({"sources": progress.sources()}, ensure_ascii=False))
        return [*frames, EOS]

    def failure(self, error: ApiError) -> list[str]:
        return [error.frame(), EOS]


class EventFrames(TextFrames):
    """`"stream_format": "events"`: `{"delta": ...}` frames, then `{"final": ...}`, then `<EOS>`."""

    def __init__(self) -> None:
        super().__init__(stream=True, with_sources=False)

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[str]:
        text = "".join(c.text for c in changes if c.index == 0)
        return [json.dumps({"delta": text}, ensure_ascii=False)] if text else []

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[str]:
        final = json.dumps({"final": final_event(progress)}, ensure_ascii=False)
        return [*self.update(progress, changes), final, EOS]


def final_event(progress: Progress) -> dict[str, Any]:
    """The `{"final": ...}` payload of the events format."""
    assert progress.final is not None  # the pipeline calls closing() only with the final message
    t = progress.final.timings
    return {
        "finish_reason": progress.finish_reason,
        "usage": progress.usage(),
        "timings": {
            "queue_seconds": round(t.queue_seconds, 4),
            "time_to_first_token_seconds": round(t.time_to_first_token_seconds, 4),
            "total_seconds": round(t.total_seconds, 4),
            "retrieval_seconds": round(t.retrieval_seconds, 4),
        },
        "sources": progress.sources(),
        "request_id": progress.request_id,
    }
