"""Per-token limits through the state store, the same rules on both backends: the embedded store (this
process) and a real redis-server shared by two limiters standing for two replicas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatllm.kernel.access import TokenLimits
from chatllm.kernel.config import StateConfig
from chatllm.kernel.state.connection import StateStore, open_state_store
from chatllm.kernel.state.failure import StoreUnavailable
from chatllm.kernel.state.limits import TokenLimiter, seconds_to_utc_midnight
from chatllm.kernel.state.refusal import LimitExceeded
from tests.redis_server import RedisServer

WINDOW = 0.6  # seconds: the tests' "minute"


@pytest.fixture(params=["embedded", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    url = "embedded" if request.param == "embedded" else request.getfixturevalue("redis_url")
    async with open_state_store(StateConfig(url), tmp_path) as opened:
        yield opened


async def refused(limiter: TokenLimiter, name: str, limits: TokenLimits) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        await limiter.admit(name, limits)
    return caught.value


async def test_streams(store: StateStore) -> None:
    limiter = TokenLimiter(store, WINDOW)
    limits = TokenLimits(streams=2)
    first, _ = await limiter.admit("a", limits), await limiter.admit("a", limits)
    error = await refused(limiter, "a", limits)
    assert (error.limit, error.refusal.used, error.refusal.allowed) == ("streams", 2, 2)
    assert "streams=2" in str(error)
    await limiter.admit("b", limits)  # another token is not affected
    await limiter.settle(first, 0)
    await limiter.settle(first, 0)  # settling twice frees one stream, once
    await limiter.admit("a", limits)
    await refused(limiter, "a", limits)


async def test_requests_per_minute_is_a_sliding_window(store: StateStore) -> None:
    limiter = TokenLimiter(store, WINDOW)
    limits = TokenLimits(rpm=3)
    started = time.monotonic()
    for _ in range(3):
        await limiter.settle(await limiter.admit("a", limits), 0)
    error = await refused(limiter, "a", limits)
    assert error.limit == "rpm" and 0 < error.retry_after <= WINDOW
    await asyncio.sleep(max(0.0, started + WINDOW + 0.05 - time.monotonic()))
    await limiter.admit("a", limits)  # the window moved past the first three


async def test_tokens_per_minute_reserve_then_settle_to_what_was_used(store: StateStore) -> None:
    limiter = TokenLimiter(store, WINDOW)
    limits = TokenLimits(tpm=100)
    first = await limiter.admit("a", limits)
    await limiter.reserve(first, 60)
    second = await limiter.admit("a", limits)  # 60 of 100 used: still admitted
    with pytest.raises(LimitExceeded) as caught:
        await limiter.reserve(second, 60)  # 60 + 60 > 100
    assert caught.value.limit == "tpm" and caught.value.refusal.asked == 60
    assert 0 < caught.value.retry_after <= WINDOW
    await limiter.settle(first, 10)  # it used 10 of its 60
    await limiter.reserve(second, 60)  # 10 + 60 <= 100
    third = await limiter.admit("a", limits)
    with pytest.raises(LimitExceeded):
        await limiter.reserve(third, 31)
    await limiter.reserve(third, 30)
    error = await refused(limiter, "a", limits)  # 100 of 100: nothing left to admit against
    assert error.limit == "tpm"


async def test_a_request_larger_than_the_budget_runs_alone(store: StateStore) -> None:
    limiter = TokenLimiter(store, WINDOW)
    limits = TokenLimits(tpm=100)
    big = await limiter.admit("a", limits)
    await limiter.reserve(big, 500)  # the window is empty: it may run
    await limiter.settle(big, 450)
    error = await refused(limiter, "a", limits)
    assert error.limit == "tpm" and error.retry_after <= WINDOW


async def test_daily_budget_until_utc_midnight(store: StateStore) -> None:
    limiter = TokenLimiter(store, WINDOW)
    limits = TokenLimits(daily_tokens=100)
    first = await limiter.admit("a", limits)
    await limiter.reserve(first, 80)
    await limiter.settle(first, 50)
    second = await limiter.admit("a", limits)
    with pytest.raises(LimitExceeded) as caught:
        await limiter.reserve(second, 60)
    assert caught.value.limit == "daily_tokens"
    assert abs(caught.value.retry_after - seconds_to_utc_midnight(time.time())) < 5
    await limiter.reserve(second, 50)
    await limiter.settle(second, 50)
    error = await refused(limiter, "a", limits)
    assert error.limit == "daily_tokens" and "100 tokens for today" in str(error)


async def test_no_limits_never_touch_the_store(tmp_path: Path) -> None:
    async with open_state_store(StateConfig("redis://127.0.0.1:1/0", "closed"), tmp_path) as store:
        limiter = TokenLimiter(store, WINDOW)
        ticket = await limiter.admit("free", TokenLimits())  # the store is unreachable, and not asked
        await limiter.reserve(ticket, 1000)
        await limiter.settle(ticket, 1000)


async def test_two_replicas_share_one_limit_atomically(redis_url: str, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(open_state_store(StateConfig(redis_url), tmp_path)) for _ in "ab"]
        limiters = [TokenLimiter(s, 30.0) for s in stores]
        limits = TokenLimits(rpm=10, streams=6)

        async def attempt(index: int) -> bool:
            try:
                await limiters[index % 2].admit("a", limits)
                return True
            except LimitExceeded:
                return False

        admitted = await asyncio.gather(*(attempt(i) for i in range(40)))
        assert sum(admitted) == 6  # the streams limit, fleet-wide, under 40 racing requests


async def test_a_dead_replicas_streams_free_up_when_its_lease_runs_out(redis_url: str, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(open_state_store(StateConfig(redis_url), tmp_path)) for _ in "ab"]
        alive = await stack.enter_async_context(TokenLimiter(stores[0], WINDOW, lease=0.6).running())
        dead = TokenLimiter(stores[1], WINDOW, lease=0.6)  # admits, then never renews nor settles
        limits = TokenLimits(streams=2)
        kept = await alive.admit("a", limits)
        await dead.admit("a", limits)
        await refused(alive, "a", limits)
        deadline = time.monotonic() + 5
        while True:
            try:
                await alive.admit("a", limits)  # the dead replica's stream expired; the live one is renewed
                break
            except LimitExceeded:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        await refused(alive, "a", limits)  # kept is still held: its lease was renewed
        await alive.settle(kept, 0)


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_outage(tmp_path: Path, mode: str) -> None:
    limits = TokenLimits(rpm=2, streams=5)
    with RedisServer(tmp_path) as server:
        async with open_state_store(StateConfig(server.url(), mode), tmp_path) as store:
            limiter = TokenLimiter(store, 30.0)
            shared = await limiter.admit("a", limits)
            assert shared.shared
            server.stop()
            if mode == "closed":
                with pytest.raises(StoreUnavailable):
                    await limiter.admit("a", limits)
            else:  # this process's own counters stand in: the limit still holds, per process
                local = [await limiter.admit("a", limits) for _ in range(2)]
                assert not any(t.shared for t in local)
                await refused(limiter, "a", limits)
            await limiter.settle(shared, 0)  # never raises, store or not
