"""generation.py against a fake engine: usage, deadline, abort, admission, failures, choices, records.

Milliseconds per test: the real GenerateService, Chat and Admission run; only the engine is fake."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from prometheus_client import REGISTRY

from chatllm.kernel.config import Config
from chatllm.proto import pb
from chatllm.server.admission import Admission
from chatllm.server.chat import Chat
from chatllm.server.errors import DeadlineExceeded, InvalidArgument, NotFound, Overloaded, RequestFailed
from chatllm.server.generation import GenerateService
from chatllm.server.models import ServedModels
from tests.fake_engine import FakeEngine


class Records:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def record(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)


def service(engine: FakeEngine, history: Records | None = None, **overrides: Any) -> GenerateService:
    config = Config.build(**overrides)
    chat = Chat(engine.tokenizer, engine.info.context_length, max_round=config.history.max_round)
    admission = Admission(config.limits.max_concurrent, config.limits.max_queue)
    adapters = [pb.ModelInfo(id="pirate", parent="fake-model")]
    models = ServedModels(pb.ModelInfo(id="fake-model"), adapters)
    return GenerateService(
        config.server,
        config.limits,
        config.kb,
        engine,
        chat,
        admission,
        models,
        history=history,  # type: ignore[arg-type]
    )


async def collect(svc: GenerateService, request: pb.GenerateRequest) -> list[pb.GenerateResponse]:
    return [r async for r in svc.stream(request)]


def prompt(text: str = "hello there", **sampling: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(prompt=text, sampling=pb.SamplingParams(**sampling))


async def test_answer_usage_and_final_come_with_the_last_delta() -> None:
    history = Records()
    responses = await collect(service(FakeEngine(), history), prompt())
    assert "".join(r.text for r in responses) == "the answer is forty two"
    final = responses[-1].final
    assert [r.HasField("final") for r in responses].count(True) == 1
    assert final.finish_reason == pb.FINISH_REASON_STOP and final.model == "fake-model"
    assert final.usage.completion_tokens == 5 and final.usage.total_tokens == final.usage.prompt_tokens + 5
    assert responses[0].prompt_tokens == final.usage.prompt_tokens > 0
    (entry,) = history.entries
    assert entry["finish_reason"] == "stop" and entry["response"] == "the answer is forty two"


async def test_max_new_tokens_ends_with_length() -> None:
    responses = await collect(service(FakeEngine()), prompt(max_new_tokens=2))
    assert "".join(r.text for r in responses) == "the answer"
    assert responses[-1].final.finish_reason == pb.FINISH_REASON_LENGTH


async def test_deadline_aborts_the_engine_request_and_is_recorded_as_timeout() -> None:
    engine, history = FakeEngine(stall=0.2), Records()
    with pytest.raises(DeadlineExceeded):
        await collect(service(engine, history, request_timeout=0.05), prompt())
    assert len(engine.aborted) == 1
    assert history.entries[0]["finish_reason"] == "timeout"


async def test_a_consumer_that_leaves_ends_the_engine_stream_and_frees_the_slot() -> None:
    engine, history = FakeEngine(stall=0.01), Records()
    svc = service(engine, history)
    async with contextlib.aclosing(svc.stream(prompt())) as stream:
        first = await anext(stream)
    assert first.text == "the"
    assert engine.running == 0 and svc.admission.active == 0
    assert history.entries[0]["finish_reason"] == "abort"


async def test_admission_refuses_beyond_concurrency_and_queue() -> None:
    svc = service(FakeEngine(stall=0.05), max_concurrent=1, max_queue=0)
    first = asyncio.create_task(collect(svc, prompt()))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded):
        await collect(svc, prompt())
    assert len(await first) == 5


async def test_an_engine_failure_is_request_failed_and_recorded_as_error() -> None:
    history = Records()
    with pytest.raises(RequestFailed):
        await collect(service(FakeEngine(fail=True), history), prompt())
    assert history.entries[0]["finish_reason"] == "error"


async def test_n_choices_stream_with_their_index_and_end_once_each() -> None:
    responses = await collect(service(FakeEngine()), prompt(n=2, logprobs=0))
    for index in (0, 1):
        mine = [r for r in responses if r.index == index]
        assert "".join(r.text for r in mine) == "the answer is forty two"
        assert [r.finish_reason for r in mine if r.finish_reason] == [pb.FINISH_REASON_STOP]
        assert all(len(r.logprobs) == 1 for r in mine)
    final = responses[-1].final
    assert [c.index for c in final.choices] == [0, 1] and final.usage.completion_tokens == 10


async def test_best_of_returns_the_most_likely_candidates_at_the_end() -> None:
    engine = FakeEngine()
    responses = await collect(service(engine), prompt(n=1, best_of=3))
    assert engine.seen[0][1].n == 3 and engine.seen[0][1].logprobs == 0  # candidates with their log probabilities
    assert [r.index for r in responses] == [0] and responses[0].text == "the answer is forty two"
    assert not responses[0].logprobs  # the client did not ask for them
    assert len(responses[-1].final.choices) == 1


async def test_messages_reach_the_template_as_sent_and_legacy_history_is_trimmed() -> None:
    engine = FakeEngine()
    svc = service(engine, max_round=1)
    messages = [pb.Message(role="user", content=f"q{i}") for i in range(4)]
    await collect(svc, pb.GenerateRequest(messages=messages))
    assert all(f"<user>q{i}</user>" in engine.prompts[-1] for i in range(4))
    legacy = pb.GenerateRequest(prompt="now", history=[pb.Turn(user=f"old{i}", assistant="a") for i in range(3)])
    await collect(svc, legacy)
    assert "<user>old2</user>" in engine.prompts[-1]
    assert "<user>old0</user>" not in engine.prompts[-1]


async def test_models_name_the_base_or_an_adapter_and_nothing_else() -> None:
    engine = FakeEngine()
    svc = service(engine)
    adapted = await collect(svc, pb.GenerateRequest(prompt="hi", model="pirate"))
    assert engine.seen[-1][2] == "pirate"
    assert [r.model for r in adapted] == ["pirate", *[""] * (len(adapted) - 1)]  # named in the first response
    base = await collect(svc, pb.GenerateRequest(prompt="hi"))
    assert engine.seen[-1][2] is None and base[0].model == base[-1].final.model == "fake-model"
    best = await collect(svc, prompt(n=1, best_of=2))  # answered at the end, whole
    assert best[0].model == "fake-model"
    with pytest.raises(NotFound) as err:
        await collect(svc, pb.GenerateRequest(prompt="hi", model="gpt-4"))
    assert "pirate" in str(err.value)


async def test_a_backend_refuses_what_it_cannot_honour_naming_the_field() -> None:
    svc = service(FakeEngine(supports_everything=False))
    with pytest.raises(InvalidArgument) as err:
        await collect(svc, prompt(presence_penalty=0.5))
    assert err.value.field == "sampling.presence_penalty" and "vllm" in err.value.description


async def test_messages_and_the_legacy_prompt_exclude_each_other() -> None:
    with pytest.raises(InvalidArgument) as err:
        await collect(service(FakeEngine()), pb.GenerateRequest(prompt="x", messages=[pb.Message(role="user")]))
    assert err.value.field == "messages"


async def test_a_clients_own_channel_is_exported_but_counted_as_other_in_metrics() -> None:
    def count(label: str) -> float:
        return REGISTRY.get_sample_value("chatllm_request_duration_seconds_count", {"channel": label}) or 0.0

    history = Records()
    svc = service(FakeEngine(), history)
    before_other, before_openai = count("other"), count("openai")
    for channel in ("made-up-1", "made-up-2", "openai"):
        request = prompt()
        request.channel = channel
        await collect(svc, request)
    assert [e["channel"] for e in history.entries] == ["made-up-1", "made-up-2", "openai"]
    assert count("other") == before_other + 2 and count("openai") == before_openai + 1
    assert count("made-up-1") == 0
    too_long = prompt()
    too_long.channel = "c" * 65
    with pytest.raises(InvalidArgument, match="channel"):
        await collect(svc, too_long)
