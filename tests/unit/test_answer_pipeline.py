"""The one answer pipeline with scripted upstream updates: coalescing for slow readers, the no-final rule,
mid-stream failures (the protocols' encoders are checked through the real bridge in component tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from chatllm.bridge.answer.pipeline import ChoiceChange, stream_answer, whole_answer
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.errors import ApiError
from chatllm.proto import pb

WORDS = [f"w{i} " for i in range(200)]


async def upstream(words: list[str], final: bool = True, fail_after: int | None = None) -> AsyncIterator[Progress]:
    """What relay() yields: the same Progress, updated after each upstream message."""
    progress = Progress()
    for i, word in enumerate(words):
        if fail_after is not None and i == fail_after:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")
        response = pb.GenerateResponse(text=word, completion_tokens=i + 1)
        if final and i == len(words) - 1:
            response.final.CopyFrom(pb.GenerateFinal(finish_reason=pb.FINISH_REASON_STOP))
        progress.apply(response)
        yield progress
        await asyncio.sleep(0)  # the next token arrives in a later loop iteration, as from the network


class Recorder:
    """An encoder + sink that records what a protocol would send; `delay` makes it a slow reader."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sent: list[str] = []
        self.started = False

    def opening(self, progress: Progress) -> list[str]:
        return ["<open>"]

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[str]:
        return ["".join(c.text for c in changes)]

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[str]:
        return [*self.update(progress, changes), f"<final {progress.finish_reason}>"]

    def failure(self, error: ApiError) -> list[str]:
        return [f"<error {error.status} {error.code}>"]

    async def start(self) -> None:
        self.started = True

    async def send(self, chunks: list[str]) -> None:
        self.sent.extend(chunks)
        if self.delay:
            await asyncio.sleep(self.delay)


async def test_a_fast_reader_gets_every_delta() -> None:
    out = Recorder()
    progress = await stream_answer(upstream(WORDS), out, out)
    assert progress is not None and out.sent[0] == "<open>" and out.sent[-1] == "<final stop>"
    assert "".join(out.sent[1:-1]) == "".join(WORDS)


async def test_a_slow_reader_gets_coalesced_chunks_and_nothing_is_lost() -> None:
    out = Recorder(delay=0.005)
    await stream_answer(upstream(WORDS), out, out)
    assert "".join(out.sent[1:-1]) == "".join(WORDS)  # every token, in order
    assert len(out.sent) < len(WORDS) / 2  # but far fewer messages than tokens
    assert out.sent[-1] == "<final stop>"  # and the last one always goes out


async def test_upstream_ending_without_a_final_message_is_an_error_before_or_after_the_first_chunk() -> None:
    with pytest.raises(ApiError) as before:
        await stream_answer(upstream([], final=False), Recorder(), Recorder())
    assert before.value.status == 502 and before.value.code == "incomplete_answer"
    out = Recorder()
    assert await stream_answer(upstream(WORDS[:3], final=False), out, out) is None
    assert out.sent[-1] == "<error 502 incomplete_answer>" and "".join(out.sent[1:-1]) == "".join(WORDS[:3])
    with pytest.raises(ApiError) as whole:
        await whole_answer(upstream(WORDS[:3], final=False))
    assert whole.value.code == "incomplete_answer"


async def test_a_failure_mid_stream_ends_with_the_error_after_what_came_before() -> None:
    out = Recorder()
    assert await stream_answer(upstream(WORDS, fail_after=5), out, out) is None
    assert "".join(out.sent[1:-1]) == "".join(WORDS[:5])
    assert out.sent[-1] == "<error 502 upstream_unreachable>"


async def test_a_failure_before_anything_was_sent_raises_and_sends_nothing() -> None:
    out = Recorder()
    with pytest.raises(ApiError) as err:
        await stream_answer(upstream(WORDS, fail_after=0), out, out)
    assert err.value.status == 502 and not out.started and not out.sent
