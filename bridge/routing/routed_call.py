"""A Generate call on the replica the picker chose, retried on another while nothing was answered.

The rule is gRPC's own (gRFC A6): a call is retried only until its first response arrives. A
replica that is unreachable, dies or refuses with UNAVAILABLE (loading, draining) before answering
hands the request to another replica, up to `MAX_ATTEMPTS` attempts with a jittered exponential
backoff; once an answer has started, a failure ends the call with its error. The whole call keeps
one deadline. It looks like a grpc.aio stream to its reader: iterate it, `cancel()` it, and a
failure is a grpc.aio.AioRpcError.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from chatllm.bridge import metrics
from chatllm.bridge.routing.picker import NoReplicaError
from chatllm.bridge.routing.replica_set import ReplicaSet
from chatllm.bridge.routing.replicas import Replica
from chatllm.clients.core import ChatLLMCore, Metadata
from chatllm.proto import SERVICE_NAME, pb

MAX_ATTEMPTS = 4
BACKOFF_S = (0.1, 1.0)  # first and longest backoff (each doubles the last, then a random share of it)
T = TypeVar("T")
GENERATE = f"/{SERVICE_NAME}/Generate"


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class RoutedCall:
    def __init__(
        self,
        replicas: ReplicaSet,
        request: pb.GenerateRequest,
        metadata: Metadata,
        timeout: float | None,
        raw: bytes | None = None,
    ) -> None:
        """`raw`: the request's bytes as a client sent them (the front door): they go upstream as they
        are, and the responses come back as bytes (`request` only routes)."""
        self._replicas = replicas
        self._request = request
        self._raw = raw
        self._metadata = metadata
        self._deadline = time.monotonic() + timeout if timeout else None
        self._call: grpc.aio.UnaryStreamCall | None = None
        self._cancelled = False
        self.replica: str | None = None  # the replica answering (or that answered last)

    def cancel(self) -> bool:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
        return True

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    def _start(self, replica: Replica, timeout: float | None) -> grpc.aio.UnaryStreamCall:
        if self._raw is None:
            return replica.core.generate(self._request, self._metadata, timeout)
        return replica.core.passthrough(GENERATE, "unary_stream")(self._raw, metadata=self._metadata, timeout=timeout)

    async def _responses(self) -> AsyncIterator[Any]:
        tried: list[str] = []
        for attempt in range(MAX_ATTEMPTS):
            last_attempt = attempt == MAX_ATTEMPTS - 1
            try:
                replica, _ = self._replicas.route(self._request, exclude=tried)
            except NoReplicaError as exc:
                if last_attempt:
                    raise rpc_error(grpc.StatusCode.UNAVAILABLE, f"{exc} ({self._replicas.upstream})") from None
                await self._back_off(attempt)
                continue
            answered, timeout = False, self._remaining()
            self.replica = replica.name
            self._call = call = self._start(replica, timeout)
            replica.in_flight += 1
            last = None
            try:
                async for response in call:
                    answered, last = True, response
                    yield response
                _count_cache(replica.name, last)
                return
            except grpc.aio.AioRpcError as exc:
                if answered or exc.code() != grpc.StatusCode.UNAVAILABLE or last_attempt or self._cancelled:
                    raise
                tried.append(replica.name)
                metrics.ROUTING_RETRIES.labels(replica.name).inc()
            finally:
                replica.in_flight -= 1
                call.cancel()
            await self._back_off(attempt)

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return left

    async def _back_off(self, attempt: int) -> None:
        if self._cancelled:
            raise asyncio.CancelledError
        await asyncio.sleep(backoff_seconds(attempt))
        if self._cancelled:
            raise asyncio.CancelledError


async def unary_call(replicas: ReplicaSet, rpc: Callable[[ChatLLMCore], Awaitable[T]]) -> T:
    """A unary call (listings, info, tokenize: no prompt to route by), `rpc` on the picker's choice for an
    empty key, moved to another replica on UNAVAILABLE as `RoutedCall` does."""

    async def invoke(replica: Replica) -> T:
        return await rpc(replica.core)

    return await _with_retries(replicas, invoke)


async def forwarded_call(
    replicas: ReplicaSet, path: str, raw: bytes, metadata: Metadata, timeout: float | None
) -> bytes:
    """`unary_call` for the gRPC front door: the request's bytes as they came, the reply's as they go."""

    async def invoke(replica: Replica) -> bytes:
        return await replica.core.passthrough(path, "unary_unary")(raw, metadata=metadata, timeout=timeout)

    return await _with_retries(replicas, invoke)


async def _with_retries(replicas: ReplicaSet, invoke: Callable[[Replica], Awaitable[T]]) -> T:
    tried: list[str] = []
    for attempt in range(MAX_ATTEMPTS):
        last_attempt = attempt == MAX_ATTEMPTS - 1
        try:
            replica = replicas.any_replica(exclude=tried)
        except NoReplicaError as exc:
            if last_attempt:
                raise rpc_error(grpc.StatusCode.UNAVAILABLE, f"{exc} ({replicas.upstream})") from None
        else:
            try:
                return await invoke(replica)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or last_attempt:
                    raise
                tried.append(replica.name)
        await asyncio.sleep(backoff_seconds(attempt))
    raise AssertionError("unreachable")


def backoff_seconds(attempt: int) -> float:
    return random.uniform(0, min(BACKOFF_S[0] * 2**attempt, BACKOFF_S[1]))


def _count_cache(replica: str, last: pb.GenerateResponse | bytes | None) -> None:
    """The last message of a complete stream is the final one: its usage says what the cache gave."""
    response = pb.GenerateResponse.FromString(last) if isinstance(last, bytes) else last
    if response is None or not response.HasField("final"):
        return
    usage = response.final.usage
    metrics.REPLICA_PROMPT_TOKENS.labels(replica).inc(usage.prompt_tokens)
    metrics.REPLICA_CACHED_PROMPT_TOKENS.labels(replica).inc(usage.cached_prompt_tokens)
