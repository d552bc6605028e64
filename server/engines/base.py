"""The narrow engine interface every backend implements (after vLLM's EngineClient).

An engine takes prompt token ids and resolved sampling options and streams
`EngineOutput`s. Cancellation is handled once, inside `generate`: when the
consumer stops iterating (CancelledError / GeneratorExit) the engine request is
aborted so its slot and KV cache are freed.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from chatllm.server.sampling import SamplingOptions


class Finish(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass(frozen=True)
class EngineOutput:
    """One step of a request's stream: the new text since the previous output."""

    text: str
    completion_tokens: int  # generated so far
    prompt_tokens: int
    finish: Finish | None = None  # set on the last output
    queue_seconds: float | None = None  # known once scheduled
    error: str | None = None


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    kv_cache_usage: float  # 0-1


@dataclass(frozen=True)
class EngineInfo:
    backend: str
    device: str
    dtype: str
    context_length: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1


@runtime_checkable
class Engine(Protocol):
    info: EngineInfo
    tokenizer: Any  # a Hugging Face tokenizer
    generation_config: Any  # the model's GenerationConfig (for default sampling)

    def generate(self, prompt_ids: list[int], options: SamplingOptions, request_id: str) -> AsyncIterator[EngineOutput]:
        """Stream outputs; the last one has `finish` set. Raises EngineDeadError if the engine is dead."""
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

    def check_options(self, options: SamplingOptions) -> None:
        """Raise InvalidArgument for options this backend cannot honour."""
        ...
