"""The Generate pipeline: validate -> admit -> (retrieve) -> build prompt -> stream from the engine.

Kept apart from the servicer so the servicer stays protobuf-in/protobuf-out and
this module holds the one place where a request's life is timed and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from chatllm.clients.config import KnowledgeConfig, LimitsConfig, ServerConfig
from chatllm.proto import pb
from chatllm.server import metrics, sampling
from chatllm.server.admission import Admission
from chatllm.server.chat import Chat, ChatInput, ChatTurn, Retrieved
from chatllm.server.engines.base import Engine, Finish
from chatllm.server.errors import DeadlineExceeded, InvalidArgument, NotReady, Reason, RequestFailed

log = logging.getLogger(__name__)

MAX_REQUEST_ID = 128
MAX_RETRIEVAL_TOP_K = 50
KB_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FINISH_TO_PB = {
    Finish.STOP: pb.FINISH_REASON_STOP,
    Finish.LENGTH: pb.FINISH_REASON_LENGTH,
    Finish.ABORT: pb.FINISH_REASON_ABORT,
    Finish.ERROR: pb.FINISH_REASON_ERROR,
}


class Retriever(Protocol):
    async def retrieve_chunks(self, knowledge_base: str, query: str, top_k: int) -> list[Retrieved]: ...


class HistorySink(Protocol):
    def record(self, entry: dict[str, Any]) -> None: ...


def knowledge_base_name(name: str, field: str = "knowledge_base") -> str:
    name = name or "default"
    if not KB_NAME.match(name):
        raise InvalidArgument(field, "use 1-64 letters, digits, '_' or '-'")
    return name


def validate(request: pb.GenerateRequest, limits: LimitsConfig) -> None:
    if not request.prompt.strip():
        raise InvalidArgument("prompt", "must not be empty")
    if len(request.prompt) + len(request.system_prompt) > limits.max_prompt_chars:
        raise InvalidArgument("prompt", f"prompt and system prompt exceed {limits.max_prompt_chars} characters")
    if len(request.history) > limits.max_history_rounds:
        raise InvalidArgument("history", f"at most {limits.max_history_rounds} rounds")
    history_chars = sum(len(t.user) + len(t.assistant) for t in request.history)
    if history_chars > limits.max_prompt_chars * 4:
        raise InvalidArgument("history", f"history exceeds {limits.max_prompt_chars * 4} characters")
    if len(request.request_id) > MAX_REQUEST_ID:
        raise InvalidArgument("request_id", f"at most {MAX_REQUEST_ID} characters")
    if request.retrieval_top_k > MAX_RETRIEVAL_TOP_K:
        raise InvalidArgument("retrieval_top_k", f"at most {MAX_RETRIEVAL_TOP_K}")
    if request.use_knowledge_base:
        knowledge_base_name(request.knowledge_base)


class GenerateService:
    def __init__(
        self,
        server: ServerConfig,
        limits: LimitsConfig,
        kb: KnowledgeConfig,
        engine: Engine,
        chat: Chat,
        admission: Admission,
        retriever: Retriever | None = None,
        history: HistorySink | None = None,
    ) -> None:
        self.limits = limits
        self.kb = kb
        self.engine = engine
        self.chat = chat
        self.admission = admission
        self.retriever = retriever
        self.history = history
        self.defaults = sampling.SamplingDefaults.resolve(
            server.max_new_tokens, server.temperature, server.top_k, server.top_p, engine.generation_config
        )

    async def _retrieve(self, request: pb.GenerateRequest) -> list[Retrieved] | None:
        if not request.use_knowledge_base:
            return None
        if self.retriever is None:
            raise NotReady("the knowledge base is not enabled on this server", Reason.KNOWLEDGE_BASE_DISABLED)
        top_k = request.retrieval_top_k or self.kb.retrieval_top_k
        return await self.retriever.retrieve_chunks(knowledge_base_name(request.knowledge_base), request.prompt, top_k)

    async def stream(self, request: pb.GenerateRequest) -> AsyncIterator[pb.GenerateResponse]:
        arrival = time.perf_counter()
        validate(request, self.limits)
        options = sampling.from_pb(request.sampling if request.HasField("sampling") else None, self.defaults)
        self.engine.check_options(options)
        request_id = request.request_id or uuid.uuid4().hex
        channel = request.channel or "grpc"
        timeout = self.limits.request_timeout
        deadline = arrival + timeout if timeout > 0 else None
        metrics.QUEUE_DEPTH.inc()
        try:
            slot = self.admission.slot()
            await _within(slot.__aenter__(), deadline, "waiting for a free slot")
        finally:
            metrics.QUEUE_DEPTH.dec()
        try:
            async for response in self._generate(request, options, request_id, channel, arrival, deadline):
                yield response
        finally:
            await slot.__aexit__(None, None, None)

    async def _generate(
        self,
        request: pb.GenerateRequest,
        options: sampling.SamplingOptions,
        request_id: str,
        channel: str,
        arrival: float,
        deadline: float | None,
    ) -> AsyncIterator[pb.GenerateResponse]:
        retrieval_started = time.perf_counter()
        knowledge = await _within(self._retrieve(request), deadline, "retrieving knowledge-base chunks")
        retrieval_seconds = time.perf_counter() - retrieval_started if knowledge is not None else 0.0
        chat_input = ChatInput(
            prompt=request.prompt,
            system_prompt=request.system_prompt,
            history=[ChatTurn(t.user, t.assistant) for t in request.history],
            raw=request.raw_prompt,
        )
        built = self.chat.build(chat_input, options.max_new_tokens, knowledge)
        options = dataclasses.replace(options, max_new_tokens=built.max_new_tokens)
        engine_id = f"{request_id}:{uuid.uuid4().hex[:8]}"  # unique even if a client reuses ids
        timer = _Deadline(deadline, lambda: self.engine.abort(engine_id))
        answer: list[str] = []
        first_token_at: float | None = None
        last_at = arrival
        tokens_seen = 0
        queue_seconds = 0.0
        final = None
        ended = "abort"  # what to record when no final message went out: abort (client gone), timeout, error
        try:
            async with contextlib.aclosing(self.engine.generate(built.ids, options, engine_id)) as outputs:
                async for out in outputs:
                    now = time.perf_counter()
                    if out.queue_seconds is not None:
                        queue_seconds = out.queue_seconds
                    new_tokens = out.completion_tokens - tokens_seen
                    if new_tokens > 0:
                        if first_token_at is None:
                            first_token_at = now
                            metrics.TIME_TO_FIRST_TOKEN.observe(now - arrival)
                        else:
                            for _ in range(new_tokens):
                                metrics.INTER_TOKEN.observe((now - last_at) / new_tokens)
                        last_at, tokens_seen = now, out.completion_tokens
                    answer.append(out.text)
                    if out.finish is None:
                        yield pb.GenerateResponse(
                            text=out.text, completion_tokens=out.completion_tokens, request_id=request_id
                        )
                        continue
                    if timer.fired:
                        ended = "timeout"
                        raise DeadlineExceeded(
                            f"request took longer than --request-timeout {self.limits.request_timeout:g}s"
                        )
                    if out.finish is Finish.ERROR:
                        ended = "error"
                        raise RequestFailed(f"the engine failed this request: {out.error or 'unknown error'}")
                    final = self._final(
                        out, built.ids, arrival, first_token_at, queue_seconds, retrieval_seconds, knowledge
                    )
                    yield pb.GenerateResponse(
                        text=out.text, completion_tokens=out.completion_tokens, request_id=request_id, final=final
                    )
        except Exception:
            if ended == "abort":
                ended = "error"  # the engine died or broke
            raise
        finally:
            timer.cancel()
            outcome = _finish_name(final.finish_reason) if final is not None else ended
            self._record(request, request_id, channel, built.history_rounds, "".join(answer), final, arrival, outcome)

    def _final(
        self,
        out: Any,
        prompt_ids: list[int],
        arrival: float,
        first_token_at: float | None,
        queue_seconds: float,
        retrieval_seconds: float,
        knowledge: list[Retrieved] | None,
    ) -> pb.GenerateFinal:
        now = time.perf_counter()
        usage = pb.Usage(
            prompt_tokens=len(prompt_ids),
            completion_tokens=out.completion_tokens,
            total_tokens=len(prompt_ids) + out.completion_tokens,
        )
        timings = pb.Timings(
            queue_seconds=queue_seconds,
            time_to_first_token_seconds=(first_token_at - arrival) if first_token_at else 0.0,
            total_seconds=now - arrival,
            retrieval_seconds=retrieval_seconds,
        )
        sources = [
            pb.Source(document_id=k.document_id, file=k.file, chunk=k.chunk, score=k.score, text=k.text)
            for k in knowledge or []
        ]
        return pb.GenerateFinal(finish_reason=FINISH_TO_PB[out.finish], usage=usage, timings=timings, sources=sources)

    def _record(
        self,
        request: pb.GenerateRequest,
        request_id: str,
        channel: str,
        rounds: int,
        response: str,
        final: pb.GenerateFinal | None,
        arrival: float,
        reason: str,
    ) -> None:
        """Metrics and history export for every request that reached the engine."""
        latency = time.perf_counter() - arrival
        metrics.E2E_LATENCY.labels(channel).observe(latency)
        metrics.FINISH_REASONS.labels(reason).inc()
        if final is not None:
            metrics.PROMPT_TOKENS.inc(final.usage.prompt_tokens)
            metrics.GENERATION_TOKENS.inc(final.usage.completion_tokens)
            metrics.QUEUE_TIME.observe(final.timings.queue_seconds)
        if self.history is None:
            return
        usage = final.usage if final else pb.Usage()
        self.history.record(
            {  # the exporter stamps "time" (UTC) when it takes the line
                "request_id": request_id,
                "channel": channel,
                "prompt": request.prompt,
                "system_prompt": request.system_prompt,
                "history_length": len(request.history),
                "history_rounds_used": rounds,
                "response": response,
                "finish_reason": reason,
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
                "latency_seconds": round(latency, 4),
                "knowledge_base": request.knowledge_base or "default" if request.use_knowledge_base else None,
            }
        )


def _finish_name(reason: pb.FinishReason) -> str:
    return pb.FinishReason.Name(reason).removeprefix("FINISH_REASON_").lower()


async def _within(awaitable: Any, deadline: float | None, what: str) -> Any:
    """Await with the request's deadline (--request-timeout)."""
    if deadline is None:
        return await awaitable
    remaining = deadline - time.perf_counter()
    try:
        return await asyncio.wait_for(awaitable, max(remaining, 0.001))
    except TimeoutError:
        raise DeadlineExceeded(f"--request-timeout passed while {what}") from None


class _Deadline:
    """Aborts the engine request when the deadline passes (the stream then ends with ABORT)."""

    def __init__(self, deadline: float | None, abort: Callable[[], Any]) -> None:
        self.fired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(deadline - time.perf_counter(), 0.0)
            self._handle = loop.call_later(delay, self._fire, abort)

    def _fire(self, abort: Callable[[], Any]) -> None:
        self.fired = True
        self._task = asyncio.ensure_future(abort())

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
