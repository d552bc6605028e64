"""Fleet-wide limits over the fast tier: two real gRPC servers (each over its own fake engine) and two
real bridges in front of both, sharing one real redis-server. Limits hold for the fleet, not per
replica; usage adds up across replicas; a Redis outage gives the documented open / closed behaviour
with no 500 and no hang, and usage from the outage arrives once Redis is back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatllm.bridge.runner import BridgeServer
from chatllm.server.app import ChatLLMServer
from tests.fake_engine import FakeEngine
from tests.redis_server import RedisServer
from tests.servers import grpc_server
from tests.stack import fake_config

pytestmark = pytest.mark.asyncio(loop_scope="session")
TOKENS = {
    "free": "free-token-000000",
    "rpm": "rpm-token-111111",
    "streams": "streams-token-22",
    "tpm": "tpm-token-3333333",
    "ops": "ops-token-4444444",
}
OPTIONS = {"rpm": "rpm=6", "streams": "streams=2", "tpm": "tpm=60", "ops": "admin"}


@dataclass
class Fleet:
    servers: list[ChatLLMServer]
    bridges: list[BridgeServer]
    engines: list[FakeEngine]

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.bridges[index % len(self.bridges)].port}"


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path, store: str, failure: str = "open") -> AsyncIterator[Fleet]:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "".join(f"{name}:{token}{':' + OPTIONS[name] if name in OPTIONS else ''}\n" for name, token in TOKENS.items())
    )
    engines = [FakeEngine(), FakeEngine()]
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for index, engine in enumerate(engines):
            config = fake_config(
                tmp_path / f"replica-{index}", token_file=str(tokens), state_store=store, state_store_failure=failure
            )
            servers.append(await stack.enter_async_context(grpc_server(config, engine)))
        upstream = ",".join(f"127.0.0.1:{s.port}" for s in servers)
        bridges = []
        for index in range(2):
            config = fake_config(tmp_path / f"bridge-{index}", token_file=str(tokens), state_store=store)
            bridge = BridgeServer(config, upstream)
            await bridge.start()
            stack.push_async_callback(bridge.stop)
            bridges.append(bridge)
        yield Fleet(servers, bridges, engines)


async def ask(url: str, token: str, max_new_tokens: int = 3) -> tuple[int, dict[str, Any], float]:
    body = {"prompt": "hello there", "max_new_tokens": max_new_tokens, "use_stream_chat": False}
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/", json=body, headers={"Authorization": TOKENS[token]}) as response:
            payload = await response.json()
            return (
                response.status,
                {**payload, "retry_after": response.headers.get("Retry-After")},
                time.monotonic() - started,
            )


async def test_limits_hold_for_the_fleet_not_per_replica(redis_url: str, tmp_path: Path) -> None:
    async with fleet(tmp_path, redis_url) as running:
        answers = [await ask(running.url(n), "rpm") for n in range(12)]
        assert [status for status, _, _ in answers].count(200) == 6  # rpm=6 over two bridges and two replicas
        refused = [body for status, body, _ in answers if status == 429]
        assert {b["error"]["code"] for b in refused} == {"rate_limit_exceeded"}
        assert all(50 <= int(b["retry_after"]) <= 60 for b in refused)
        assert all(engine.seen for engine in running.engines)  # both replicas answered some

        for engine in running.engines:
            engine.stall = 0.1  # five words: half a second each
        streams = await asyncio.gather(*(ask(running.url(n), "streams") for n in range(4)))
        codes = sorted(body.get("error", {}).get("code", "ok") for _, body, _ in streams)
        assert codes == ["ok", "ok", "too_many_streams", "too_many_streams"]
        for engine in running.engines:
            engine.stall = 0.0

        status, body, _ = await ask(running.url(0), "tpm")
        assert status == 200
        used = body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        statuses = [(await ask(running.url(n), "tpm"))[0] for n in range(1, 60 // used + 3)]
        assert statuses.count(200) <= 60 // used - 1 and statuses[-1] == 429


async def test_usage_adds_up_across_replicas_and_bridges(redis_url: str, tmp_path: Path) -> None:
    async with fleet(tmp_path, redis_url) as running:
        told = [body["usage"] for status, body, _ in [await ask(running.url(n), "free", 2 + n % 3) for n in range(8)]]
        assert all(engine.seen for engine in running.engines)
        for bridge in range(2):
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": TOKENS["ops"]}
                async with session.get(running.url(bridge) + "/api/usage?token=free", headers=headers) as response:
                    (row,) = (await response.json())["totals"]
            assert row["requests"] == 8
            assert row["completion_tokens"] == sum(u["completion_tokens"] for u in told)
            assert row["prompt_tokens"] == sum(u["prompt_tokens"] for u in told)


@pytest.mark.parametrize("failure", ["open", "closed"])
async def test_redis_stopped_and_started_again(tmp_path: Path, failure: str) -> None:
    with RedisServer(tmp_path) as redis:
        async with fleet(tmp_path, redis.url(), failure) as running:
            assert (await ask(running.url(0), "rpm"))[0] == 200
            redis.stop()
            limited = [await ask(running.url(n), "rpm") for n in range(16)]
            free = [await ask(running.url(n), "free") for n in range(6)]
            assert all(seconds < 3 for _, _, seconds in limited + free), "no request waits on the dead store"
            assert [status for status, _, _ in free] == [200] * 6  # a token without limits never needs the store
            if failure == "closed":
                assert {status for status, _, _ in limited} == {503}
                assert {body["error"]["code"] for _, body, _ in limited} == {"state_store_unavailable"}
            else:  # each replica counts on its own: rpm=6 per replica instead of 6 for the fleet
                assert 6 < [status for status, _, _ in limited].count(200) <= 12
                assert {status for status, _, _ in limited} == {200, 429}
            redis.start()  # empty (no persistence): what the replicas kept is all there will be
            deadline = time.monotonic() + 10
            while True:
                async with aiohttp.ClientSession() as session:
                    headers = {"Authorization": TOKENS["ops"]}
                    async with session.get(running.url(0) + "/api/usage?token=free", headers=headers) as response:
                        rows = (await response.json()).get("totals", []) if response.status == 200 else []
                if rows and rows[0]["requests"] == 6:
                    break  # the six answered while Redis was down, sent once it came back
                assert time.monotonic() < deadline, f"usage from the outage did not arrive: {rows}"
                await asyncio.sleep(0.2)
            assert (await ask(running.url(1), "rpm"))[0] == 200  # the shared window again: one used before
