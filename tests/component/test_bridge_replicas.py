"""The bridge's upstream (bridge/upstream.py, bridge/routing/) against real gRPC servers on port 0:
a replica whose readiness is not SERVING gets nothing, UNAVAILABLE before the first response moves
the call to another replica and a stream that already answered is not moved, prefixes stick to
their replica, a lost replica's index entries go, and DNS re-resolution adds and removes replicas.
The replicas' ChatLLM service is a small fake (this tests the routing); their health service is
grpc's real one. The whole stack with real `chatllm server` replicas is tests/e2e/test_fleet_routing.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chatllm.bridge.routing import replica_set
from chatllm.bridge.routing.picker import RoutingRules
from chatllm.bridge.routing.replicas import split_upstream
from chatllm.bridge.upstream import Upstream
from chatllm.kernel.tls import channel_credentials, load_key_pair
from chatllm.proto import SERVICE_NAME, pb, pb_grpc
from tests.certificates import CertificateAuthority

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DOCUMENT = "".join(f"Article {i}: members meet on the first Monday of each month. " for i in range(30))


@dataclass
class FakeReplica(pb_grpc.ChatLLMServicer):
    """Answers Generate with its own name; `refuse` makes it fail UNAVAILABLE, before or after a first message."""

    name: str
    refuse: str = ""  # "", "before-first", "after-first"
    calls: int = 0
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer | None = None
    port: int = 0
    tls: grpc.ServerCredentials | None = None

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        self.calls += 1
        if self.refuse == "before-first":
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is going away")
        yield pb.GenerateResponse(text=self.name)
        if self.refuse == "after-first":
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} died mid-stream")
        usage = pb.Usage(prompt_tokens=10, cached_prompt_tokens=4)
        yield pb.GenerateResponse(final=pb.GenerateFinal(finish_reason=pb.FINISH_REASON_STOP, usage=usage))

    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext) -> pb.ServerInfo:
        return pb.ServerInfo(kv_cache_tokens=4096)

    async def start(self) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_ChatLLMServicer_to_server(self, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = f"127.0.0.1:{self.port}"
        self.port = (
            self.server.add_secure_port(address, self.tls) if self.tls else self.server.add_insecure_port(address)
        )
        await self.server.start()
        await self.set_ready(True)

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(None)

    async def set_ready(self, ready: bool) -> None:
        assert self.health is not None
        await self.health.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest_asyncio.fixture(loop_scope="session")
async def replicas() -> AsyncIterator[tuple[FakeReplica, FakeReplica]]:
    a, b = FakeReplica("A"), FakeReplica("B")
    await a.start()
    await b.start()
    yield a, b
    for replica in (a, b):
        await replica.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def open_upstream() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    opened: list[Upstream] = []

    async def start(target: str, mode: str = "prefix", **kwargs: object) -> Upstream:
        upstream = Upstream(target, 10.0, rules=RoutingRules(mode=mode))
        if kwargs:
            upstream.replicas = replica_set.ReplicaSet(target, RoutingRules(mode=mode), **kwargs)  # type: ignore[arg-type]
        await upstream.start()
        opened.append(upstream)
        await wait_for(lambda: all(r.serving is not None for r in upstream.replicas.replicas.values()), "health")
        return upstream

    yield start
    for upstream in opened:
        await upstream.close()


async def wait_for(condition: Callable[[], bool], what: str, within: float = 10) -> None:
    """Health updates arrive asynchronously: poll for the state they lead to."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def answer(upstream: Upstream, prompt: str = "hi") -> str:
    return "".join([r.text async for r in upstream.generate(pb.GenerateRequest(prompt=prompt), None)])


async def test_a_replica_whose_readiness_is_not_serving_gets_nothing(replicas, open_upstream) -> None:
    a, b = replicas
    upstream = await open_upstream(f"{a.target},{b.target}", "round-robin")
    assert set([await answer(upstream) for _ in range(6)]) == {"A", "B"}

    await a.set_ready(False)  # e.g. draining, or its engine died
    await wait_for(lambda: upstream.replicas.replicas[a.target].serving is False, "A not serving")
    before = a.calls
    assert {await answer(upstream) for _ in range(10)} == {"B"}
    assert a.calls == before, "a NOT_SERVING replica was still sent calls"
    ready, why = await upstream.readiness()
    assert ready and "1 of 2 serving" in why

    await a.set_ready(True)
    await wait_for(lambda: bool(upstream.replicas.replicas[a.target].serving), "A serving again")
    assert set([await answer(upstream) for _ in range(6)]) == {"A", "B"}


async def test_unavailable_before_the_first_response_moves_to_the_other_replica(replicas, open_upstream) -> None:
    a, b = replicas
    a.refuse = "before-first"  # A's health still says SERVING: only the retry saves these calls
    upstream = await open_upstream(f"{a.target},{b.target}", "round-robin")
    assert {await answer(upstream) for _ in range(6)} == {"B"}
    assert a.calls >= 1


async def test_a_stream_that_already_answered_is_not_moved(replicas, open_upstream) -> None:
    a, b = replicas
    a.refuse = b.refuse = "after-first"
    upstream = await open_upstream(f"{a.target},{b.target}")
    call = upstream.generate(pb.GenerateRequest(prompt="hi"), None)
    stream = aiter(call)
    assert (await anext(stream)).text in ("A", "B")
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await anext(stream)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE and "mid-stream" in (cut.value.details() or "")
    assert a.calls + b.calls == 1  # one attempt, on one replica


async def test_no_serving_replica_is_unavailable_after_the_retries(replicas, open_upstream) -> None:
    a, b = replicas
    upstream = await open_upstream(f"{a.target},{b.target}")
    for replica in (a, b):
        await replica.set_ready(False)
    await wait_for(lambda: not upstream.replicas.serving(), "nothing serving")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await answer(upstream)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and "no replica is serving" in failed.value.details()
    assert (await upstream.readiness())[0] is False


async def test_a_prefix_stays_on_its_replica_and_new_prefixes_spread(replicas, open_upstream) -> None:
    a, b = replicas
    upstream = await open_upstream(f"{a.target},{b.target}")
    first = [await answer(upstream, f"{i} {DOCUMENT}") for i in range(4)]
    assert Counter(first) == {"A": 2, "B": 2}
    for i, replica in enumerate(first):
        assert await answer(upstream, f"{i} {DOCUMENT} And what about the second Monday?") == replica


async def test_a_lost_replica_drops_its_index_entries_and_comes_back(replicas, open_upstream) -> None:
    a, b = replicas
    upstream = await open_upstream(f"{a.target},{b.target}")
    fleet = upstream.replicas
    await wait_for(lambda: fleet.replicas[a.target].kv_cache_tokens == 4096, "A's KV capacity")
    owner = await answer(upstream, DOCUMENT)
    victim = a if owner == "A" else b
    assert fleet.index.size(victim.target) > 0
    await victim.stop()  # its process is gone
    await wait_for(lambda: fleet.replicas[victim.target].serving is False, "the lost replica marked down")
    await wait_for(lambda: fleet.index.size(victim.target) == 0, "its index entries dropped")
    assert await answer(upstream, DOCUMENT) != victim.name  # the other replica serves everything
    await victim.start()  # restarted on the same port
    await wait_for(lambda: bool(fleet.replicas[victim.target].serving), "the restarted replica used again", 15)


async def test_dns_re_resolution_adds_and_removes_replicas(replicas, open_upstream, monkeypatch) -> None:
    a, b = replicas
    records = [a.target]

    async def resolver(name: str, port: int) -> list[str]:
        assert (name, port) == ("chatllm-server-headless", 50051)
        return list(records)

    monkeypatch.setattr(replica_set, "DNS_REFRESH_S", 0.05)
    monkeypatch.setattr(replica_set, "RESOLVE_AT_MOST_EVERY_S", 0.01)
    upstream = await open_upstream("dns:///chatllm-server-headless:50051", resolver=resolver)
    assert list(upstream.replicas.replicas) == [a.target]
    records.append(b.target)  # the Service scaled up
    await wait_for(lambda: b.target in upstream.replicas.replicas, "B joining")
    await wait_for(lambda: len(upstream.replicas.serving()) == 2, "B serving")
    records.remove(a.target)  # ... and A's pod went away
    await wait_for(lambda: a.target not in upstream.replicas.replicas, "A leaving")
    assert {await answer(upstream) for _ in range(4)} == {"B"}


async def test_tls_checks_each_resolved_address_against_the_name(tmp_path: Path, open_upstream) -> None:
    """A headless Service's pods have certificates for the Service's name, not for their addresses."""
    ca = CertificateAuthority(tmp_path)
    leaf = ca.issue("server", names=("chatllm-server-headless",))
    pair = load_key_pair(leaf.cert, leaf.key)
    replica = FakeReplica("A", tls=grpc.ssl_server_credentials([(pair.key, pair.cert)]))
    await replica.start()

    async def resolver(name: str, port: int) -> list[str]:
        return [replica.target]

    try:
        target = "dns:///chatllm-server-headless:50051"
        credentials = channel_credentials(ca.cert, None, None)
        upstream = await open_upstream(target, resolver=resolver, credentials=credentials)
        assert await answer(upstream) == "A"
        # closed while its replica still answers: a TLS channel closed while it reconnects to a stopped
        # server can hang in grpc's shutdown (seen after a test whose calls the server aborted)
        await upstream.close()
    finally:
        await replica.stop()


def test_upstream_targets() -> None:
    assert split_upstream("server:50051") == (["server:50051"], None)
    assert split_upstream("dns:///chatllm-server-headless:50051") == ([], ("chatllm-server-headless", 50051))
    assert split_upstream("10.0.0.1:50051, server-b:50052") == (["10.0.0.1:50051", "server-b:50052"], None)
    assert split_upstream("[::1]:1,[fe80::2]:2") == (["[::1]:1", "[fe80::2]:2"], None)
    assert split_upstream("unix:/run/chatllm/grpc.sock") == (["unix:/run/chatllm/grpc.sock"], None)
    for bad, why in (
        ("10.0.0.1,10.0.0.2:1", "not host:port"),
        ("10.0.0.1:0,10.0.0.2:1", "not host:port"),
        ("dns:///name", "not host:port"),
        (" , ", "no target"),
    ):
        with pytest.raises(ValueError, match=why):
            split_upstream(bad)
