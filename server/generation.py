"""The Generate pipeline: validate -> admit -> (retrieve) -> build prompt -> stream from the engine.

Kept apart from the servicer so the servicer stays protobuf-in/protobuf-out and
this module holds the one place where a request's life is timed and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from google.protobuf.json_format import MessageToDict

from chatllm.kernel.access import ANONYMOUS_CALLER, Caller
from chatllm.kernel.config import KnowledgeConfig, LimitsConfig, ServerConfig
from chatllm.kernel.priority import Priority, clamp
from chatllm.kernel.request_rules import channel_label
from chatllm.proto import pb
from chatllm.server import metrics, sampling
from chatllm.server.admission import Admission, Admitted
from chatllm.server.chat import Chat, ChatInput, ChatTurn, Retrieved
from chatllm.server.choices import ChoiceSet
from chatllm.server.engines.base import Engine, Finish
from chatllm.server.errors import DeadlineExceeded, InvalidArgument, NotReady, Reason, RequestFailed
from chatllm.server.models import ServedModels
from chatllm.server.tools import ToolCalling, ToolSession, tool_dicts
from chatllm.server.usage import RequestUsage
from chatllm.server.validation import knowledge_base_name, validate

log = logging.getLogger(__name__)


class Retriever(Protocol):
    async def retrieve_chunks(self, knowledge_base: str, query: str, top_k: int) -> list[Retrieved]: ...


class HistorySink(Protocol):
    def record(self, entry: dict[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a validated request asks of the engine."""

    options: sampling.SamplingOptions  # as the client asked
    engine_options: sampling.SamplingOptions  # what the engine is asked, prepared by it (best_of: all candidates)
    tools: ToolSession | None
    adapter: str | None
    model: str

    @property
    def collects(self) -> bool:
        """best_of: the engine generates the candidates, the answer (the best n) goes out at the end."""
        return self.engine_options.n > self.options.n


def template_message(message: pb.Message) -> dict[str, Any]:
    """A message as chat templates read it (OpenAI's shape; call arguments as objects, as vLLM passes them)."""
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role}
    out["content"] = message.content
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def chat_input(request: pb.GenerateRequest, tools: ToolSession | None) -> ChatInput:
    return ChatInput(
        prompt=request.prompt,
        system_prompt=request.system_prompt,
        history=[ChatTurn(t.user, t.assistant) for t in request.history],
        raw=request.raw_prompt,
        messages=[template_message(m) for m in request.messages],
        tools=tool_dicts(request.tools) if tools is not None else (),
        template_kwargs=MessageToDict(request.chat_template_kwargs) if request.HasField("chat_template_kwargs") else {},
    )


class GenerateService:
    def __init__(
        self,
        server: ServerConfig,
        limits: LimitsConfig,
        kb: KnowledgeConfig,
        engine: Engine,
        chat: Chat,
        admission: Admission,
        models: ServedModels,
        tool_calling: ToolCalling | None = None,
        retriever: Retriever | None = None,
        history: HistorySink | None = None,
    ) -> None:
        self.limits = limits
        self.kb = kb
        self.engine = engine
        self.chat = chat
        self.admission = admission
        self.models = models
        self.tool_calling = tool_calling
        self.retriever = retriever
        self.history = history
        self.defaults = sampling.SamplingDefaults.resolve(
            server.max_new_tokens, server.temperature, server.top_k, server.top_p, engine.generation_config
        )

    def plan(self, request: pb.GenerateRequest) -> Plan:
        """Validate the request and decide what the engine is asked (refusals before admission)."""
        validate(request, self.limits)
        options = sampling.from_pb(request.sampling if request.HasField("sampling") else None, self.defaults)
        constraint = None
        if request.HasField("structured_output"):
            constraint = sampling.constraint_from_pb(request.structured_output)
        tools = None
        if request.tools:
            if self.tool_calling is None:
                raise InvalidArgument("tools", "tool calling is off on this server (--tool-call-parser none)")
            tools = self.tool_calling.session(request, constraint)
        if tools is not None:
            constraint = tools.constraint
            options = options.with_values(skip_special_tokens=tools.skip_special_tokens)
        options = dataclasses.replace(options, constraint=constraint)
        engine_options = options
        if options.best_of is not None and options.best_of > options.n:  # rank candidates by total log probability
            engine_options = options.with_values(n=options.best_of, logprobs=options.logprobs or 0)
        adapter = self.models.adapter_for(request.model)
        return Plan(options, self.engine.prepare(engine_options), tools, adapter, adapter or self.models.base.id)

    async def _retrieve(self, request: pb.GenerateRequest, question: str) -> list[Retrieved] | None:
        if not request.use_knowledge_base:
            return None
        if self.retriever is None:
            raise NotReady("the knowledge base is not enabled on this server", Reason.KNOWLEDGE_BASE_DISABLED)
        top_k = request.retrieval_top_k or self.kb.retrieval_top_k
        return await self.retriever.retrieve_chunks(knowledge_base_name(request.knowledge_base), question, top_k)

    async def stream(
        self, request: pb.GenerateRequest, caller: Caller = ANONYMOUS_CALLER
    ) -> AsyncIterator[pb.GenerateResponse]:
        """The answer to `request` from `caller` (whose token's name is logged and exported, and whose
        limits admission applies)."""
        arrival = time.perf_counter()
        plan = self.plan(request)
        request_id = request.request_id or uuid.uuid4().hex
        timeout = self.limits.request_timeout
        deadline = arrival + timeout if timeout > 0 else None
        slot = self.admission.slot(caller, clamp(requested_priority(request), caller.priority))
        admitted = await _within(slot.__aenter__(), deadline, "waiting for a free slot")
        try:
            # aclosing: a consumer that leaves closes the engine stream now (aborting it), not at GC.
            answer = self._generate(request, admitted, plan, request_id, arrival, deadline)
            async with contextlib.aclosing(answer) as responses:
                async for response in responses:
                    yield response
        finally:
            await slot.__aexit__(None, None, None)

    async def _generate(
        self,
        request: pb.GenerateRequest,
        admitted: Admitted,
        plan: Plan,
        request_id: str,
        arrival: float,
        deadline: float | None,
    ) -> AsyncGenerator[pb.GenerateResponse, None]:
        retrieval_started = time.perf_counter()
        conversation = chat_input(request, plan.tools)
        knowledge = await _within(self._retrieve(request, conversation.question), deadline, "retrieving chunks")
        retrieval_seconds = time.perf_counter() - retrieval_started if knowledge is not None else 0.0
        built = self.chat.build(conversation, plan.options.max_new_tokens, knowledge)
        options = plan.engine_options.with_values(max_new_tokens=built.max_new_tokens)
        collect = plan.collects
        await admitted.reserve(len(built.ids), options.n * options.max_new_tokens)
        engine_id = f"{request_id}:{uuid.uuid4().hex[:8]}"  # unique even if a client reuses ids
        timer = _Deadline(deadline, lambda: self.engine.abort(engine_id))
        choices = ChoiceSet(options.n, built.ids, request_id, plan.tools, plan.options.logprobs is not None, plan.model)
        clock = _TokenClock(arrival)
        final = None
        ended = "abort"  # what to record when no final message went out: abort (client gone), timeout, error
        try:
            outputs = self.engine.generate(built.ids, options, engine_id, plan.adapter, int(admitted.priority))
            async with contextlib.aclosing(outputs):
                async for out in outputs:
                    new_tokens = out.completion_tokens - choices.choices[out.index].completion_tokens
                    clock.tick(new_tokens)
                    admitted.generated(new_tokens)
                    if out.queue_seconds is not None:
                        clock.queue_seconds = out.queue_seconds
                    if out.finish is not None and timer.fired:
                        ended = "timeout"
                        raise DeadlineExceeded(
                            f"request took longer than --request-timeout {self.limits.request_timeout:g}s"
                        )
                    if out.finish is Finish.ERROR:
                        ended = "error"
                        raise RequestFailed(f"the engine failed this request: {out.error or 'unknown error'}")
                    response = choices.response(out)
                    if collect or response is None:
                        continue
                    if out.finish is not None and choices.done:  # only an ending output can end the last choice
                        final = self._final(choices, plan, arrival, clock, retrieval_seconds, knowledge)
                        response.final.CopyFrom(final)
                    yield response
            if collect:
                choices = choices.best(plan.options.n)
                final = self._final(choices, plan, arrival, clock, retrieval_seconds, knowledge)
                responses = choices.whole_responses()
                responses[-1].final.CopyFrom(final)
                for response in responses:
                    yield response
        except Exception:
            if ended == "abort":
                ended = "error"  # the engine died or broke
            raise
        finally:
            timer.cancel()
            outcome = _finish_name(final.finish_reason) if final is not None else ended
            admitted.usage = _usage(plan, choices, admitted, final)
            record = Record(request_id, admitted.caller.name, built.history_rounds, arrival, outcome, admitted.usage)
            self._record(request, record, choices.answer(), final)

    def _final(
        self,
        choices: ChoiceSet,
        plan: Plan,
        arrival: float,
        clock: _TokenClock,
        retrieval_seconds: float,
        knowledge: list[Retrieved] | None,
    ) -> pb.GenerateFinal:
        now = time.perf_counter()
        prompt_tokens, completion_tokens = len(choices.prompt_ids), choices.completion_tokens
        usage = pb.Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            cached_prompt_tokens=choices.cached_tokens,
        )
        timings = pb.Timings(
            queue_seconds=clock.queue_seconds,
            time_to_first_token_seconds=(clock.first_token_at - arrival) if clock.first_token_at else 0.0,
            total_seconds=now - arrival,
            retrieval_seconds=retrieval_seconds,
        )
        sources = [
            pb.Source(document_id=k.document_id, file=k.file, chunk=k.chunk, score=k.score, text=k.text)
            for k in knowledge or []
        ]
        ends = choices.ends()
        return pb.GenerateFinal(
            finish_reason=ends[0].finish_reason,
            usage=usage,
            timings=timings,
            sources=sources,
            choices=ends,
            model=plan.model,
        )

    def _record(
        self, request: pb.GenerateRequest, record: Record, response: str, final: pb.GenerateFinal | None
    ) -> None:
        """Metrics, a log line and the history export for every request that reached the engine."""
        latency = time.perf_counter() - record.arrival
        channel = request.channel or "grpc"
        reason = record.outcome
        metrics.E2E_LATENCY.labels(channel_label(channel)).observe(latency)
        metrics.FINISH_REASONS.labels(reason).inc()
        usage = final.usage if final else pb.Usage()
        if final is not None:
            metrics.PROMPTS.add(final.usage.prompt_tokens, final.usage.cached_prompt_tokens)
            metrics.GENERATION_TOKENS.inc(final.usage.completion_tokens)
            metrics.QUEUE_TIME.observe(final.timings.queue_seconds)
        log.info(
            "generate request_id=%r token=%s channel=%s finish=%s prompt_tokens=%d completion_tokens=%d %.3fs",
            record.request_id,
            record.token_name,
            channel,
            reason,
            record.used.prompt_tokens,
            record.used.completion_tokens,
            latency,
        )
        if self.history is None:
            return
        entry: dict[str, Any] = {  # the exporter stamps "time" (UTC) when it takes the line
            "request_id": record.request_id,
            "token": record.token_name,
            "channel": channel,
            "prompt": request.prompt,
            "system_prompt": request.system_prompt,
            "history_length": len(request.history),
            "history_rounds_used": record.rounds,
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
        if request.messages:
            entry["messages"] = [MessageToDict(m, preserving_proto_field_name=True) for m in request.messages]
        for name in ("model", "user"):
            if getattr(request, name):
                entry[name] = getattr(request, name)
        if request.metadata:
            entry["metadata"] = dict(request.metadata)
        self.history.record(entry)


@dataclasses.dataclass(frozen=True)
class Record:
    """What the record of a finished request needs besides the request and the answer."""

    request_id: str
    token_name: str  # the caller's token's name, never the token
    rounds: int
    arrival: float
    outcome: str
    used: RequestUsage  # for an answer cut short: what the engine produced before it was dropped


class _TokenClock:
    """Time to first token and inter-token latency over all of a request's choices."""

    def __init__(self, arrival: float) -> None:
        self.arrival = arrival
        self.first_token_at: float | None = None
        self.last_at = arrival
        self.queue_seconds = 0.0

    def tick(self, new_tokens: int) -> None:
        if new_tokens <= 0:
            return
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
            metrics.TIME_TO_FIRST_TOKEN.observe(now - self.arrival)
        else:
            for _ in range(new_tokens):
                metrics.INTER_TOKEN.observe((now - self.last_at) / new_tokens)
        self.last_at = now


def requested_priority(request: pb.GenerateRequest) -> Priority | None:
    """The class the request asks for (None: it asks nothing)."""
    return _PRIORITIES.get(request.priority)


_PRIORITIES = {
    pb.PRIORITY_INTERACTIVE: Priority.INTERACTIVE,
    pb.PRIORITY_DEFAULT: Priority.DEFAULT,
    pb.PRIORITY_BULK: Priority.BULK,
}


def _usage(plan: Plan, choices: ChoiceSet, admitted: Admitted, final: pb.GenerateFinal | None) -> RequestUsage:
    """What the client was told it used; for an answer cut short (cancelled, failed), what it consumed."""
    if final is not None:
        usage = final.usage
        return RequestUsage(plan.model, usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens)
    return RequestUsage(plan.model, len(choices.prompt_ids), choices.cached_tokens, admitted.completion_tokens)


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
        self._aborting: set[asyncio.Future[Any]] = set()  # the loop keeps only weak references to tasks
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(deadline - time.perf_counter(), 0.0)
            self._handle = loop.call_later(delay, self._fire, abort)

    def _fire(self, abort: Callable[[], Any]) -> None:
        self.fired = True
        task = asyncio.ensure_future(abort())
        self._aborting.add(task)
        task.add_done_callback(self._aborting.discard)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
