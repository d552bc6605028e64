"""The fleet as one bridge sees it: the replicas of `--upstream` (kept current by DNS), and the
picker choosing one per request. `pick` is the one place every protocol's request is routed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

import grpc

from chatllm.bridge import metrics
from chatllm.bridge.routing.picker import Candidate, Decision, Picker, RoutingRules
from chatllm.bridge.routing.prefix_index import PrefixIndex
from chatllm.bridge.routing.prefix_key import request_blocks
from chatllm.bridge.routing.replicas import DNS_REFRESH_S, Replica, resolve, split_upstream
from chatllm.clients.core import LocalGenerate
from chatllm.proto import pb

log = logging.getLogger(__name__)
RESOLVE_AT_MOST_EVERY_S = 1.0
FIRST_REPORT_S = 2.0  # a replica that keeps failing asks for DNS at most this often


class ReplicaSet:
    def __init__(
        self,
        upstream: str,
        rules: RoutingRules,
        credentials: grpc.ChannelCredentials | None = None,
        info_metadata: tuple[tuple[str, str], ...] = (),
        resolver: Callable[[str, int], Awaitable[list[str]]] = resolve,
        local: Mapping[str, LocalGenerate] | None = None,
    ) -> None:
        """`local`: the targets served in this process, with their Generate (`chatllm serve`)."""
        self.upstream = upstream
        self._local = dict(local or {})
        self.static, self.dns_name = split_upstream(upstream)
        self.index = PrefixIndex()
        self.picker = Picker(rules, self.index)
        self.replicas: dict[str, Replica] = {}
        self._credentials = credentials
        self._info_metadata = info_metadata
        self._resolve = resolver
        self._resolve_now = asyncio.Event()
        self._resolver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        metrics.REPLICAS.sources.append(self.states)
        for target in self.static:
            self._add(target, authority=None)
        if self.dns_name is not None:
            await self._refresh()
            self._resolver = asyncio.create_task(self._resolve_loop())
        # Readiness is known from the start: each replica's health answers within milliseconds (or its
        # connection is refused as fast); a replica that is slower to say stays UNKNOWN a while.
        waits = [replica.reported.wait() for replica in self.replicas.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), FIRST_REPORT_S)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            metrics.REPLICAS.sources.remove(self.states)
        if self._resolver is not None:
            self._resolver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resolver
        for name in list(self.replicas):
            await self._remove(name)

    def pick(self, blocks: list[int], exclude: Collection[str] = ()) -> tuple[Replica, Decision]:
        """The replica for a request keyed `blocks`, avoiding `exclude` (those already tried) while others serve.

        Replicas whose health is not known yet count only when none is known to serve. Raises
        NoReplicaError when nothing can be picked."""
        everyone = list(self.replicas.values())
        pool = [r for r in everyone if r.serving] or [r for r in everyone if r.serving is None]
        fresh = [r for r in pool if r.name not in exclude] or pool
        decision = self.picker.pick([Candidate(r.name, r.load) for r in fresh], blocks)
        return self.replicas[decision.replica], decision

    def route(self, request: pb.GenerateRequest, exclude: Collection[str] = ()) -> tuple[Replica, Decision]:
        """`pick` for a Generate request (its routing key is hashed only where the policy reads it)."""
        started = time.perf_counter()
        blocks = request_blocks(request) if self.picker.rules.mode == "prefix" else []
        replica, decision = self.pick(blocks, exclude)
        metrics.ROUTING_DECISION_SECONDS.observe(time.perf_counter() - started)
        metrics.ROUTING_DECISIONS.labels(decision.replica, decision.reason).inc()
        return replica, decision

    def any_replica(self, exclude: Collection[str] = ()) -> Replica:
        """For calls that carry no prompt (listings, info, tokenize): the picker's choice for an empty key."""
        return self.pick([], exclude)[0]

    def states(self) -> list[metrics.ReplicaState]:
        return [
            metrics.ReplicaState(r.name, bool(r.serving), r.in_flight, r.load, self.index.size(r.name))
            for r in self.replicas.values()
        ]

    def serving(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.serving]

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): ready while any replica serves."""
        serving = self.serving()
        states = ", ".join(f"{r.name} {_state(r)}" for r in self.replicas.values()) or "no replica resolved"
        return bool(serving), f"upstream {self.upstream}: {len(serving)} of {len(self.replicas)} serving ({states})"

    def _add(self, target: str, authority: str | None) -> None:
        replica = Replica(
            target,
            self._credentials,
            self.index,
            authority=authority,
            info_metadata=self._info_metadata,
            on_lost=self._resolve_now.set if self.dns_name is not None else None,
            local_generate=self._local.get(target),
        )
        self.replicas[target] = replica
        replica.start()

    async def _remove(self, name: str) -> None:
        replica = self.replicas.pop(name)
        self.index.remove(name)
        await replica.close()

    async def _resolve_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resolve_now.wait(), DNS_REFRESH_S)
            self._resolve_now.clear()
            await self._refresh()
            await asyncio.sleep(RESOLVE_AT_MOST_EVERY_S)

    async def _refresh(self) -> None:
        assert self.dns_name is not None
        name, port = self.dns_name
        try:
            targets = set(await self._resolve(name, port))
        except OSError as exc:
            log.warning(
                "upstream %s: cannot resolve %s (%s); keeping %d replicas", self.upstream, name, exc, len(self.replicas)
            )
            return
        for target in sorted(targets - self.replicas.keys()):
            log.info("upstream %s: replica %s joined", self.upstream, target)
            self._add(target, authority=name)
        for gone in sorted(self.replicas.keys() - targets):
            log.info("upstream %s: replica %s left", self.upstream, gone)
            await self._remove(gone)


def _state(replica: Replica) -> str:
    return {True: "SERVING", False: "NOT_SERVING", None: "UNKNOWN"}[replica.serving]
