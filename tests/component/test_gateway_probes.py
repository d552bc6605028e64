"""What serving gateways (SMG, vLLM Router, llm-d) probe a worker for (kernel/load_report.py), on the
gRPC server's HTTP side and on the bridge, over the fake engine: /health, /load, /v1/loads, /version.
SMG itself in front of real replicas: tests/e2e/test_fleet_routing.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from chatllm.bridge.state import UPSTREAM
from chatllm.proto import SERVICE_NAME
from tests.fake_engine import FakeEngine
from tests.fleet import free_port
from tests.servers import grpc_server
from tests.stack import Stack, fake_config, serving_stack


async def get(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, object]:
    async with session.get(url, headers=headers) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


async def test_the_servers_http_side_answers_the_gateway_probes(tmp_path: Path, fake_engine: FakeEngine) -> None:
    port = free_port()
    config = fake_config(tmp_path, metrics_port=port, token="secret", protect_metrics=True)
    async with grpc_server(config, fake_engine) as server, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}"
        assert await get(session, url + "/health") == (200, "")
        status, version = await get(session, url + "/version")
        assert status == 200 and version == {"version": server.state.version}
        assert (await get(session, url + "/load"))[0] == 401  # --protect-metrics: as /metrics
        assert await get(session, url + "/load", Authorization="Bearer secret") == (200, {"server_load": 0})
        status, loads = await get(session, url + "/v1/loads?include=core,queues", Authorization="secret")
        assert status == 200 and loads["dp_rank_count"] == 1  # type: ignore[index]
        (rank,) = loads["loads"]  # type: ignore[index]
        assert rank["num_running_reqs"] == 0 and rank["token_usage"] == 0.0 and "cache_hit_rate" in rank

        await server.health.set(SERVICE_NAME, 2)  # readiness NOT_SERVING (draining, engine dead)
        server.serving = False
        assert (await get(session, url + "/health"))[0] == 503


async def test_the_bridge_answers_them_for_its_replicas(tmp_path: Path, fake_engine: FakeEngine) -> None:
    async with serving_stack(fake_config(tmp_path), fake_engine) as stack, aiohttp.ClientSession() as session:
        await replica_reported(stack)
        assert await get(session, stack.http_url + "/health") == (200, "")
        assert await get(session, stack.http_url + "/load") == (200, {"server_load": 0})
        status, loads = await get(session, stack.http_url + "/v1/loads")
        assert status == 200 and loads["dp_rank_count"] == 1  # type: ignore[index]
        assert (await get(session, stack.http_url + "/version"))[0] == 200
        await stack.server.health.set(SERVICE_NAME, 2)
        assert await eventually_status(session, stack.http_url + "/health", 503)


async def replica_reported(stack: Stack) -> None:
    replicas = stack.bridge.app[UPSTREAM].replicas
    for _ in range(200):
        if all(r.info is not None for r in replicas.replicas.values()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replica never sent a load report")


async def eventually_status(session: aiohttp.ClientSession, url: str, status: int) -> bool:
    for _ in range(200):
        if (await get(session, url))[0] == status:
            return True
        await asyncio.sleep(0.05)
    return False
