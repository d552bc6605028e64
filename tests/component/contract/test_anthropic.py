"""Anthropic's Messages API through the real stack on vLLM, with the `anthropic` SDK (create, stream,
a tool_use -> tool_result round trip, count_tokens) and langchain-anthropic's ChatAnthropic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import jsonschema
import pytest
import pytest_asyncio

from tests.component.contract.conftest import MODEL, QUESTION
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
WEATHER: Any = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=stack.http_url, api_key="unused", max_retries=0) as c:
        yield c


# The SDK's own signature has no sampling fields any more (Claude models drop them); the API takes them.
GREEDY: Any = {"temperature": 0}


def ask(content: str = QUESTION) -> Any:
    return [{"role": "user", "content": content}]


async def test_messages_create_answers(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=24, messages=ask(), extra_body=GREEDY)
    assert message.content[0].type == "text" and "Paris" in message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0


async def test_a_stop_sequence_is_named_when_it_ended_the_answer(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL, max_tokens=24, messages=ask(), stop_sequences=["Paris"], extra_body=GREEDY
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "Paris"
    assert "Paris" not in message.content[0].text  # type: ignore[union-attr]


async def test_messages_stream_deltas_join_to_the_final_message(client: anthropic.AsyncAnthropic) -> None:
    pieces = []
    async with client.messages.stream(model=MODEL, max_tokens=24, messages=ask(), extra_body=GREEDY) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
        final = await stream.get_final_message()
    assert "".join(pieces) == final.content[0].text and "Paris" in final.content[0].text  # type: ignore[union-attr]


async def test_a_tool_use_then_tool_result_round_trip(client: anthropic.AsyncAnthropic) -> None:
    question = ask("What is the weather in Oslo?")
    asked = await client.messages.create(
        model=MODEL, max_tokens=60, messages=question, tools=[WEATHER], extra_body=GREEDY,
        tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    (use,) = [block for block in asked.content if block.type == "tool_use"]
    assert asked.stop_reason == "tool_use" and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER["input_schema"])
    answered = await client.messages.create(
        model=MODEL,
        max_tokens=30,
        extra_body=GREEDY,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[
            *question,
            {"role": "assistant", "content": asked.content},  # type: ignore[typeddict-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]},
        ],
    )
    assert answered.content[0].type == "text" and answered.content[0].text
    question_alone = await client.messages.count_tokens(model=MODEL, messages=question)  # no tools shown either way
    assert (
        answered.usage.input_tokens + (answered.usage.cache_read_input_tokens or 0) > question_alone.input_tokens + 10
    )


async def test_count_tokens_is_what_the_model_reads(client: anthropic.AsyncAnthropic) -> None:
    counted = await client.messages.count_tokens(model=MODEL, messages=ask(), system="Be brief.")
    message = await client.messages.create(model=MODEL, max_tokens=2, messages=ask(), system="Be brief.")
    assert counted.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


async def test_langchain_chat_anthropic(stack: Stack) -> None:
    from langchain_anthropic import ChatAnthropic

    llm = ChatAnthropic(
        base_url=stack.http_url, api_key="unused", model=MODEL, max_tokens=24, max_retries=0,  # type: ignore[call-arg]
    )  # fmt: skip
    reply = await llm.ainvoke(QUESTION)
    assert "Paris" in reply.text
    # Two greedy calls here gave different words once (a near tie at the first token): the stream must answer.
    streamed = "".join([chunk.text async for chunk in llm.astream(QUESTION)])
    assert "Paris" in streamed
