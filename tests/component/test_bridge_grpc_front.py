"""The bridge's gRPC front door (`chatllm bridge --grpc-port`, bridge/grpc_front.py) in front of two
real gRPC servers over the fake engine: every ChatLLM call is forwarded (streams included), errors
keep their code and google.rpc details, a prefix sticks to its replica, health and reflection
answer, and the bridge's own token check comes first. No model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from chatllm.bridge.runner import BridgeServer
from chatllm.clients import AsyncChatClient, error_details
from chatllm.proto import SERVICE_NAME
from chatllm.server.app import ChatLLMServer
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.servers import grpc_server
from tests.stack import fake_config

DOCUMENT = "".join(f"Rule {i}: guests check out by eleven in the morning. " for i in range(40))


@pytest_asyncio.fixture(loop_scope="session")
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[list[FakeEngine], list[ChatLLMServer], BridgeServer]]:
    engines = [FakeEngine(answer="first replica"), FakeEngine(answer="second replica")]
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            # The replicas check the same token: the caller's `authorization` must reach them.
            await stack.enter_async_context(grpc_server(fake_config(tmp_path / f"r{i}", token="secret"), engine))
            for i, engine in enumerate(engines)
        ]
        upstream = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        bridge = BridgeServer(fake_config(tmp_path / "bridge", token="secret"), upstream, grpc_port=0)
        await bridge.start()
        stack.push_async_callback(bridge.stop)
        yield engines, servers, bridge


def front_door(bridge: BridgeServer) -> str:
    assert bridge.front_door is not None
    return f"127.0.0.1:{bridge.front_door.port}"


async def test_generate_streams_through_and_a_prefix_stays_on_its_replica(fleet) -> None:
    engines, _, bridge = fleet
    async with AsyncChatClient(front_door(bridge), token="secret") as client:
        first = await client.chat(f"{DOCUMENT} Question one?", temperature=0)
        again = [await client.chat(f"{DOCUMENT} Question {n}?", temperature=0) for n in ("two", "three")]
        deltas = [r.text async for r in client.stream("something else entirely", temperature=0)]
    assert first.text in ("first replica", "second replica") and first.finish_reason == "stop"
    assert {r.text for r in again} == {first.text}  # the shared document keeps them on one replica
    assert len([d for d in deltas if d]) == 2  # each word came as its own message
    assert sum(len(engine.seen) for engine in engines) == 4


async def test_unary_calls_and_errors_are_forwarded_untouched(fleet) -> None:
    _, _, bridge = fleet
    async with AsyncChatClient(front_door(bridge), token="secret") as client:
        models = await client.models()
        info = await client.server_info()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.chat("hello", temperature=7.0)
        with pytest.raises(grpc.aio.AioRpcError) as no_kb:
            await client.list_documents("default")
    assert [m.id for m in models.models] == [FAKE_MODEL] and info.version
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(refused.value)
    assert details.reason == "INVALID_FIELD" and details.field == "sampling.temperature"
    assert no_kb.value.code() == grpc.StatusCode.UNAVAILABLE  # the replicas' own answer, with their message
    assert no_kb.value.details() == "the knowledge base is not enabled on this server"


async def test_the_bridge_checks_its_token_first(fleet) -> None:
    engines, _, bridge = fleet
    before = sum(len(engine.seen) for engine in engines)
    async with AsyncChatClient(front_door(bridge), token="wrong") as client:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await client.chat("hello")
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(denied.value).reason == "UNAUTHENTICATED"
    assert sum(len(engine.seen) for engine in engines) == before


async def test_health_and_reflection(fleet) -> None:
    _, _, bridge = fleet
    async with grpc.aio.insecure_channel(front_door(bridge)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        alive = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert alive.status == health_pb2.HealthCheckResponse.SERVING
        await status_becomes(health, health_pb2.HealthCheckResponse.SERVING)  # once the replicas said so
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]))]
    names = {service.name for service in replies[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_readiness_follows_the_replicas(fleet) -> None:
    _, servers, bridge = fleet
    for server in servers:
        await server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    async with grpc.aio.insecure_channel(front_door(bridge)) as channel:
        await status_becomes(health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckResponse.NOT_SERVING)


async def status_becomes(health: health_pb2_grpc.HealthStub, status: int) -> None:
    """Watch the front door's readiness until it is `status` (DEADLINE_EXCEEDED if it never is)."""
    async for reply in health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10):
        if reply.status == status:
            return
