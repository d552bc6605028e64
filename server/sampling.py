"""Sampling parameters: validation of what a request sent, and resolution of defaults.

Every field is described once, in the sampling table (chatllm.kernel.sampling_fields): its range, its
default, which backends honour it and how vLLM spells it. `from_pb` checks a request against it,
`refuse_unsupported` refuses what a backend cannot honour, and the engines map the resolved values.

Resolution order for the fields the server resolves (max_new_tokens, temperature, top_k, top_p):
the request, the server's flag, the model's generation config, then the seed's request defaults
(top_k 30, top_p 0.8). The request's structured-output constraint is validated here too (it becomes
part of the engine's sampling parameters).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chatllm.kernel.sampling_fields import (
    FIELDS_BY_NAME,
    MAX_LOGIT_BIAS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_STOP_TOKEN_IDS,
    SAMPLING_FIELDS,
    SamplingField,
)
from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument, Unsupported
from chatllm.server.validation import json_field

SEED_TOP_K = 30
SEED_TOP_P = 0.8
MAX_CONSTRAINT_CHARS = 100_000
GREEDY_TEMPERATURE = 1e-5  # as vLLM's _SAMPLING_EPS
SERVER_RESOLVED = ("max_new_tokens", "temperature", "top_k", "top_p")  # unset: the server's defaults
_PRESENCE = {f.name: f.has_presence for f in pb.SamplingParams.DESCRIPTOR.fields}

ConstraintKind = Literal["json", "json_object", "regex", "choice", "grammar", "structural_tag"]


@dataclass(frozen=True)
class Constraint:
    """What the answer's text must match (vLLM structured outputs). `value`: the JSON schema text,
    the regex, the grammar, the choices, or the structural tag (JSON text; tool calling builds it)."""

    kind: ConstraintKind
    value: str | tuple[str, ...] = ""


@dataclass(frozen=True)
class SamplingOptions:
    """Fully resolved sampling for one request: `values` holds every field of the sampling table by name
    (repeated fields as tuples, logit_bias as sorted (token id, bias) pairs); the fields the server and
    the engines read themselves have properties. greedy means argmax."""

    values: Mapping[str, Any]
    greedy: bool
    constraint: Constraint | None = None
    engine_params: Any = None  # what Engine.prepare made of these options: built once per request

    @classmethod
    def resolved(cls, greedy: bool = False, **values: Any) -> SamplingOptions:
        """Options from the given values, the table's defaults for the rest (benchmarks, tests)."""
        unknown = set(values) - set(FIELDS_BY_NAME)
        if unknown:
            raise TypeError(f"not sampling fields: {sorted(unknown)}")
        return cls({**{f.name: f.default for f in SAMPLING_FIELDS}, **values}, greedy)

    def with_values(self, **changes: Any) -> SamplingOptions:
        return dataclasses.replace(self, values={**self.values, **changes})

    @property
    def max_new_tokens(self) -> int:
        return int(self.values["max_new_tokens"])

    @property
    def temperature(self) -> float:
        return float(self.values["temperature"])

    @property
    def top_k(self) -> int:
        return int(self.values["top_k"])  # 0 = no top-k filter

    @property
    def top_p(self) -> float:
        return float(self.values["top_p"])  # 1.0 = no nucleus filter

    @property
    def stop(self) -> tuple[str, ...]:
        return tuple(self.values["stop"])

    @property
    def ignore_eos(self) -> bool:
        return bool(self.values["ignore_eos"])

    @property
    def n(self) -> int:
        return int(self.values["n"])

    @property
    def best_of(self) -> int | None:
        return self.values["best_of"]

    @property
    def logprobs(self) -> int | None:
        return self.values["logprobs"]  # None: none; k: the sampled token's and the k most likely

    @property
    def include_stop_str_in_output(self) -> bool:
        return bool(self.values["include_stop_str_in_output"])

    @property
    def skip_special_tokens(self) -> bool:
        return bool(self.values["skip_special_tokens"])


def unsupported(options: SamplingOptions, backend: str) -> list[str]:
    """The fields whose value `backend` cannot honour (anything but the table's default)."""
    return [f.name for f in SAMPLING_FIELDS if backend not in f.backends and options.values[f.name] != f.default]


def refuse_unsupported(options: SamplingOptions, supports: str, backend: str | None = None) -> None:
    """Refuse (naming the field) what a backend honouring the fields of `supports` cannot do."""
    for name in unsupported(options, supports):
        raise Unsupported(f"sampling.{name}", backend or supports)
    if options.constraint is not None and supports == "hf":
        raise Unsupported("structured_output", backend or supports)


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


def from_pb(params: pb.SamplingParams | None, defaults: SamplingDefaults) -> SamplingOptions:
    """Validate a request's SamplingParams against the sampling table (field names in errors) and fill
    in the defaults."""
    p = params if params is not None else pb.SamplingParams()
    values = {f.name: _value(p, f, defaults) for f in SAMPLING_FIELDS}
    if values["best_of"] is not None and values["best_of"] < values["n"]:
        raise InvalidArgument("sampling.best_of", f"must be at least n ({values['n']}), got {values['best_of']}")
    if values["min_tokens"] > values["max_new_tokens"]:
        raise InvalidArgument("sampling.min_tokens", f"must be at most max_new_tokens ({values['max_new_tokens']})")
    # Below GREEDY_TEMPERATURE, dividing logits by the temperature overflows to inf (NaN probabilities): greedy.
    greedy = not values["do_sample"] or values["temperature"] < GREEDY_TEMPERATURE
    return SamplingOptions(values, greedy)


def _value(p: pb.SamplingParams, field: SamplingField, defaults: SamplingDefaults) -> Any:
    name = field.name
    if field.kind == "strings":
        return _stops(p)
    if field.kind == "token_ids":
        if len(p.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise InvalidArgument(f"sampling.{name}", f"at most {MAX_STOP_TOKEN_IDS} token ids")
        return tuple(getattr(p, name))
    if field.kind == "token_bias":
        return _logit_bias(p, field)
    if _PRESENCE[name] and not p.HasField(name):
        return getattr(defaults, name) if name in SERVER_RESOLVED else field.default
    value = getattr(p, name)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise InvalidArgument(f"sampling.{name}", "must be a finite number")
    if not isinstance(value, bool) and not field.in_range(value):
        raise InvalidArgument(f"sampling.{name}", f"must be {field.range_text()}, got {value:g}")
    return value


def _stops(p: pb.SamplingParams) -> tuple[str, ...]:
    if len(p.stop) > MAX_STOP_STRINGS:
        raise InvalidArgument("sampling.stop", f"at most {MAX_STOP_STRINGS} stop strings")
    for stop in p.stop:
        if not 1 <= len(stop) <= MAX_STOP_CHARS:
            raise InvalidArgument("sampling.stop", f"each stop string must be 1-{MAX_STOP_CHARS} characters")
    return tuple(p.stop)


def _logit_bias(p: pb.SamplingParams, field: SamplingField) -> tuple[tuple[int, float], ...]:
    if len(p.logit_bias) > MAX_LOGIT_BIAS:
        raise InvalidArgument("sampling.logit_bias", f"at most {MAX_LOGIT_BIAS} entries")
    for value in p.logit_bias.values():
        if math.isnan(value) or not field.in_range(value):
            raise InvalidArgument("sampling.logit_bias", f"each bias must be {field.range_text()}, got {value:g}")
    return tuple(sorted(p.logit_bias.items()))


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
