"""The `hf` engine: Hugging Face transformers' own continuous batching.

`model.init_continuous_batching()` runs a background thread with a paged KV
cache; results reach the event loop through `register_result_handler`. Sampling
is per request (`per_request_processors=True`): the manager's generation config
only has to *enable* the temperature/top-k/top-p processors, so it is built with
placeholder values and every request passes all three explicitly. Greedy is
top_k=1. The library has no per-request seed, penalties, min-p, logit bias,
logprobs, parallel sampling (n) or structured outputs: such requests are refused
with INVALID_ARGUMENT naming the field (UNSUPPORTED_BY_BACKEND), never silently
ignored. Stop strings (with include_stop_str_in_output) and skip_special_tokens are
applied here, on the generated token ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from chatllm.kernel.config import Config
from chatllm.kernel.cpu import cpu_precision, read_cpuinfo
from chatllm.kernel.flags import SPECULATIVE_NEEDS_VLLM
from chatllm.server.engines.base import Adapter, EngineInfo, EngineOutput, EngineStats, Finish
from chatllm.server.engines.text_stream import IncrementalDetokenizer, StopMatcher
from chatllm.server.errors import EngineDeadError, StartupError, Unsupported
from chatllm.server.model_source import ModelSource
from chatllm.server.sampling import SamplingOptions, refuse_unsupported

log = logging.getLogger(__name__)

PAGE_SIZE = 256
# How often a waiting stream re-checks that the generation thread is alive.
LIVENESS_POLL_SECONDS = 1.0
_ABORTED = object()  # queued by abort(): the library sends nothing more for a cancelled request

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def pick_device_and_dtype(config: Config) -> tuple[str, str]:
    import torch

    device = "cuda" if torch.cuda.is_available() and not config.engine.cpu else "cpu"
    if device == "cpu":
        return device, _DTYPES[cpu_precision(config.engine.precision, read_cpuinfo())]
    if config.engine.precision != "auto":
        return device, _DTYPES[config.engine.precision]
    return device, "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def _kv_blocks(model_config: Any, dtype_bytes: int, space_gib: float) -> int:
    """Number of PAGE_SIZE-token cache blocks that fit in `space_gib` GiB."""
    text = model_config.get_text_config()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    bytes_per_token = 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes
    return max(1, int(space_gib * 1024**3 // (bytes_per_token * PAGE_SIZE)))


def _check_cache_holds_context(blocks: int, context: int, space_gib: float) -> None:
    """A request as long as the context must fit in the cache: the library's scheduler would
    otherwise wait forever for blocks that can never free up (as vLLM, refuse to start)."""
    capacity = blocks * PAGE_SIZE
    if capacity >= context:
        return
    needed = space_gib * context / capacity
    raise StartupError(
        f"--kv-cache-space {space_gib:g} GiB holds {capacity} tokens, less than the context of {context}: "
        f"give it at least {needed:.2f} GiB, or cap the context with --max-model-len {capacity}"
    )


def manager_configs(config: Config, model: Any, tokenizer: Any, context: int) -> tuple[Any, Any]:
    """The GenerationConfig and ContinuousBatchingConfig the engine's manager runs with (bench/hf_batching.py
    compares them with transformers' own choice in `generate_batch`)."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    # Placeholder values: they only make the library create the per-request processors.
    generation = GenerationConfig(
        do_sample=True,
        temperature=0.5,
        top_k=50,
        top_p=0.5,
        max_new_tokens=config.server.max_new_tokens,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    blocks = _kv_blocks(model.config, model.dtype.itemsize, config.engine.kv_cache_space)
    _check_cache_holds_context(blocks, context, config.engine.kv_cache_space)
    batching = ContinuousBatchingConfig(
        page_size=PAGE_SIZE,
        num_blocks=blocks,
        max_batch_tokens=config.engine.max_batch_tokens,
        per_request_processors=True,
    )
    return generation, batching


class HFEngine:
    """Wraps a running ContinuousBatchingManager. Create with `HFEngine.running(...)`."""

    def __init__(self, model: Any, tokenizer: Any, manager: Any, info: EngineInfo) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.generation_config = model.generation_config
        self.info = info
        self.adapters: list[Adapter] = []  # LoRA needs --backend vllm (refused at start-up)
        self._manager = manager
        self._vocab_size = int(model.config.get_text_config().vocab_size)
        self._stopping = False
        self.kv_cache_tokens = 0  # set once the cache is sized
        # Per-request output queues, so abort() can end a stream the library stops feeding.
        self._queues: dict[str, asyncio.Queue[Any]] = {}

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: Config, source: ModelSource) -> AsyncIterator[HFEngine]:
        engine = await asyncio.to_thread(cls._load, config, source)
        try:
            yield engine
        finally:
            await asyncio.to_thread(engine._shutdown)

    @classmethod
    def _load(cls, config: Config, source: ModelSource) -> HFEngine:
        if config.model.lora_modules:
            raise StartupError(
                "--lora-modules needs --backend vllm (transformers' continuous batching serves one model)"
            )
        if config.vllm.speculative != "off" or config.vllm.speculative_config is not None:
            raise StartupError(SPECULATIVE_NEEDS_VLLM)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(config.engine.num_threads or os.cpu_count() or 1)
        # The library's logger has its own handler at INFO; keep its chatter out of our logs.
        logging.getLogger("ContinuousBatchingLogger").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        device, dtype_name = pick_device_and_dtype(config)
        dtype = getattr(torch, dtype_name)
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, device_map=device)
        model.eval()
        context = int(getattr(model.config.get_text_config(), "max_position_embeddings", 0) or 2048)
        if config.engine.max_model_len:
            context = min(context, config.engine.max_model_len)
        cb_generation, cb_config = manager_configs(config, model, tokenizer, context)
        blocks = cb_config.num_blocks
        manager = model.init_continuous_batching(generation_config=cb_generation, continuous_batching_config=cb_config)
        manager.start()
        info = EngineInfo(backend="hf", device=device, dtype=dtype_name, context_length=context)
        log.info(
            "hf engine ready in %.1fs: %s on %s/%s, KV cache %d blocks of %d tokens, context %d",
            time.perf_counter() - started,
            source.name,
            device,
            dtype_name,
            blocks,
            PAGE_SIZE,
            context,
        )
        engine = cls(model, tokenizer, manager, info)
        engine.kv_cache_tokens = blocks * PAGE_SIZE
        return engine

    def _shutdown(self) -> None:
        self._stopping = True
        self._manager.stop(block=True, timeout=30, hard_stop=True)

    # ------------------------------------------------------------------ status
    @property
    def errored(self) -> bool:
        status = self._manager.background_thread_status
        return status.fatal_error is not None or (not self._stopping and not self._manager.is_running())

    async def check_health(self) -> None:
        if self.errored:
            raise EngineDeadError(f"hf engine stopped: {self._manager.background_thread_status.fatal_error}")

    def stats(self) -> EngineStats:
        processor = self._manager.batch_processor
        if processor is None:
            return EngineStats(running=0, waiting=self._manager.input_queue.qsize(), kv_cache_usage=0.0)
        # A snapshot of another thread's dicts: good enough for metrics.
        scheduler = processor.scheduler
        try:
            usage = 1.0 - float(processor.cache.compute_free_capacity(relative=True))
        except Exception:
            usage = 0.0
        return EngineStats(
            running=len(scheduler.active_requests),
            waiting=len(scheduler.waiting_requests) + self._manager.input_queue.qsize(),
            kv_cache_usage=min(max(usage, 0.0), 1.0),
            kv_cache_tokens=self.kv_cache_tokens,
        )

    def prepare(self, options: SamplingOptions) -> SamplingOptions:
        """transformers' continuous batching samples with temperature / top-k / top-p only (the sampling
        table says which fields that leaves: the others are refused, naming the field)."""
        refuse_unsupported(options, "hf")
        return dataclasses.replace(options, engine_params=self._sampling_kwargs(options))

    # ------------------------------------------------------------------ requests
    def _sampling_kwargs(self, options: SamplingOptions) -> dict[str, Any]:
        if options.greedy:
            return {"temperature": 1.0, "top_k": 1, "top_p": 1.0}
        return {
            "temperature": float(options.temperature),
            # Beyond the vocabulary the library's top-k gather fails and kills the batch loop.
            "top_k": min(int(options.top_k or self._vocab_size), self._vocab_size),
            "top_p": float(options.top_p),
        }

    def _unregister(self, request_id: str) -> None:
        router = self._manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)

    def _cancel(self, request_id: str) -> None:
        self._manager.cancel_request(request_id)
        self._unregister(request_id)

    async def abort(self, request_id: str) -> None:
        queue = self._queues.get(request_id)
        self._cancel(request_id)
        if queue is not None:
            queue.put_nowait(_ABORTED)

    async def _next_output(self, queue: asyncio.Queue[Any]) -> Any:
        while True:
            try:
                return await asyncio.wait_for(queue.get(), LIVENESS_POLL_SECONDS)
            except TimeoutError:
                if self.errored:
                    raise EngineDeadError("hf engine stopped while generating") from None

    async def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[EngineOutput]:
        if adapter is not None:  # the server refuses --lora-modules with this backend at start-up
            raise Unsupported("model", "hf", "LoRA adapters need --backend vllm")
        if self.errored:
            raise EngineDeadError("hf engine is not running")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[request_id] = queue
        self._manager.register_result_handler(request_id, queue.put_nowait)
        accepted = self._manager.add_request(
            list(prompt_ids),
            request_id=request_id,
            max_new_tokens=options.max_new_tokens,
            streaming=True,
            eos_token_id=-1 if options.ignore_eos else None,
            **(options.engine_params or self._sampling_kwargs(options)),
        )
        if accepted is None:
            self._unregister(request_id)
            del self._queues[request_id]
            raise EngineDeadError("hf engine is not accepting requests")
        detokenizer = IncrementalDetokenizer(self.tokenizer, options.skip_special_tokens)
        stops = StopMatcher(options.stop, options.include_stop_str_in_output)
        done = False
        completion_tokens = ids_sent = 0
        try:
            while not done:
                out = await self._next_output(queue)
                if out is _ABORTED:
                    done = True
                    yield EngineOutput("", completion_tokens, Finish.ABORT)
                    return
                tokens = out.generated_tokens
                queued = out.lifespan[0] - out.created_time if out.lifespan[0] > 0 else None
                if out.error is not None:
                    done = True
                    yield EngineOutput("", len(tokens), Finish.ERROR, queued, out.error)
                    return
                finished = out.is_finished()
                text = stops.feed(detokenizer.flush(tokens) if finished else detokenizer.push(tokens))
                finish, stop_reason = None, None
                if stops.stopped:
                    finish, stop_reason = Finish.STOP, stops.stopped_by
                    self._cancel(request_id)
                elif finished:
                    text += stops.flush()
                    finish = Finish.LENGTH if len(tokens) >= options.max_new_tokens else Finish.STOP
                done = finish is not None
                completion_tokens = len(tokens)
                if text or done:
                    new_ids, ids_sent = tuple(tokens[ids_sent:]), len(tokens)
                    yield EngineOutput(text, len(tokens), finish, queued, token_ids=new_ids, stop_reason=stop_reason)
        finally:
            self._queues.pop(request_id, None)
            # Consumer gone (CancelledError / GeneratorExit) or engine error: free the slot.
            if not done:
                self._cancel(request_id)
