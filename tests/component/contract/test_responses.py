"""OpenAI's Responses API through the real stack on vLLM, with the clients that speak it: `openai`'s
`client.responses` (plain, chained, stored or not, streamed, tools, json_schema, background + cancel),
the OpenAI Agents SDK running an agent with a function tool, and LangChain's
ChatOpenAI(use_responses_api=True); and a chain that outlives its bridge and continues through another
one on a shared Redis."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import pytest_asyncio

from chatllm.bridge.runner import BridgeServer
from chatllm.kernel.config import Config
from tests.component.contract.conftest import MODEL, QUESTION
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.http_url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


async def test_a_plain_response_answers_and_is_retrievable(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=24)
    assert response.status == "completed" and "Paris" in response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0
    again = await client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.usage == response.usage


async def test_previous_response_id_reads_the_first_turn(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(
        model=MODEL, input="My name is Ann. Say hello to me.", temperature=0, max_output_tokens=16
    )
    second = await client.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id, temperature=0, max_output_tokens=16
    )
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.previous_response_id == first.id


async def test_store_false_is_not_retrievable(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input=QUESTION, store=False, max_output_tokens=4)
    assert response.output_text
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_the_streams_deltas_join_to_the_final_text(client: openai.AsyncOpenAI) -> None:
    deltas, kinds = [], []
    async with client.responses.stream(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=24) as stream:
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(deltas) == final.output_text and "Paris" in final.output_text
    assert (await client.responses.retrieve(final.id)).output_text == final.output_text


async def test_a_function_tool_round_trip(client: openai.AsyncOpenAI) -> None:
    asked = await client.responses.create(
        model=MODEL,
        input="What is the weather in Oslo?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
        max_output_tokens=60,
    )
    (call,) = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    answered = await client.responses.create(
        model=MODEL,
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 degrees"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        temperature=0,
        max_output_tokens=30,
    )
    assert answered.output_text and answered.output[0].type == "message"
    items = await client.responses.input_items.list(answered.id, order="asc")
    assert [i.type for i in items.data] == ["function_call_output"]


async def test_json_schema_output_validates(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model=MODEL,
        input="Paris is a city in France. Give the city and its country.",
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}},
        temperature=0,
        max_output_tokens=60,
    )
    jsonschema.validate(json.loads(response.output_text), CITY)


async def test_retrieve_delete_and_input_items(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model=MODEL,
        input=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}],
        max_output_tokens=4,
    )
    items = await client.responses.input_items.list(response.id, order="asc")
    assert [(i.type, i.role) for i in items.data] == [("message", "system"), ("message", "user")]  # type: ignore[union-attr]
    assert (await client.responses.retrieve(response.id)).id == response.id
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_background_then_cancel(client: openai.AsyncOpenAI, stack: Stack) -> None:
    queued = await client.responses.create(
        model=MODEL, input="Write a very long story about a dragon.", background=True, max_output_tokens=2000
    )
    assert queued.status == "queued" and queued.background
    await stack.wait_engine_busy(30)
    cancelled = await client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    idle = await stack.wait_engine_idle(30)
    assert idle.active_requests == 0  # 2,000 tokens would take minutes here: the engine request was aborted
    assert (await client.responses.retrieve(queued.id)).status == "cancelled"


def get_weather(city: str) -> str:
    """The current weather in a city."""
    CALLED.append(city)
    return f"sunny in {city}"


CALLED: list[str] = []


async def test_the_openai_agents_sdk_runs_an_agent_with_a_function_tool(client: openai.AsyncOpenAI) -> None:
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    agent = Agent(
        name="weather",
        instructions="Answer questions about the weather.",
        tools=[function_tool(get_weather)],
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
        # the 135M model needs the call forced; the SDK resets the choice after the tool ran
        model_settings=ModelSettings(tool_choice="get_weather", temperature=0, max_tokens=60),
    )
    CALLED.clear()
    result = await Runner.run(agent, "What is the weather in Oslo?", max_turns=4)
    assert CALLED and isinstance(result.final_output, str) and result.final_output
    outputs = [item for item in result.to_input_list() if item.get("type") == "function_call_output"]
    assert outputs and "sunny in" in str(outputs[0]["output"])


async def test_langchain_chat_openai_on_the_responses_api(stack: Stack) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=stack.http_url + "/v1", api_key="unused", model=MODEL, temperature=0, max_tokens=24,  # type: ignore[arg-type]
        max_retries=0, use_responses_api=True,
    )  # fmt: skip
    reply = await llm.ainvoke(QUESTION)
    assert "Paris" in reply.text
    bound = llm.model_copy(update={"max_tokens": 60}).bind_tools([get_weather], tool_choice="get_weather")
    message = await bound.ainvoke("What is the weather in Oslo?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def bridge(config: Config, stack: Stack) -> AsyncIterator[str]:
    running = BridgeServer(config, stack.grpc_target)
    await running.start()
    try:
        yield f"http://127.0.0.1:{running.port}/v1"
    finally:
        await running.stop()


async def test_a_chain_outlives_its_bridge_and_continues_through_another_on_a_shared_redis(
    stack: Stack, redis_url: str, tmp_path: Path
) -> None:
    config = stack.server.config.replace(port=0, state_store=redis_url)
    kwargs: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_output_tokens": 12}
    async with bridge(config.replace(data_dir=str(tmp_path / "a")), stack) as url:
        async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as first:
            started = await first.responses.create(input="My name is Ann.", **kwargs)
    async with bridge(config.replace(data_dir=str(tmp_path / "b")), stack) as url:  # the first one is gone
        async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as second:
            went_on = await second.responses.create(input="What is my name?", previous_response_id=started.id, **kwargs)
            assert (await second.responses.retrieve(started.id)).output_text == started.output_text
    assert went_on.usage is not None and started.usage is not None
    assert went_on.usage.input_tokens > started.usage.input_tokens + started.usage.output_tokens
