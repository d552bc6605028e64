"""The narrow engine interface every backend implements (after vLLM's EngineClient).

An engine takes prompt token ids and resolved sampling options and streams
`EngineOutput`s. Cancellation is handled once, inside `generate`: when the
consumer stops iterating (CancelledError / GeneratorExit) the engine request is
aborted so its slot and KV cache are freed.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from chatllm.server.sampling import SamplingOptions


class Finish(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass(frozen=True)
class TopToken:
    token_id: int
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated (or prompt) token's log probability and the most likely alternatives."""

    token_id: int
    token: str
    logprob: float
    top: tuple[TopToken, ...] = ()


@dataclass(slots=True)  # not frozen: one is made per token of every stream, and frozen init costs twice
class EngineOutput:
    """One step of one choice's stream: what it generated since its previous output.

    A request's stream ends when every choice (SamplingOptions.n) has had its last output."""

    text: str
    completion_tokens: int  # generated so far by this choice
    finish: Finish | None = None  # set on this choice's last output
    queue_seconds: float | None = None  # known once scheduled
    error: str | None = None
    index: int = 0  # the choice
    token_ids: tuple[int, ...] = ()  # this step's token ids
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token of this step (SamplingOptions.logprobs)
    stop_reason: str | int | None = None  # the stop string or token id that ended the choice
    cached_tokens: int | None = None  # prompt tokens served from the prefix cache (known from the first output)
    prompt_logprobs: tuple[TokenLogprob, ...] = ()  # SamplingOptions.prompt_logprobs, first output only
    cumulative_logprob: float | None = None  # of the choice so far, when logprobs are computed


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    kv_cache_usage: float  # 0-1
    kv_cache_tokens: int = 0  # the cache's capacity (0: the engine does not say)
    draft_tokens: int = 0  # speculative decoding since start: tokens drafted ...
    accepted_draft_tokens: int = 0  # ... and accepted by the model


@dataclass(frozen=True)
class EngineInfo:
    backend: str
    device: str
    dtype: str
    context_length: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter the engine serves (--lora-modules NAME=PATH)."""

    name: str
    path: str
    loaded: float  # when it was loaded, seconds since the Unix epoch


@runtime_checkable
class Engine(Protocol):
    info: EngineInfo
    tokenizer: Any  # a Hugging Face tokenizer
    generation_config: Any  # the model's GenerationConfig (for default sampling)
    adapters: Sequence[Adapter]  # LoRA adapters loaded at start-up

    def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[EngineOutput]:
        """Stream outputs of every choice; each choice's last has `finish` set. `adapter` names a LoRA
        adapter the engine serves (None: the base model). `priority`: the request's class
        (chatllm.kernel.priority: lower is more urgent), for an engine that schedules by it (vLLM with
        --scheduling-policy priority); admission has already served the classes in order. Raises
        EngineDeadError if the engine is dead."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a request early; its stream ends with Finish.ABORT."""
        ...

    async def check_health(self) -> None:
        """Raise EngineDeadError when the engine can no longer serve."""
        ...

    @property
    def errored(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    def prepare(self, options: SamplingOptions) -> SamplingOptions:
        """The options with this backend's own sampling parameters attached (`engine_params`, built once per
        request, before it is admitted); InvalidArgument for what this backend cannot honour. `generate`
        takes the prepared options (max_new_tokens may since have been clipped to the context)."""
        ...
