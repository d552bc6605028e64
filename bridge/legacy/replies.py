"""What the legacy HTTP protocol answers: one LegacyReply, or a stream of them."""

from __future__ import annotations

from pydantic import Field

from chatllm.bridge.reply_parts import Body, Source, Usage


class LegacyReply(Body):
    """The non-stream reply, and each object of a stream."""

    response: str = Field(description="the whole answer so far (cumulative) or the new text (delta stream mode)")
    history: list[list[str]] = Field(description="the history including this round")
    usage: Usage
    sources: list[Source] | None = Field(None, description="with langchain=true: the chunks the answer was given")
