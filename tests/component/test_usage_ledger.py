"""Usage per token, model and day in the state store (embedded SQLite and a real Redis), through an outage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatllm.kernel.config import StateConfig
from chatllm.kernel.state.connection import StateStore, open_state_store
from chatllm.kernel.state.usage import Usage, UsageLedger, totals
from tests.redis_server import RedisServer


@pytest.fixture(params=["embedded", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    url = "embedded" if request.param == "embedded" else request.getfixturevalue("redis_url")
    async with open_state_store(StateConfig(url), tmp_path) as opened:
        yield opened


async def test_usage_adds_up_per_day_token_and_model(store: StateStore) -> None:
    ledger = UsageLedger(store)
    await ledger.record("r1", Usage("2026-12-06", "alice", "m", 1, 10, 0, 5))
    await ledger.record("r2", Usage("2026-12-07", "alice", "m", 1, 20, 16, 7))
    await ledger.record("r3", Usage("2026-12-07", "alice", "m", 1, 30, 0, 9))
    await ledger.record("r4", Usage("2026-12-07", "alice", "lora-a", 1, 3, 0, 1))
    await ledger.record("r5", Usage("2026-12-07", "bob", "m", 1, 4, 0, 2))
    rows = await ledger.report()
    by_row = {(r.day, r.token, r.model): r.counts() for r in rows}
    assert by_row == {
        ("2026-12-06", "alice", "m"): (1, 10, 0, 5),
        ("2026-12-07", "alice", "lora-a"): (1, 3, 0, 1),
        ("2026-12-07", "alice", "m"): (2, 50, 16, 16),
        ("2026-12-07", "bob", "m"): (1, 4, 0, 2),
    }
    assert [r.token for r in await ledger.report(start="2026-12-07", token="bob")] == ["bob"]
    assert await ledger.report(end="2026-12-05") == []
    summed = totals(await ledger.report(token="alice"))
    assert summed[("alice", "m")].total_tokens == 10 + 50 + 5 + 16


async def test_usage_waits_through_an_outage_and_is_counted_once(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        async with open_state_store(StateConfig(server.url()), tmp_path) as store:
            ledger = UsageLedger(store)
            await ledger.record("before", Usage("2026-12-07", "alice", "m", 1, 10, 0, 1))
            server.stop()
            for number in range(3):
                await ledger.record(f"during-{number}", Usage("2026-12-07", "alice", "m", 1, 10, 0, 1))
            assert ledger.pending == 3
            server.start()  # empty: no persistence; what the ledger kept is all there will be
            store.policy.succeeded()  # do not wait out the retry interval
            assert await ledger.flush() == 0
            # A write whose reply was lost is sent again: the request's guard keeps it from counting twice.
            await ledger.record("during-2", Usage("2026-12-07", "alice", "m", 1, 10, 0, 1))
            rows = await ledger.report()
    assert [r.counts() for r in rows] == [(3, 30, 0, 3)]
