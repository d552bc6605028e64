"""The sampling fields, each described once: its name in proto `SamplingParams`, what an unset field
means, its range, which backends honour it, how vLLM spells it, and how the OpenAI and legacy bodies
spell it.

This table drives the bridge's request-to-gRPC mapping and its body fields (`openai`, `legacy`,
`kind`), the server's range checks (`low`, `high`), the refusals of a backend that cannot honour a
field (`backends`) and vLLM's SamplingParams (`vllm`). Adding a sampling field is a field of proto
`SamplingParams` and an entry here; tests/unit/test_sampling_fields.py walks the proto against it.
Fields whose mapping is more than a rename say so in `note` (the code that does it names the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["hf", "vllm"]
Spelling = Literal["openai", "legacy"]
# How a body field is typed (the bridge maps each kind to its pydantic type).
Kind = Literal["count", "uint32", "top_k", "seed", "number", "boolean", "strings", "token_ids", "token_bias"]

ALL_BACKENDS: tuple[Backend, ...] = ("hf", "vllm")
VLLM_ONLY: tuple[Backend, ...] = ("vllm",)
MAX_CHOICES = 16  # n and best_of
MAX_LOGPROBS = 20  # logprobs and prompt_logprobs alternatives (OpenAI's top_logprobs limit)
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64
MAX_LOGIT_BIAS = 1024


@dataclass(frozen=True)
class SamplingField:
    name: str  # the field of proto SamplingParams (and of the server's resolved options)
    doc: str  # what it does (the bridge's body fields carry it into the OpenAPI document)
    kind: Kind
    example: Any  # a value other than the default that a request may send (tests send it; the document shows it)
    default: Any = None  # what unset means; None where the server resolves it (its flags, the model's config)
    low: float | None = None  # the range a given value must be in (None: unbounded on that side)
    high: float | None = None
    low_open: bool = False  # the range excludes `low`
    backends: tuple[Backend, ...] = ALL_BACKENDS  # the others refuse a value that is not the default
    vllm: str | None = None  # vLLM SamplingParams' argument it becomes (None: not passed as is)
    openai: str | None = None  # the OpenAI body field copied into it as is (None: not there, or see `note`)
    legacy: str | None = None  # the legacy body field copied into it as is
    note: str = ""

    def spelled(self, spelling: Spelling) -> str | None:
        return self.openai if spelling == "openai" else self.legacy

    def range_text(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in ({self.low:g}, {self.high:g}]" if self.low_open else f"between {self.low:g} and {self.high:g}"
        if self.low is not None:
            return f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        return ""

    def in_range(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)


SAMPLING_FIELDS: tuple[SamplingField, ...] = (
    SamplingField(
        "max_new_tokens",
        "upper bound on generated tokens (clipped to what fits the model's context)",
        "count",
        example=7,
        low=1,
        vllm="max_tokens",
        legacy="max_new_tokens",
        note="OpenAI: max_tokens, or chat's max_completion_tokens (completions default to 16)",
    ),
    SamplingField(
        "temperature",
        "softmax temperature, 0-2; 0 = greedy",
        "number",
        example=0.5,
        low=0,
        high=2,
        vllm="temperature",
        openai="temperature",
        legacy="temperature",
    ),
    SamplingField(
        "top_k",
        "keep the k most likely tokens; 0 disables the filter",
        "top_k",
        example=5,
        low=0,
        vllm="top_k",
        openai="top_k",
        legacy="top_k",
    ),
    SamplingField(
        "top_p",
        "nucleus sampling: the smallest set of tokens whose probability reaches top_p, in (0, 1]",
        "number",
        example=0.5,
        low=0,
        high=1,
        low_open=True,
        vllm="top_p",
        openai="top_p",
        legacy="top_p",
    ),
    SamplingField(
        "do_sample",
        "false = greedy, whatever the temperature",
        "boolean",
        example=False,
        default=True,
        legacy="do_sample",
        note="vLLM: greedy is temperature 0",
    ),
    SamplingField(
        "repetition_penalty",
        "penalty on tokens already present, in (0, 10]; 1 = none",
        "number",
        example=1.2,
        default=1.0,
        low=0,
        high=10,
        low_open=True,
        backends=VLLM_ONLY,
        vllm="repetition_penalty",
        openai="repetition_penalty",
        legacy="repetition_penalty",
    ),
    SamplingField(
        "seed",
        "seed of this request's sampling, for reproducible samples",
        "seed",
        example=3,
        backends=VLLM_ONLY,
        vllm="seed",
        openai="seed",
        legacy="seed",
    ),
    SamplingField(
        "stop",
        f"stop strings, not returned (at most {MAX_STOP_STRINGS}, each 1-{MAX_STOP_CHARS} characters)",
        "strings",
        example=("END",),
        default=(),
        vllm="stop",
        openai="stop",
        legacy="stop",
    ),
    SamplingField(
        "ignore_eos",
        "keep generating past the end-of-sequence token until max_new_tokens",
        "boolean",
        example=True,
        default=False,
        vllm="ignore_eos",
        openai="ignore_eos",
        legacy="ignore_eos",
    ),
    SamplingField(
        "n",
        f"number of answers (choices), 1-{MAX_CHOICES}",
        "count",
        example=2,
        default=1,
        low=1,
        high=MAX_CHOICES,
        backends=VLLM_ONLY,
        vllm="n",
        openai="n",
    ),
    SamplingField(
        "best_of",
        f"candidates to generate, the n with the highest total log probability returned (n-{MAX_CHOICES})",
        "count",
        example=3,
        low=1,
        high=MAX_CHOICES,
        backends=VLLM_ONLY,
        note="the server generates best_of choices and ranks them (not vLLM); OpenAI: completions' best_of",
    ),
    SamplingField(
        "presence_penalty",
        "OpenAI's presence penalty, -2 to 2",
        "number",
        example=0.5,
        default=0.0,
        low=-2,
        high=2,
        backends=VLLM_ONLY,
        vllm="presence_penalty",
        openai="presence_penalty",
    ),
    SamplingField(
        "frequency_penalty",
        "OpenAI's frequency penalty, -2 to 2",
        "number",
        example=0.5,
        default=0.0,
        low=-2,
        high=2,
        backends=VLLM_ONLY,
        vllm="frequency_penalty",
        openai="frequency_penalty",
    ),
    SamplingField(
        "min_p",
        "drop tokens below min_p times the top token's probability, 0-1",
        "number",
        example=0.1,
        default=0.0,
        low=0,
        high=1,
        backends=VLLM_ONLY,
        vllm="min_p",
        openai="min_p",
    ),
    SamplingField(
        "min_tokens",
        "tokens to generate before a stop may end the answer (at most max_new_tokens)",
        "uint32",
        example=2,
        default=0,
        low=0,
        backends=VLLM_ONLY,
        vllm="min_tokens",
        openai="min_tokens",
    ),
    SamplingField(
        "stop_token_ids",
        f"token ids that end the answer (at most {MAX_STOP_TOKEN_IDS})",
        "token_ids",
        example=(7,),
        default=(),
        backends=VLLM_ONLY,
        vllm="stop_token_ids",
        openai="stop_token_ids",
    ),
    SamplingField(
        "logit_bias",
        f"token id -> bias added to its logit, -100 to 100 (at most {MAX_LOGIT_BIAS})",
        "token_bias",
        example=((5, 1.5),),
        default=(),
        low=-100,
        high=100,
        backends=VLLM_ONLY,
        vllm="logit_bias",
        openai="logit_bias",
    ),
    SamplingField(
        "logprobs",
        f"log probabilities of each token and of this many alternatives, 0-{MAX_LOGPROBS}",
        "uint32",
        example=2,
        low=0,
        high=MAX_LOGPROBS,
        backends=VLLM_ONLY,
        vllm="logprobs",
        note="OpenAI: chat's logprobs (a boolean) with top_logprobs; completions' logprobs (a count)",
    ),
    SamplingField(
        "include_stop_str_in_output",
        "keep the stop string that ended the answer in the text",
        "boolean",
        example=True,
        default=False,
        vllm="include_stop_str_in_output",
        openai="include_stop_str_in_output",
    ),
    SamplingField(
        "skip_special_tokens",
        "leave special tokens out of the text",
        "boolean",
        example=False,
        default=True,
        vllm="skip_special_tokens",
        openai="skip_special_tokens",
    ),
    SamplingField(
        "prompt_logprobs",
        f"log probabilities of the prompt's tokens, with 0-{MAX_LOGPROBS} alternatives",
        "uint32",
        example=1,
        low=0,
        high=MAX_LOGPROBS,
        backends=VLLM_ONLY,
        vllm="prompt_logprobs",
        note="OpenAI: completions with echo and logprobs",
    ),
)

FIELDS_BY_NAME: dict[str, SamplingField] = {f.name: f for f in SAMPLING_FIELDS}


def spelled_fields(spelling: Spelling) -> list[SamplingField]:
    """The fields a protocol's bodies carry under a name of their own, copied as they are."""
    return [f for f in SAMPLING_FIELDS if f.spelled(spelling)]
