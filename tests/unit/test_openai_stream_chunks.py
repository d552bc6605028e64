"""OpenAI's stream chunks are encoded with their constant part computed once: the bytes must be exactly
what encoding the whole chunk gives, whatever the options and the text."""

from __future__ import annotations

from typing import Any

import pytest

from chatllm.bridge.answer.pipeline import ChoiceChange
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.openai.shapes import ChatShape, CompletionShape, OpenAIStream, sse
from chatllm.proto import pb

ENVELOPE = {"id": 'chatcmpl-\u00e9"x', "created": 1_700_000_000}


def progress(model: str) -> Progress:
    answer = Progress()
    answer.apply(pb.GenerateResponse(text='Grüß "dich"\n', completion_tokens=3, prompt_tokens=5, model=model))
    return answer


def whole(stream: OpenAIStream, choices: list[dict[str, Any]], answer: Progress) -> bytes:
    event = {**stream.envelope, "model": answer.model, "choices": choices}
    if stream.include_usage:
        event["usage"] = answer.usage() if stream.continuous_usage else None
    return sse(event)


@pytest.mark.parametrize("include_usage, continuous", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("shape", [ChatShape(logprobs=False), CompletionShape(logprobs=False, echo="")])
def test_each_chunk_is_the_whole_chunk_encoded(
    shape: ChatShape | CompletionShape, include_usage: bool, continuous: bool
) -> None:
    stream = OpenAIStream(shape, ENVELOPE, 1, include_usage, continuous)
    for model in ("smol", "a-lora/\u4e2d\u6587", "smol"):  # the model arrives with the first message; it can differ
        answer = progress(model)
        change = ChoiceChange(0, 'Grüß "dich"\n\u2028', finish_reason=None)
        [chunk] = stream.update(answer, [change])
        assert chunk == whole(stream, [shape.piece(change)], answer)
        ended = ChoiceChange(0, "", finish_reason="length")
        assert stream.closing(answer, [ended])[0] == whole(stream, [shape.piece(ended)], answer)
