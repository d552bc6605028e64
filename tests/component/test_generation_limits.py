"""Limits, usage and priority through the real Generate pipeline (generation.py, admission, the state
store: embedded and a real Redis) over the fake engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatllm.kernel.access import Caller, TokenLimits
from chatllm.kernel.config import Config, StateConfig
from chatllm.kernel.priority import Priority
from chatllm.kernel.state.connection import StateStore, open_state_store
from chatllm.kernel.state.fair_share import FairShareCounters
from chatllm.kernel.state.limits import TokenLimiter
from chatllm.kernel.state.usage import UsageLedger, totals
from chatllm.proto import pb
from chatllm.server.admission import Admission
from chatllm.server.chat import Chat
from chatllm.server.errors import Reason, TokenLimited
from chatllm.server.generation import GenerateService
from chatllm.server.models import ServedModels
from chatllm.server.usage import UsageRecorder
from tests.fake_engine import FakeEngine


@pytest.fixture(params=["embedded", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    url = "embedded" if request.param == "embedded" else request.getfixturevalue("redis_url")
    async with open_state_store(StateConfig(url), tmp_path) as opened:
        yield opened


def service(engine: FakeEngine, store: StateStore, max_concurrent: int = 8) -> tuple[GenerateService, UsageLedger]:
    config = Config.build(max_concurrent=max_concurrent)
    chat = Chat(engine.tokenizer, engine.info.context_length, max_round=config.history.max_round)
    ledger = UsageLedger(store)
    admission = Admission(
        max_concurrent, 16, TokenLimiter(store, window=5.0), FairShareCounters(store), UsageRecorder(ledger)
    )
    models = ServedModels(pb.ModelInfo(id="fake-model"), [])
    return GenerateService(config.server, config.limits, config.kb, engine, chat, admission, models), ledger


def request(text: str = "hello there", **fields: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(prompt=text, sampling=pb.SamplingParams(max_new_tokens=5), **fields)


async def answer(svc: GenerateService, caller: Caller, req: pb.GenerateRequest | None = None) -> pb.GenerateFinal:
    responses = [r async for r in svc.stream(req or request(), caller)]
    return responses[-1].final


async def test_usage_totals_equal_the_usage_blocks_sent(store: StateStore) -> None:
    svc, ledger = service(FakeEngine(), store)
    alice, bob = Caller("alice", "a-token"), Caller("bob", "b-token")
    finals = [
        await answer(svc, alice),
        await answer(svc, alice, request("a longer question than that")),
        await answer(svc, bob),
    ]
    summed = totals(await ledger.report())
    for name, sent in (("alice", finals[:2]), ("bob", finals[2:])):
        row = summed[(name, "fake-model")]
        assert row.requests == len(sent)
        assert row.prompt_tokens == sum(f.usage.prompt_tokens for f in sent)
        assert row.completion_tokens == sum(f.usage.completion_tokens for f in sent)


async def test_a_cancelled_stream_is_charged_what_it_consumed(store: StateStore) -> None:
    engine = FakeEngine(stall=0.05)
    svc, ledger = service(engine, store)
    caller = Caller("carol", "c-token", TokenLimits(tpm=1000))
    received = 0
    async with contextlib.aclosing(svc.stream(request(), caller)) as stream:
        async for _ in stream:
            received += 1
            if received == 2:
                break  # the client goes away after two tokens
    (row,) = await ledger.report()
    assert row.requests == 1 and row.prompt_tokens > 0 and 2 <= row.completion_tokens < 5


async def test_tokens_per_minute_refuse_with_the_wait(store: StateStore) -> None:
    svc, _ = service(FakeEngine(), store)
    probe = await answer(svc, Caller("probe", "p-token"))
    per_request = probe.usage.prompt_tokens + 5  # the reservation: prompt + max_new_tokens
    caller = Caller("dave", "d-token", TokenLimits(tpm=per_request + 2))
    await answer(svc, caller)
    with pytest.raises(TokenLimited) as refused:
        await answer(svc, caller)
    assert refused.value.reason is Reason.TOKEN_TOKENS_LIMITED and 0 < refused.value.retry_after <= 5.0


async def test_the_token_file_ceiling_clamps_the_asked_priority(store: StateStore) -> None:
    engine = FakeEngine(stall=0.02)
    svc, _ = service(engine, store, max_concurrent=1)
    batch = Caller("batch", "b-token", priority=Priority.BULK)
    page = Caller("page", "p-token")
    order: list[str] = []

    async def send(label: str, caller: Caller, priority: int) -> None:
        await answer(svc, caller, request(priority=priority))
        order.append(label)

    first = asyncio.create_task(send("first", page, pb.PRIORITY_DEFAULT))
    await asyncio.sleep(0.01)
    asked_high = asyncio.create_task(send("batch-asks-interactive", batch, pb.PRIORITY_INTERACTIVE))
    await asyncio.sleep(0.01)
    default = asyncio.create_task(send("page-default", page, pb.PRIORITY_DEFAULT))
    await asyncio.gather(first, asked_high, default)
    assert order == ["first", "page-default", "batch-asks-interactive"]  # bulk, whatever it asked
