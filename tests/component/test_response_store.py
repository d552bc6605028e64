"""The response store in both state stores (the embedded SQLite file, a real redis-server): records
survive reopening, expire after --responses-ttl, and 10,000 responses stay within --responses-max-bytes
with the least recently used evicted first."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatllm.bridge.responses.store import ResponseStore, encode, open_response_store
from chatllm.kernel.config import StateConfig
from chatllm.kernel.state.connection import open_state_store

pytestmark = pytest.mark.asyncio(loop_scope="session")
DAY = 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["embedded", "redis"])
def state_store(request: pytest.FixtureRequest) -> str:
    return "embedded" if request.param == "embedded" else str(request.getfixturevalue("redis_url"))


@contextlib.asynccontextmanager
async def response_store(
    url: str, data_dir: Path, ttl: float, max_bytes: int, clock: Clock
) -> AsyncIterator[ResponseStore]:
    async with open_state_store(StateConfig(state_store=url), data_dir) as state:
        store: Any = open_response_store(state, ttl, max_bytes)
        store._clock = clock
        yield store


def record(number: int, padding: int = 0) -> dict[str, Any]:
    return {"response": {"id": f"resp_{number}", "output": [], "pad": "x" * padding}, "input": []}


async def test_records_survive_reopening_and_deletion_is_final(state_store: str, tmp_path: Path) -> None:
    clock = Clock()
    async with response_store(state_store, tmp_path, DAY, 10**9, clock) as store:
        await store.put("resp_1", record(1))
    async with response_store(state_store, tmp_path, DAY, 10**9, clock) as store:
        assert await store.get("resp_1") == record(1)
        assert await store.delete("resp_1") is True
        assert await store.delete("resp_1") is False
        assert await store.get("resp_1") is None


async def test_expired_records_are_gone_and_leave_the_size_total(state_store: str, tmp_path: Path) -> None:
    clock = Clock()
    async with response_store(state_store, tmp_path, 60.0, 10**9, clock) as store:
        await store.put("resp_old", record(1, padding=1000))
        clock.now += 30
        await store.put("resp_new", record(2))
        clock.now += 31  # resp_old is 61 s old, resp_new 31 s
        assert await store.get("resp_old") is None
        assert await store.get("resp_new") == record(2)
        await store.put("resp_next", record(3))  # a write clears what expired
        total = await store.total_bytes()  # type: ignore[attr-defined]
        assert total < 1000  # resp_old's padding no longer counts


async def test_ten_thousand_responses_stay_within_the_cap_least_recently_used_out_first(
    state_store: str, tmp_path: Path
) -> None:
    clock = Clock()
    cap = 200_000
    fits = cap // len(encode(record(9999, padding=100)))
    async with response_store(state_store, tmp_path, DAY, cap, clock) as store:
        for number in range(10_000):
            clock.now += 0.001
            await store.put(f"resp_{number}", record(number, padding=100))
            if number == 100:
                await store.get("resp_0")  # a use: resp_0 is now more recent than resp_1..resp_100
            if number == fits + 50:  # about 50 evicted: resp_1... went first
                assert await store.get("resp_1") is None and await store.get("resp_0") is not None
        assert await store.total_bytes() <= cap  # type: ignore[attr-defined]
        assert await store.get("resp_9999") == record(9999, padding=100)
        assert await store.get("resp_1") is None
        kept = [n for n in range(10_000) if await store.get(f"resp_{n}") is not None]
    assert len(kept) > 1000 and kept == list(range(10_000 - len(kept), 10_000))
