"""Every field of OpenAI's Responses body and Anthropic's Messages bodies is implemented or refused with a
400 naming it, walked from the `openai` and `anthropic` packages' own type definitions."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from anthropic.types import message_count_tokens_params, message_create_params
from openai.types.responses import response_create_params
from pydantic import BaseModel

from chatllm.bridge.anthropic.request import CREATE_REFUSED, CountTokensRequest, MessagesRequest
from chatllm.bridge.anthropic.request import REFUSED as MESSAGES_REFUSED
from chatllm.bridge.errors import ApiError
from chatllm.bridge.responses.request import REFUSED as RESPONSES_REFUSED
from chatllm.bridge.responses.request import ResponseCreateRequest
from chatllm.bridge.validation import parse

HEADERS_IN_THE_SDK = {"user_profile_id", "workspace_id"}  # the anthropic SDK sends these as headers
CASES: list[tuple[type[BaseModel], Any, dict[str, Any], set[str]]] = [
    (ResponseCreateRequest, response_create_params.ResponseCreateParamsStreaming, {"input": "hi"},
     set(RESPONSES_REFUSED)),
    (MessagesRequest, message_create_params.MessageCreateParamsStreaming,
     {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
     set(MESSAGES_REFUSED) | set(CREATE_REFUSED)),
    (CountTokensRequest, message_count_tokens_params.MessageCountTokensParams,
     {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, set(MESSAGES_REFUSED)),
]  # fmt: skip


@pytest.mark.parametrize(("model", "params", "base", "refused"), CASES)
def test_every_sdk_field_is_known(model: type[BaseModel], params: Any, base: dict[str, Any], refused: set[str]) -> None:
    sdk_fields = set(typing.get_type_hints(params)) - HEADERS_IN_THE_SDK
    missing = sdk_fields - set(model.model_fields)
    assert not missing, f"{model.__name__} neither implements nor refuses {sorted(missing)}"
    assert refused <= sdk_fields | set(model.model_fields)


@pytest.mark.parametrize(("model", "params", "base", "refused"), CASES)
def test_refused_fields_are_a_400_naming_them_and_null_passes(
    model: type[BaseModel], params: Any, base: dict[str, Any], refused: set[str]
) -> None:
    for name in sorted(refused):
        parse(model, {**base, name: None})
        with pytest.raises(ApiError) as caught:
            parse(model, {**base, name: {"anything": 1}})
        assert caught.value.status == 400 and caught.value.param == name
        assert caught.value.message.startswith(f"{name}: not supported")


def test_a_responses_request_maps_to_generate() -> None:
    body = parse(
        ResponseCreateRequest,
        {
            "input": "hi", "instructions": "be brief", "temperature": 0.2, "top_p": 0.5, "max_output_tokens": 9,
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "metadata": {"team": "a"}, "safety_identifier": "u7", "reasoning": {"effort": "low"},
        },
    )  # fmt: skip
    generate = body.to_generate_request("rid", [])
    assert [m.role for m in generate.messages] == ["system"]  # the conversation is the caller's to add
    assert generate.sampling.temperature == pytest.approx(0.2) and generate.sampling.max_new_tokens == 9
    assert generate.tool_choice.function == "f" and generate.parallel_tool_calls is False
    assert generate.structured_output.json_schema == '{"type": "object"}'
    assert generate.user == "u7" and dict(generate.metadata) == {"team": "a"}
    assert dict(generate.chat_template_kwargs) == {"reasoning_effort": "low"}


def test_a_messages_request_maps_to_generate() -> None:
    body = parse(
        MessagesRequest,
        {
            "model": "m", "max_tokens": 9, "system": "be brief", "stop_sequences": ["END"], "temperature": 0.2,
            "top_k": 5, "metadata": {"user_id": "u7"},
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                                  {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done",
                                              "is_error": True}, {"type": "text", "text": "and?"}]},
            ],
        },
    )  # fmt: skip
    generate = body.to_generate_request("rid")
    assert [m.role for m in generate.messages] == ["system", "user", "assistant", "tool", "user"]
    assistant, tool = generate.messages[2], generate.messages[3]
    assert assistant.content == "calling" and assistant.tool_calls[0].arguments == '{"a": 1}'
    assert tool.tool_call_id == "t1" and tool.content == "Error: done"
    assert list(generate.sampling.stop) == ["END"] and generate.sampling.top_k == 5
    assert generate.tool_choice.mode == generate.tool_choice.TOOL_CHOICE_REQUIRED
    assert generate.parallel_tool_calls is False and generate.user == "u7"
