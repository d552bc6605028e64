"""Sampling parameters: validation of what a request sent, and resolution of defaults.

Resolution order for each field: the request, the server's flag, the model's
generation config, then the seed's request defaults (top_k 30, top_p 0.8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument

SEED_TOP_K = 30
SEED_TOP_P = 0.8
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
GREEDY_TEMPERATURE = 1e-5  # as vLLM's _SAMPLING_EPS


@dataclass(frozen=True)
class SamplingOptions:
    """Fully resolved sampling for one request. temperature 0 / greedy means argmax."""

    max_new_tokens: int
    temperature: float
    top_k: int  # 0 = no top-k filter
    top_p: float  # 1.0 = no nucleus filter
    greedy: bool
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False


@dataclass(frozen=True)
class SamplingDefaults:
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float

    @classmethod
    def resolve(
        cls,
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generation_config: Any = None,
    ) -> SamplingDefaults:
        """Server flags first, then the model's generation config, then the seed's defaults."""
        model_top_k = getattr(generation_config, "top_k", None)
        model_top_p = getattr(generation_config, "top_p", None)
        # transformers fills top_k=50 / top_p=1.0 as class defaults; only explicit values count.
        explicit = generation_config.to_diff_dict() if generation_config is not None else {}
        if top_k is None:
            top_k = int(model_top_k) if "top_k" in explicit and model_top_k is not None else SEED_TOP_K
        if top_p is None:
            top_p = float(model_top_p) if "top_p" in explicit and model_top_p is not None else SEED_TOP_P
        return cls(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)


def _finite(name: str, value: float) -> float:
    if math.isnan(value) or math.isinf(value):
        raise InvalidArgument(name, "must be a finite number")
    return value


def from_pb(params: pb.SamplingParams | None, defaults: SamplingDefaults) -> SamplingOptions:
    """Validate a request's SamplingParams (field names in errors) and fill in defaults."""
    p = params if params is not None else pb.SamplingParams()
    max_new = p.max_new_tokens if p.HasField("max_new_tokens") else defaults.max_new_tokens
    if max_new < 1:
        raise InvalidArgument("sampling.max_new_tokens", "must be >= 1")
    temperature = _finite("sampling.temperature", p.temperature) if p.HasField("temperature") else defaults.temperature
    if not 0 <= temperature <= 2:
        raise InvalidArgument("sampling.temperature", f"must be between 0 and 2, got {temperature:g}")
    top_k = p.top_k if p.HasField("top_k") else defaults.top_k
    if top_k < 0:
        raise InvalidArgument("sampling.top_k", f"must be >= 0 (0 disables it), got {top_k}")
    top_p = _finite("sampling.top_p", p.top_p) if p.HasField("top_p") else defaults.top_p
    if not 0 < top_p <= 1:
        raise InvalidArgument("sampling.top_p", f"must be in (0, 1], got {top_p:g}")
    penalty = _finite("sampling.repetition_penalty", p.repetition_penalty) if p.HasField("repetition_penalty") else 1.0
    if not 0 < penalty <= 10:
        raise InvalidArgument("sampling.repetition_penalty", f"must be in (0, 10], got {penalty:g}")
    if len(p.stop) > MAX_STOP_STRINGS:
        raise InvalidArgument("sampling.stop", f"at most {MAX_STOP_STRINGS} stop strings")
    for stop in p.stop:
        if not 1 <= len(stop) <= MAX_STOP_CHARS:
            raise InvalidArgument("sampling.stop", f"each stop string must be 1-{MAX_STOP_CHARS} characters")
    do_sample = p.do_sample if p.HasField("do_sample") else True
    return SamplingOptions(
        max_new_tokens=max_new,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        # Below this, dividing logits by the temperature overflows to inf (NaN probabilities): it is greedy.
        greedy=(not do_sample) or temperature < GREEDY_TEMPERATURE,
        repetition_penalty=penalty,
        seed=p.seed if p.HasField("seed") else None,
        stop=tuple(p.stop),
        ignore_eos=p.ignore_eos,
    )
