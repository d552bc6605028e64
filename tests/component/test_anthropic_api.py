"""/v1/messages over the real servicer and bridge on tests/fake_engine.py (no model), driven by the
`anthropic` SDK: the message, the event sequence, what the model reads of tool_use / tool_result,
count_tokens, x-api-key, and errors in Anthropic's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.fake_engine import DEFAULT_ANSWER as ANSWER
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


def client(stack: Stack, key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.http_url, api_key=key, max_retries=0)


async def test_a_message_is_anthropics_shape_with_usage(fake_stack: Stack, fake_engine: FakeEngine) -> None:
    message = await client(fake_stack).messages.create(
        model=FAKE_MODEL,
        max_tokens=64,
        system=[{"type": "text", "text": "be brief"}],
        messages=[{"role": "user", "content": "hello"}],
        metadata={"user_id": "u1"},
    )
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [(b.type, b.text) for b in message.content] == [("text", ANSWER)]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == len(ANSWER.split()) and message.usage.input_tokens > 0
    assert "be brief" in fake_engine.prompts[-1] and "hello" in fake_engine.prompts[-1]


async def test_max_tokens_is_the_stop_reason_when_it_cut_the_answer(fake_stack: Stack) -> None:
    message = await client(fake_stack).messages.create(
        model=FAKE_MODEL, max_tokens=2, messages=[{"role": "user", "content": "hello"}]
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


async def test_the_stream_is_anthropics_event_sequence(fake_stack: Stack) -> None:
    kinds, text = [], ""
    async with client(fake_stack).messages.stream(
        model=FAKE_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        async for event in stream:
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
        final = await stream.get_final_message()
    raw = [k for k in kinds if k not in ("text", "input_json")]  # the SDK's own helper events
    assert raw[:2] == ["message_start", "content_block_start"]
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert text == ANSWER == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == len(ANSWER.split())


async def test_tool_use_and_tool_result_reach_the_model_as_a_call_and_its_output(
    fake_stack: Stack, fake_engine: FakeEngine
) -> None:
    await client(fake_stack).messages.create(
        model=FAKE_MODEL,
        max_tokens=64,
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny-and-mild"}],
            },
        ],
    )
    prompt = fake_engine.prompts[-1]
    assert "<tool>sunny-and-mild</tool>" in prompt.replace(" ", "")  # the tool message, as the template renders it


async def test_count_tokens_counts_what_the_model_would_read(fake_stack: Stack, fake_engine: FakeEngine) -> None:
    messages: Any = [{"role": "user", "content": "one two three"}]
    counted = await client(fake_stack).messages.count_tokens(model=FAKE_MODEL, messages=messages)
    longer = await client(fake_stack).messages.count_tokens(model=FAKE_MODEL, messages=messages, system="four five")
    message = await client(fake_stack).messages.create(model=FAKE_MODEL, max_tokens=8, messages=messages)
    assert counted.input_tokens == message.usage.input_tokens > 0 and longer.input_tokens > counted.input_tokens


async def test_the_token_goes_in_x_api_key_and_a_wrong_one_is_anthropics_401(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with serving_stack(fake_config(tmp_path, token="s3cret"), fake_engine) as stack:
        message = await client(stack, "s3cret").messages.create(
            model=FAKE_MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client(stack, "wrong").messages.create(
                model=FAKE_MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": caught.value.body["error"]["message"]},
    }  # type: ignore[index]


async def post(stack: Stack, body: dict[str, Any], path: str = "/v1/messages") -> tuple[int, Any]:
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "anything"}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + path, json=body, headers=headers) as reply:
            return reply.status, json.loads(await reply.read())


BASE = {"model": FAKE_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BASE, "max_tokens": None}, "max_tokens"),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages[0].content[0]",
        ),
        ({**BASE, "thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking.type"),
        ({**BASE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({**BASE, "mcp_servers": [{"type": "url", "url": "http://x"}]}, "mcp_servers"),
        ({**BASE, "tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({**BASE, "frequency_penalty": 1}, "frequency_penalty"),
    ],
)
async def test_what_is_not_supported_is_an_anthropic_400_naming_the_field(
    fake_stack: Stack, body: dict[str, Any], field: str
) -> None:
    status, error = await post(fake_stack, body)
    assert status == 400 and error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(field), error


async def test_an_unknown_model_is_anthropics_404(fake_stack: Stack) -> None:
    status, error = await post(fake_stack, {**BASE, "model": "claude-opus-9"})
    assert status == 404 and error["error"]["type"] == "not_found_error"
    status, error = await post(
        fake_stack, {"model": "claude-opus-9", "messages": BASE["messages"]}, "/v1/messages/count_tokens"
    )
    assert status == 404 and error["error"]["type"] == "not_found_error"


async def test_langchain_anthropic_reads_the_messages(fake_stack: Stack, fake_engine: FakeEngine) -> None:
    from langchain_anthropic import ChatAnthropic

    llm = ChatAnthropic(base_url=fake_stack.http_url, api_key="unused", model=FAKE_MODEL, max_tokens=64, max_retries=0)  # type: ignore[call-arg]
    assert (await llm.ainvoke("hello")).text == ANSWER
    assert "".join([chunk.text async for chunk in llm.astream("hello")]) == ANSWER


DEEP = "[" * 200_000 + "]" * 200_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", '{"model": "m", "max_tokens": 4, "messages": ' + DEEP + "}"),
        ("/v1/messages/count_tokens", '{"model": "m", "messages": [{"role": "user", "content": "\\udc80"}]}'),
        ("/v1/responses", '{"input": ' + DEEP + "}"),
        ("/v1/responses", '{"input": "\\udc80"}'),
    ],
)
async def test_hostile_json_is_a_400_naming_the_body(fake_stack: Stack, path: str, body: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(fake_stack.http_url + path, data=body) as reply:
            status, error = reply.status, await reply.json()
    assert status == 400
    message = error["error"]["message"]
    assert message.startswith("body: ") and ("nested deeper" in message or "surrogate" in message)
