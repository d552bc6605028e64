"""The bridge's upstream channel (bridge/channel.py) against real gRPC servers on port 0:
client-side health checking keeps calls off a replica whose readiness is not SERVING,
UNAVAILABLE before the first response is retried on another replica, and a stream that
already answered is not. The replicas' ChatLLM service is a small fake (this tests the
channel); their health service is grpc's real one. The whole stack with two real
`chatllm server` replicas is tests/e2e/test_replica_failover.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chatllm.bridge.channel import channel_target, service_config, upstream_channel
from chatllm.proto import SERVICE_NAME, pb, pb_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Replica(pb_grpc.ChatLLMServicer):
    """Answers Generate with its own name; `refuse` makes it fail UNAVAILABLE, before or after a first message."""

    name: str
    refuse: str = ""  # "", "before-first", "after-first"
    attempts: list[str] = field(default_factory=list)  # grpc-previous-rpc-attempts of each call ("0" = first try)
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer | None = None
    port: int = 0

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        metadata = dict(context.invocation_metadata() or ())
        self.attempts.append(str(metadata.get("grpc-previous-rpc-attempts", "0")))
        if self.refuse == "before-first":
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is going away")
        yield pb.GenerateResponse(text=self.name, request_id=request.request_id)
        if self.refuse == "after-first":
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} died mid-stream")
        yield pb.GenerateResponse(final=pb.GenerateFinal(finish_reason=pb.FINISH_REASON_STOP))

    async def start(self) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_ChatLLMServicer_to_server(self, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        await self.set_ready(True)

    async def set_ready(self, ready: bool) -> None:
        assert self.health is not None
        await self.health.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)


@pytest_asyncio.fixture
async def replicas() -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica("A"), Replica("B")
    await a.start()
    await b.start()
    yield a, b
    for replica in (a, b):
        assert replica.server is not None
        await replica.server.stop(None)


async def answered_by(channel: grpc.aio.Channel, calls: int) -> list[str]:
    stub = pb_grpc.ChatLLMStub(channel)
    names = []
    for _ in range(calls):
        responses = [r async for r in stub.Generate(pb.GenerateRequest(prompt="hi"), timeout=10)]
        names.append(responses[0].text)
    return names


async def wait_until_all_answered_by(channel: grpc.aio.Channel, name: str, within: float = 10) -> None:
    """Health updates reach the channel asynchronously: poll until a run of calls lands on `name` only."""
    deadline = asyncio.get_running_loop().time() + within
    while set(await answered_by(channel, 6)) != {name}:
        assert asyncio.get_running_loop().time() < deadline, f"calls still reach replicas other than {name}"
        await asyncio.sleep(0.05)


async def test_round_robin_skips_a_replica_whose_readiness_is_not_serving(replicas) -> None:
    a, b = replicas
    async with upstream_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:
        assert set(await answered_by(channel, 8)) == {"A", "B"}  # both serving: both get calls

        await a.set_ready(False)  # e.g. draining, or its engine died
        await wait_until_all_answered_by(channel, "B")
        before = len(a.attempts)
        assert set(await answered_by(channel, 20)) == {"B"}
        assert len(a.attempts) == before, "a NOT_SERVING replica was still sent calls"

        await a.set_ready(True)
        deadline = asyncio.get_running_loop().time() + 10
        while set(await answered_by(channel, 6)) != {"A", "B"}:
            assert asyncio.get_running_loop().time() < deadline, "the replica never came back into rotation"


async def test_without_the_health_check_config_calls_do_reach_the_unready_replica(replicas) -> None:
    """The control case: the same channel minus healthCheckConfig keeps sending to A."""
    a, b = replicas
    config = service_config()
    del config["healthCheckConfig"]
    options = [("grpc.service_config", json.dumps(config))]
    await a.set_ready(False)
    async with grpc.aio.insecure_channel(channel_target(f"127.0.0.1:{a.port},127.0.0.1:{b.port}"), options) as channel:
        assert "A" in await answered_by(channel, 8)


async def test_unavailable_before_the_first_response_is_retried_on_the_other_replica(replicas) -> None:
    a, b = replicas
    a.refuse = "before-first"  # A's health still says SERVING: only the retry policy saves these calls
    async with upstream_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:
        assert set(await answered_by(channel, 10)) == {"B"}
    # A refused first tries (a retry may land on A again: each attempt is a fresh pick);
    # B answered retries, which carry gRPC's grpc-previous-rpc-attempts header.
    assert "0" in a.attempts and any(n != "0" for n in b.attempts)


async def test_a_stream_that_already_answered_is_not_retried(replicas) -> None:
    a, b = replicas
    a.refuse = b.refuse = "after-first"
    async with upstream_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:
        call = pb_grpc.ChatLLMStub(channel).Generate(pb.GenerateRequest(prompt="hi"), timeout=10)
        first = await call.read()
        assert first.text in ("A", "B")
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await call.read()
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE and "mid-stream" in (cut.value.details() or "")
    assert a.attempts + b.attempts == ["0"]  # one attempt, on one replica


def test_upstream_targets() -> None:
    assert channel_target("server:50051") == "server:50051"
    assert channel_target("dns:///chatllm-server-headless:50051") == "dns:///chatllm-server-headless:50051"
    assert channel_target("10.0.0.1:50051, 10.0.0.2:50052") == "ipv4:10.0.0.1:50051,10.0.0.2:50052"
    assert channel_target("localhost:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("[::1]:1,[fe80::2]:2") == "ipv6:[::1]:1,[fe80::2]:2"
    for bad, why in (
        ("server-a:1,server-b:2", "dns:///"),
        ("10.0.0.1,10.0.0.2:1", "not IP:port"),
        ("10.0.0.1:1,[::1]:2", "IPv4 and IPv6"),
        ("10.0.0.1:0,10.0.0.2:1", "not IP:port"),
        (" , ", "no target"),
    ):
        with pytest.raises(ValueError, match=why.replace("/", "/")):
            channel_target(bad)


def test_the_service_config_names_the_readiness_service_and_retries_only_unavailable() -> None:
    config = service_config()
    assert config["healthCheckConfig"] == {"serviceName": "chatllm.v1.ChatLLM"}
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["name"] == [
        {"service": "chatllm.v1.ChatLLM"},
        {"service": "grpc.health.v1.Health", "method": "Check"},
    ]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
