"""Every field of OpenAI's chat and completions request bodies is implemented or refused with a 400 naming
it — walked from the `openai` package's own type definitions, not a hand copy."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params

from chatllm.bridge.errors import ApiError
from chatllm.bridge.openai.request import CHAT_REFUSED, COMPLETION_REFUSED, ChatCompletionRequest, CompletionRequest
from chatllm.bridge.validation import parse

CHAT_FIELDS = sorted(typing.get_type_hints(chat_create_params.CompletionCreateParamsStreaming))
COMPLETION_FIELDS = sorted(typing.get_type_hints(completion_create_params.CompletionCreateParamsStreaming))
MESSAGES = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

# A value each implemented field may take, and what it must change in the GenerateRequest.
CHAT_SAMPLES: dict[str, tuple[Any, str]] = {
    "frequency_penalty": (0.5, "sampling.frequency_penalty"),
    "logit_bias": ({"42": -100}, "sampling.logit_bias"),
    "logprobs": (True, "sampling.logprobs"),
    "top_logprobs": (2, "sampling.logprobs"),
    "max_completion_tokens": (7, "sampling.max_new_tokens"),
    "max_tokens": (7, "sampling.max_new_tokens"),
    "metadata": ({"team": "a"}, "metadata"),
    "model": ("pirate", "model"),
    "n": (2, "sampling.n"),
    "parallel_tool_calls": (False, "parallel_tool_calls"),
    "presence_penalty": (0.5, "sampling.presence_penalty"),
    "reasoning_effort": ("low", "chat_template_kwargs"),
    "response_format": ({"type": "json_object"}, "structured_output"),
    "safety_identifier": ("user-7", "user"),
    "seed": (3, "sampling.seed"),
    "stop": (["x"], "sampling.stop"),
    "temperature": (0.1, "sampling.temperature"),
    "tool_choice": ("required", "tool_choice"),
    "tools": ([TOOL], "tools"),
    "top_p": (0.5, "sampling.top_p"),
    "user": ("user-7", "user"),
}
# Fields whose allowed values mean "the default" (nothing to change): the other values are refused.
CHAT_DEFAULT_ONLY: dict[str, tuple[Any, Any]] = {
    "store": (False, True),
    "service_tier": ("default", "scale"),
    "modalities": (["text"], ["text", "audio"]),
}
STREAMING = ("stream", "stream_options")  # shape the response, checked through the stack
COMPLETION_SAMPLES: dict[str, tuple[Any, str]] = {
    "best_of": (3, "sampling.best_of"),
    "echo": (True, "sampling.prompt_logprobs"),  # with logprobs (echo alone only changes the reply)
    "frequency_penalty": (0.5, "sampling.frequency_penalty"),
    "logit_bias": ({"42": -100}, "sampling.logit_bias"),
    "logprobs": (2, "sampling.logprobs"),
    "max_tokens": (7, "sampling.max_new_tokens"),
    "model": ("pirate", "model"),
    "n": (2, "sampling.n"),
    "presence_penalty": (0.5, "sampling.presence_penalty"),
    "prompt": ("other", "prompt"),
    "seed": (3, "sampling.seed"),
    "stop": (["x"], "sampling.stop"),
    "temperature": (0.1, "sampling.temperature"),
    "top_p": (0.5, "sampling.top_p"),
    "user": ("user-7", "user"),
}


def changed(before: Any, after: Any, path: str) -> bool:
    """Whether the field at `path` differs, presence included (an optional set to its zero value counts)."""
    *parents, name = path.split(".")
    for part in parents:
        before, after = getattr(before, part), getattr(after, part)
    if before.DESCRIPTOR.fields_by_name[name].has_presence and before.HasField(name) != after.HasField(name):
        return True
    return bool(getattr(before, name) != getattr(after, name))


def test_every_openai_field_is_known_to_the_models() -> None:
    assert {"messages", "model", "tools", "logprobs"} <= set(CHAT_FIELDS)  # the walk reads the real definitions
    for fields, model in ((CHAT_FIELDS, ChatCompletionRequest), (COMPLETION_FIELDS, CompletionRequest)):
        unknown = [f for f in fields if f not in model.model_fields]
        assert not unknown, f"{model.__name__} neither implements nor refuses {unknown}"


@pytest.mark.parametrize("field", CHAT_FIELDS)
def test_chat_fields_are_implemented_or_refused(field: str) -> None:
    base = {"messages": MESSAGES, "model": "m"}
    baseline = parse(ChatCompletionRequest, base).to_generate_request("r")
    if field in CHAT_REFUSED:
        with pytest.raises(ApiError) as err:
            parse(ChatCompletionRequest, {**base, field: {"anything": 1}})
        assert err.value.param == field and err.value.code == "unsupported_field"
    elif field in CHAT_DEFAULT_ONLY:
        default, other = CHAT_DEFAULT_ONLY[field]
        parse(ChatCompletionRequest, {**base, field: default})
        with pytest.raises(ApiError) as err:
            parse(ChatCompletionRequest, {**base, field: other})
        assert (err.value.param or "").startswith(field)
    elif field in STREAMING or field == "messages":
        assert field in ChatCompletionRequest.model_fields
    else:
        value, effect = CHAT_SAMPLES[field]
        extra = {"logprobs": True} if field == "top_logprobs" else {"tools": [TOOL]} if field == "tool_choice" else {}
        after = parse(ChatCompletionRequest, {**base, **extra, field: value}).to_generate_request("r")
        assert changed(baseline, after, effect), f"{field} changed nothing"


@pytest.mark.parametrize("field", COMPLETION_FIELDS)
def test_completion_fields_are_implemented_or_refused(field: str) -> None:
    base = {"prompt": "hi", "model": "m"}
    baseline = parse(CompletionRequest, base).to_generate_request("r")
    if field in COMPLETION_REFUSED:
        with pytest.raises(ApiError) as err:
            parse(CompletionRequest, {**base, field: "anything"})
        assert err.value.param == field and err.value.code == "unsupported_field"
    elif field in STREAMING:
        assert field in CompletionRequest.model_fields
    else:
        value, effect = COMPLETION_SAMPLES[field]
        extra = {"logprobs": 1} if field == "echo" else {}
        after = parse(CompletionRequest, {**base, **extra, field: value}).to_generate_request("r")
        assert changed(baseline, after, effect), f"{field} changed nothing"


def test_names_nobody_defined_are_refused_by_name() -> None:
    with pytest.raises(ApiError) as err:
        parse(ChatCompletionRequest, {"messages": MESSAGES, "temprature": 0.5})
    assert err.value.param == "temprature" and err.value.code == "unsupported_field"
