"""The state store over a real redis-server: calls, Lua scripts, and an outage with its end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from chatllm.kernel.config import StateConfig
from chatllm.kernel.state.connection import open_state_store
from chatllm.kernel.state.failure import StoreUnavailable
from tests.redis_server import RedisServer

INCREMENT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_calls_and_scripts_reach_redis(redis_url: str, tmp_path: Path) -> None:
    async with open_state_store(StateConfig(state_store=redis_url), tmp_path) as store:
        assert not store.embedded and store.sqlite_path is None
        increment = store.script(INCREMENT)
        key = store.key("test", "counter")
        for _ in range(3):
            await store.redis_call("test", lambda redis: increment(keys=[key], args=[2], client=redis))
        assert await store.redis_call("test", lambda redis: redis.get(key)) == b"6"
    assert not (tmp_path / "state").exists()  # nothing written locally


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_outage_fails_fast_and_the_store_comes_back(tmp_path: Path, mode: str) -> None:
    with RedisServer(tmp_path) as server:
        async with open_state_store(StateConfig(server.url(), mode), tmp_path) as store:
            increment = store.script(INCREMENT)
            key = store.key("outage")
            await store.redis_call("test", lambda redis: increment(keys=[key], args=[1], client=redis))
            server.stop()
            started = time.monotonic()
            for _ in range(20):
                with pytest.raises(StoreUnavailable):
                    await store.redis_call("test", lambda redis: increment(keys=[key], args=[1], client=redis))
            assert time.monotonic() - started < 2.0  # refused connections, then marked down: no waiting
            assert store.policy.fail_closed is (mode == "closed")
            server.start()  # same port, empty (no persistence): the script is loaded again on first use
            deadline = time.monotonic() + 5
            while True:
                try:
                    value = await store.redis_call("test", lambda redis: increment(keys=[key], args=[5], client=redis))
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "the store did not come back"
                    await asyncio.sleep(0.2)
            assert value == 5
