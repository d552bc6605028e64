"""Sampling parameters: validation of what a request sent, and resolution of defaults.

Resolution order for each field: the request, the server's flag, the model's
generation config, then the seed's request defaults (top_k 30, top_p 0.8). The
request's structured-output constraint is validated here too (it becomes part of
the engine's sampling parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument
from chatllm.server.validation import json_field

SEED_TOP_K = 30
SEED_TOP_P = 0.8
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64
MAX_CHOICES = 16
MAX_LOGPROBS = 20
MAX_LOGIT_BIAS = 1024
MAX_CONSTRAINT_CHARS = 100_000
GREEDY_TEMPERATURE = 1e-5  # as vLLM's _SAMPLING_EPS

ConstraintKind = Literal["json", "json_object", "regex", "choice", "grammar", "structural_tag"]


@dataclass(frozen=True)
class Constraint:
    """What the answer's text must match (vLLM structured outputs). `value`: the JSON schema text,
    the regex, the grammar, the choices, or the structural tag (JSON text; tool calling builds it)."""

    kind: ConstraintKind
    value: str | tuple[str, ...] = ""


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
    n: int = 1
    best_of: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_p: float = 0.0
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None  # None: none; k: the sampled token's and the k most likely
    prompt_logprobs: int | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    constraint: Constraint | None = None

    def differs_from_default(self) -> list[str]:
        """The `sampling.*` fields whose value changes what plain temperature/top-k/top-p sampling does."""
        default = SamplingOptions(self.max_new_tokens, self.temperature, self.top_k, self.top_p, self.greedy)
        names = [
            "repetition_penalty", "seed", "n", "best_of", "presence_penalty", "frequency_penalty", "min_p",
            "min_tokens", "stop_token_ids", "logit_bias", "logprobs", "prompt_logprobs",
        ]  # fmt: skip
        return [name for name in names if getattr(self, name) != getattr(default, name)]


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


def _in_range(name: str, value: float, low: float, high: float) -> float:
    if not low <= _finite(name, value) <= high:
        raise InvalidArgument(name, f"must be between {low:g} and {high:g}, got {value:g}")
    return value


def _optional(p: pb.SamplingParams, name: str, low: float, high: float, default: Any) -> Any:
    if not p.HasField(name):
        return default
    value = getattr(p, name)
    _in_range(f"sampling.{name}", value, low, high)
    return value


def _stops(p: pb.SamplingParams) -> tuple[str, ...]:
    if len(p.stop) > MAX_STOP_STRINGS:
        raise InvalidArgument("sampling.stop", f"at most {MAX_STOP_STRINGS} stop strings")
    for stop in p.stop:
        if not 1 <= len(stop) <= MAX_STOP_CHARS:
            raise InvalidArgument("sampling.stop", f"each stop string must be 1-{MAX_STOP_CHARS} characters")
    if len(p.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        raise InvalidArgument("sampling.stop_token_ids", f"at most {MAX_STOP_TOKEN_IDS} token ids")
    return tuple(p.stop)


def _logit_bias(p: pb.SamplingParams) -> tuple[tuple[int, float], ...]:
    if len(p.logit_bias) > MAX_LOGIT_BIAS:
        raise InvalidArgument("sampling.logit_bias", f"at most {MAX_LOGIT_BIAS} entries")
    for value in p.logit_bias.values():
        _in_range("sampling.logit_bias", value, -100, 100)
    return tuple(sorted(p.logit_bias.items()))


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
    n = _optional(p, "n", 1, MAX_CHOICES, 1)
    best_of = _optional(p, "best_of", n, MAX_CHOICES, None)
    min_tokens = _optional(p, "min_tokens", 0, max_new, 0)
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
        stop=_stops(p),
        ignore_eos=p.ignore_eos,
        n=n,
        best_of=best_of,
        presence_penalty=_optional(p, "presence_penalty", -2, 2, 0.0),
        frequency_penalty=_optional(p, "frequency_penalty", -2, 2, 0.0),
        min_p=_optional(p, "min_p", 0, 1, 0.0),
        min_tokens=min_tokens,
        stop_token_ids=tuple(p.stop_token_ids),
        logit_bias=_logit_bias(p),
        logprobs=_optional(p, "logprobs", 0, MAX_LOGPROBS, None),
        prompt_logprobs=_optional(p, "prompt_logprobs", 0, MAX_LOGPROBS, None),
        include_stop_str_in_output=p.include_stop_str_in_output,
        skip_special_tokens=p.skip_special_tokens if p.HasField("skip_special_tokens") else True,
    )


def constraint_from_pb(structured: pb.StructuredOutput) -> Constraint | None:
    """The request's structured-output constraint, checked as far as can be without the engine."""
    kind = structured.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "json_object":
        return Constraint("json_object") if structured.json_object else None
    if kind == "choice":
        choices = tuple(structured.choice.choices)
        if not choices or any(not c for c in choices):
            raise InvalidArgument("structured_output.choice", "give at least one non-empty choice")
        return Constraint("choice", choices)
    text = str(getattr(structured, kind))
    where = f"structured_output.{kind}"
    if not text.strip() or len(text) > MAX_CONSTRAINT_CHARS:
        raise InvalidArgument(where, f"must be 1-{MAX_CONSTRAINT_CHARS} characters")
    if kind == "json_schema":
        schema = json_field(text, where)
        if not isinstance(schema, dict | bool):
            raise InvalidArgument(where, "a JSON Schema is an object (or true/false)")
        return Constraint("json", text)
    return Constraint("regex" if kind == "regex" else "grammar", text)
