"""The legacy WebSocket protocol's answer frames: the text frames (deltas or the whole answer, the
sources with `langchain`, `<EOS>`) and the `"stream_format": "events"` JSON frames the web page reads."""

from __future__ import annotations

import json
from typing import Any

from chatllm.bridge.answer.pipeline import ChoiceChange
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.errors import ApiError

EOS = "<EOS>"


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
