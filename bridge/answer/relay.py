"""One Generate call relayed to a bridge client: the answer so far (`Progress`) after each message, metrics,
cancellation.

Every protocol (legacy HTTP, SSE, WebSocket, OpenAI) consumes the same `relay()`
generator, so timing, token counts and the cancel-on-exit rule live in one place:
when the consumer stops early (client gone, handler cancelled) the generator is
closed and the gRPC call is cancelled, which aborts the engine request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from chatllm.bridge import errors, metrics
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.upstream import Upstream
from chatllm.proto import pb


class _Timer:
    """Bridge-side TTFT and inter-token latency (what a client of the bridge experiences)."""

    def __init__(self, protocol: str) -> None:
        self.started = time.perf_counter()
        self.last: float | None = None
        self.tokens = 0
        self._first_token = metrics.TIME_TO_FIRST_TOKEN.labels(protocol)
        self._inter_token = metrics.INTER_TOKEN.labels(protocol)  # looked up once, observed per token

    def observe(self, completion_tokens: int) -> None:
        new = completion_tokens - self.tokens
        if new <= 0:
            return
        now = time.perf_counter()
        if self.last is None:
            self._first_token.observe(now - self.started)
        else:
            per_token = (now - self.last) / new
            for _ in range(new):
                self._inter_token.observe(per_token)
        self.last, self.tokens = now, completion_tokens


class Cancellable(Protocol):
    def cancel(self) -> bool: ...


class InFlightCalls:
    """The bridge's Generate calls, so a shutdown whose grace is over can end them with an error
    the client can read (a last `{"error": ...}` object, an error frame + `<EOS>`), not a cut stream."""

    def __init__(self) -> None:
        self._calls: set[Cancellable] = set()
        self._cut: set[Cancellable] = set()

    def add(self, call: Cancellable) -> None:
        self._calls.add(call)

    def discard(self, call: Cancellable) -> None:
        self._calls.discard(call)
        self._cut.discard(call)

    def cut_all(self) -> int:
        for call in self._calls:
            self._cut.add(call)
            call.cancel()
        return len(self._calls)

    def was_cut(self, call: Cancellable) -> bool:
        return call in self._cut


def _shutdown_error() -> errors.ApiError:
    return errors.unavailable(
        "server shutting down: the answer was cut when the --shutdown-grace period ended", code="draining"
    )


async def relay(
    upstream: Upstream,
    request: pb.GenerateRequest,
    protocol: str,
    client_authorization: str | None,
    calls: InFlightCalls,
) -> AsyncIterator[Progress]:
    """Yield the same Progress object after every upstream message (the last one has `final`).

    Raises grpc.aio.AioRpcError for a failed call, ApiError when the bridge's shutdown cut it;
    use with contextlib.aclosing."""
    timer = _Timer(protocol)
    progress = Progress()
    code = "CANCELLED"  # until the stream completes or fails
    call = upstream.generate(request, client_authorization)
    calls.add(call)
    metrics.GENERATIONS_IN_FLIGHT.labels(protocol).inc()
    try:
        async for response in call:
            progress.apply(response)
            timer.observe(progress.completion_tokens)
            yield progress
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        raise
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if calls.was_cut(call) and not (task is not None and task.cancelling()):
            code = "UNAVAILABLE"
            raise _shutdown_error() from None  # our own cancel of the call, not of this task
        raise
    finally:
        calls.discard(call)
        call.cancel()
        metrics.GENERATIONS_IN_FLIGHT.labels(protocol).dec()
        metrics.GENERATIONS.labels(protocol, code).inc()
        metrics.GENERATION_DURATION.labels(protocol).observe(time.perf_counter() - timer.started)
        metrics.GENERATION_TOKENS.labels(protocol).inc(progress.completion_tokens)
        if progress.final is not None:
            metrics.PROMPT_TOKENS.labels(protocol).inc(progress.final.usage.prompt_tokens)
        reason = progress.finish_reason or ("abort" if code == "CANCELLED" else "error")
        metrics.FINISH_REASONS.labels(protocol, reason).inc()


def request_id(given: str | None) -> str:
    """The client's X-Request-Id when it is usable (printable, at most 128 chars), else a new one."""
    if given and len(given) <= 128 and given.isprintable():
        return given
    return uuid.uuid4().hex
