"""The replicas `--upstream` names, each with its own channel, its health and its load.

Targets:
- `host:port` (or a `unix:` socket): one replica;
- `A:port,B:port,...`: one replica per entry;
- `dns:///name:port` (a Kubernetes headless Service): one replica per address the name resolves
  to, resolved again every `DNS_REFRESH_S` and whenever a replica's connection is lost: new
  addresses join, vanished ones leave. With TLS each address is checked against `name`.

Each replica's readiness comes from the standard health service's Watch stream (the
`chatllm.v1.ChatLLM` service: NOT_SERVING while loading, draining or with a dead engine; a lost
connection counts as not serving), so the picker only ever sees replicas that can answer. Each
channel also keeps gRPC's own client-side health check (gRFC A17), so a call never reaches a
replica gRPC already knows is not serving. Loads are the bridge's own in-flight calls per replica,
raised by the running + waiting requests the replica last reported (`GetServerInfo`, polled every
`INFO_POLL_S`; other bridges' work shows there). A replica not serving for `LOST_AFTER_S` loses its
prefix-index entries (a restarted engine has an empty cache); its KV capacity sizes its index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2

from chatllm.bridge.channel import channel_options
from chatllm.bridge.routing.prefix_index import PrefixIndex
from chatllm.bridge.routing.prefix_key import BLOCK_CHARS
from chatllm.clients.core import ChatLLMCore, LocalGenerate, Metadata, open_channel
from chatllm.proto import pb

log = logging.getLogger(__name__)

DNS_REFRESH_S = 10.0
INFO_POLL_S = 1.0
INFO_RPC_S = 2.0
WATCH_BACKOFF_S = (0.2, 2.0)  # first and longest wait before watching a lost replica again
LOST_AFTER_S = 2.0  # not serving for this long: its prefix-index entries go
CHARS_PER_TOKEN = 4  # the routing key counts characters; engines count tokens
DEFAULT_INDEX_BLOCKS = 65_536  # until a replica reports its KV capacity
SERVING = health_pb2.HealthCheckResponse.SERVING


class Replica:
    """One gRPC server of the fleet."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        index: PrefixIndex,
        *,
        authority: str | None = None,
        info_metadata: Metadata = (),
        on_lost: Callable[[], None] | None = None,
        local_generate: LocalGenerate | None = None,
    ) -> None:
        """`local_generate`: this replica is the server in this process (`chatllm serve`), which answers
        Generate without the channel (chatllm.clients.core)."""
        self.name = target
        # Every call the bridge makes to this replica goes through its core, on its one channel.
        channel = open_channel(target, credentials, channel_options(authority))
        self.core = ChatLLMCore(channel, target, local_generate)
        self.serving: bool | None = None  # None until its health service first answers
        self.in_flight = 0
        self.reported_load = 0
        self.kv_cache_tokens = 0
        self.info: pb.ServerInfo | None = None  # its last load report
        self._index = index
        self._info_metadata = info_metadata
        self._on_lost = on_lost
        self._tasks: list[asyncio.Task[None]] = []
        self._forget: asyncio.TimerHandle | None = None
        self.reported = asyncio.Event()  # its health service answered (or could not be reached) once
        index.set_capacity(self.name, DEFAULT_INDEX_BLOCKS)

    @property
    def load(self) -> int:
        return max(self.in_flight, self.reported_load)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch_health()), asyncio.create_task(self._poll_info())]

    async def close(self) -> None:
        if self._forget is not None:
            self._forget.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.core.close()

    def _set_serving(self, serving: bool, why: str) -> None:
        if serving == self.serving:
            return
        was, self.serving = self.serving, serving
        self.reported.set()
        if self._forget is not None:
            self._forget.cancel()
            self._forget = None
        if not serving:
            self.reported_load, self.info = 0, None
            # A connection the server aged out (GOAWAY) is back within milliseconds with its cache; a
            # replica still not serving after LOST_AFTER_S died, restarts or drains: its cache is gone.
            self._forget = asyncio.get_running_loop().call_later(LOST_AFTER_S, self._index.forget, self.name)
        if was is not None or not serving:
            log.info("replica %s %s (%s)", self.name, "serving" if serving else "not serving", why)

    async def _watch_health(self) -> None:
        wait = WATCH_BACKOFF_S[0]
        while True:
            try:
                async for reply in self.core.watch_health():
                    self._set_serving(
                        reply.status == SERVING, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                    )
                    wait = WATCH_BACKOFF_S[0]
                why = "health stream ended"
            except grpc.aio.AioRpcError as exc:
                why = f"{exc.code().name}: {exc.details()}"
            self._set_serving(False, why)
            if self._on_lost is not None:
                self._on_lost()
            await self._channel_changed(wait)
            wait = min(wait * 2, WATCH_BACKOFF_S[1])

    async def _channel_changed(self, within: float) -> None:
        """Wait until the channel's state changes, or `within` seconds. With client-side health checking
        the channel turns READY the moment the replica reports SERVING (a server that finished loading),
        so it is watched again at once, not after the backoff."""
        channel = self.core.channel
        state = channel.get_state(try_to_connect=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.wait_for_state_change(state), within)

    async def _poll_info(self) -> None:
        while True:
            if self.serving:
                try:
                    info = await self.core.server_info(self._info_metadata, INFO_RPC_S)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                        log.info("replica %s: no load reports without a token the replica accepts", self.name)
                        return  # the bridge's in-flight counts stand alone
                else:
                    self._take_info(info)
            await asyncio.sleep(INFO_POLL_S)

    def _take_info(self, info: pb.ServerInfo) -> None:
        self.info = info
        self.reported_load = info.active_requests + info.waiting_requests
        if info.kv_cache_tokens and info.kv_cache_tokens != self.kv_cache_tokens:
            self.kv_cache_tokens = info.kv_cache_tokens
            self._index.set_capacity(self.name, max(1, info.kv_cache_tokens * CHARS_PER_TOKEN // BLOCK_CHARS))


def split_upstream(upstream: str) -> tuple[list[str], tuple[str, int] | None]:
    """(static targets, (name, port) to resolve) for `--upstream`."""
    parts = [part.strip() for part in upstream.split(",") if part.strip()]
    if not parts:
        raise ValueError("--upstream: no target given")
    if len(parts) == 1 and parts[0].startswith("dns:"):
        host, port = _host_and_port(parts[0].split("/")[-1], upstream)
        return [], (host.strip("[]"), port)
    if len(parts) > 1:
        for part in parts:
            _host_and_port(part, upstream)
    return parts, None


def _host_and_port(text: str, upstream: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise ValueError(
            f"--upstream {upstream!r}: {text!r} is not host:port (one target, a comma-separated list of "
            "host:port, or dns:///name:port)"
        )
    return host, int(port)


async def resolve(name: str, port: int) -> list[str]:
    """The `address:port` targets `name` resolves to now (IPv6 in brackets), sorted."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    targets = {f"[{info[4][0]}]:{port}" if info[0] == socket.AF_INET6 else f"{info[4][0]}:{port}" for info in infos}
    return sorted(targets)
