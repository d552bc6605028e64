"""A replica killed with SIGKILL changes nothing in its fleet's limits: two `chatllm server` processes over
the fake engine (tests/fake_chatllm.py: no model), two bridges in front of both, one redis-server. The
dead replica's streams stay counted until their lease runs out (the limit is never exceeded), then free
up; the requests per minute it admitted stay in the window."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatllm.bridge.runner import BridgeServer
from chatllm.kernel.state.redis_limits import LEASE_S
from tests.conftest import FAKE_CHATLLM, ChatllmProcess
from tests.redis_server import RedisServer
from tests.stack import fake_config

pytestmark = pytest.mark.asyncio(loop_scope="session")
STREAMS, RPM = "streams-token-00001", "rpm-token-000000002"
LONG = {"prompt": "tell me", "max_new_tokens": 400, "ignore_eos": True, "use_stream_chat": True}


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path, redis: RedisServer) -> AsyncIterator[tuple[list[ChatllmProcess], list[str]]]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"streams:{STREAMS}:streams=2\nrpm:{RPM}:rpm=6\n")
    common = ["--state-store", redis.url(), "--token-file", str(tokens)]
    replicas = []
    for index in range(2):
        args = ["server", "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0"]
        args += ["--data-dir", str(tmp_path / f"replica-{index}"), "--no-knowledge-base", "--tool-call-parser", "none"]
        args += ["--served-model-name", "fake-model", *common]
        log = tmp_path / f"replica-{index}.log"
        replicas.append(ChatllmProcess(args, log, {"CHATLLM_FAKE_STALL": "0.05"}, program=FAKE_CHATLLM))
    try:
        ports = [await asyncio.to_thread(replica.grpc_port) for replica in replicas]
        for replica in replicas:
            await asyncio.to_thread(replica.wait_for_log, r"ready: ", 60)
        upstream = ",".join(f"127.0.0.1:{port}" for port in ports)
        async with contextlib.AsyncExitStack() as stack:
            urls = []
            for index in range(2):
                config = fake_config(tmp_path / f"bridge-{index}", token_file=str(tokens), state_store=redis.url())
                bridge = BridgeServer(config, upstream)
                await bridge.start()
                stack.push_async_callback(bridge.stop)
                urls.append(f"http://127.0.0.1:{bridge.port}")
            yield replicas, urls
    finally:
        for replica in replicas:
            replica.stop()


async def post(session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
    return await session.post(url + "/", json=body, headers={"Authorization": token})


async def test_a_killed_replicas_streams_and_requests_stay_counted(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis:
        async with fleet(tmp_path, redis) as (replicas, urls), aiohttp.ClientSession() as session:
            quick = {"prompt": "hi", "max_new_tokens": 2, "use_stream_chat": False}
            assert [(await post(session, urls[n % 2], RPM, quick)).status for n in range(3)] == [200] * 3
            # Two long streams, one through each bridge; round-robin puts one on each replica.
            streams = [await post(session, urls[n], STREAMS, LONG) for n in range(2)]
            assert [s.status for s in streams] == [200, 200]
            for stream in streams:
                await stream.content.readuntil(b"\0")  # both are generating
            refused = await post(session, urls[0], STREAMS, quick)
            assert refused.status == 429 and (await refused.json())["error"]["code"] == "too_many_streams"

            replicas[0].proc.kill()  # SIGKILL: nothing settles, nothing renews
            replicas[0].proc.wait(10)
            killed_at = time.monotonic()
            # The live stream goes on (400 tokens: 20 s); the dead replica's stays counted until its lease runs
            # out, so a third is refused until then: never more than 2 at once.
            admitted_at = None
            while admitted_at is None:
                response = await post(session, urls[1], STREAMS, {**LONG, "max_new_tokens": 2})
                if response.status == 200:
                    admitted_at = time.monotonic()
                else:
                    assert response.status == 429, await response.text()
                    assert time.monotonic() - killed_at < LEASE_S + 10, "the dead replica's stream never freed up"
                    await asyncio.sleep(0.5)
                await response.read()
            # Renewed every LEASE_S / 3 until the kill: at least two thirds of a lease were left.
            assert admitted_at - killed_at > LEASE_S * 2 / 3 - 1
            # rpm=6: the three admitted before the kill still count (on the surviving replica too).
            statuses = [(await post(session, urls[n % 2], RPM, quick)).status for n in range(5)]
            assert statuses == [200, 200, 200, 429, 429]
            for stream in streams:
                stream.close()
