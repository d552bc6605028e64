"""One Generate call relayed to a bridge client: progress updates, metrics, cancellation.

Every protocol (legacy HTTP, SSE, WebSocket, OpenAI) consumes the same
`relay()` generator, so timing, token counts and the cancel-on-exit rule live in
one place: when the consumer stops early (client gone, handler cancelled) the
generator is closed and the gRPC call is cancelled, which aborts the engine request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from chatllm.bridge import metrics
from chatllm.bridge.upstream import Upstream
from chatllm.proto import pb

FINISH_NAMES = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
    pb.FINISH_REASON_ERROR: "error",
}


@dataclass
class Progress:
    """The answer so far, updated in place after each upstream message."""

    text: str = ""
    delta: str = ""
    completion_tokens: int = 0
    request_id: str = ""
    final: pb.GenerateFinal | None = None

    @property
    def finish_reason(self) -> str | None:
        return FINISH_NAMES.get(self.final.finish_reason, "stop") if self.final is not None else None

    def usage(self) -> dict[str, int]:
        """Token counts; prompt_tokens is only known once the final message arrived (0 before)."""
        if self.final is not None:
            u = self.final.usage
            return {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            }
        return {"prompt_tokens": 0, "completion_tokens": self.completion_tokens, "total_tokens": self.completion_tokens}

    def sources(self) -> list[dict[str, Any]]:
        """Knowledge-base chunks the answer was given, as the legacy replies carry them."""
        if self.final is None:
            return []
        return [
            {"file": s.file, "chunk": s.chunk, "score": round(s.score, 4), "text": s.text} for s in self.final.sources
        ]


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


async def relay(
    upstream: Upstream, request: pb.GenerateRequest, protocol: str, client_authorization: str | None
) -> AsyncIterator[Progress]:
    """Yield the same Progress object after every upstream message (the last one has `final`).

    Raises grpc.aio.AioRpcError for a failed call; use with contextlib.aclosing."""
    timer = _Timer(protocol)
    progress = Progress()
    code = "CANCELLED"  # until the stream completes or fails
    call = upstream.generate(request, client_authorization)
    metrics.GENERATIONS_IN_FLIGHT.labels(protocol).inc()
    try:
        async for response in call:
            timer.observe(response.completion_tokens)
            progress.delta = response.text
            progress.text += response.text
            progress.completion_tokens = response.completion_tokens
            progress.request_id = response.request_id
            if response.HasField("final"):
                progress.final = response.final
            yield progress
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        raise
    finally:
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
