"""/v1/responses over the real servicer and bridge on tests/fake_engine.py (no model): the Response
object, the event sequence, the store (chains, restarts, a second bridge), background and cancel,
input_items, and the 400s for what is not supported."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatllm.bridge.runner import BridgeServer
from chatllm.kernel.config import Config
from tests.fake_engine import DEFAULT_ANSWER as ANSWER
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def stack(fake_stack: Stack, fake_engine: FakeEngine) -> Stack:
    return fake_stack


@contextlib.asynccontextmanager
async def bridge_for(config: Config, grpc_port: int) -> AsyncIterator[BridgeServer]:
    """Another bridge (a restart, or a second replica of the front door) in front of the same server."""
    bridge = BridgeServer(config, f"127.0.0.1:{grpc_port}")
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()


async def call(stack: Stack | str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = stack if isinstance(stack, str) else stack.http_url
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + path, json=body) as reply:
            return reply.status, await reply.json()


async def events(stack: Stack, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + "/v1/responses", json={**body, "stream": True}) as reply:
            assert reply.status == 200 and reply.content_type == "text/event-stream"
            raw = (await reply.read()).decode()
    out = []
    for block in raw.strip().split("\n\n"):
        kind, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        out.append(event)
    return out


async def test_a_response_is_openais_object_with_usage_and_is_stored(stack: Stack) -> None:
    status, response = await call(stack, "POST", "/v1/responses", {"input": "hello", "metadata": {"k": "v"}})
    assert status == 200
    assert response["object"] == "response" and response["id"].startswith("resp_")
    assert response["status"] == "completed" and response["model"] == FAKE_MODEL
    (message,) = response["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []}]
    usage = response["usage"]
    assert usage["output_tokens"] == len(ANSWER.split()) and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert "cached_tokens" in usage["input_tokens_details"] and response["metadata"] == {"k": "v"}
    status, stored = await call(stack, "GET", f"/v1/responses/{response['id']}")
    assert status == 200 and stored == response


async def test_a_chain_sends_the_earlier_turns_and_their_tokens(stack: Stack, fake_engine: FakeEngine) -> None:
    _, first = await call(stack, "POST", "/v1/responses", {"input": "my name is Ann", "instructions": "be brief"})
    _, second = await call(
        stack, "POST", "/v1/responses", {"input": "what is my name", "previous_response_id": first["id"]}
    )
    prompt = fake_engine.prompts[-1]
    assert "my name is Ann" in prompt and ANSWER in prompt and "what is my name" in prompt
    assert "be brief" not in prompt  # instructions are not carried over (as OpenAI)
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
    assert second["previous_response_id"] == first["id"]


async def test_store_false_is_not_retrievable(stack: Stack) -> None:
    _, response = await call(stack, "POST", "/v1/responses", {"input": "hello", "store": False})
    assert response["store"] is False
    status, error = await call(stack, "GET", f"/v1/responses/{response['id']}")
    assert status == 404 and error["error"]["code"] == "response_not_found"
    status, error = await call(stack, "POST", "/v1/responses", {"input": "x", "previous_response_id": response["id"]})
    assert status == 400 and error["error"]["param"] == "previous_response_id"


async def test_the_stream_is_openais_event_sequence_and_its_deltas_join_to_the_text(stack: Stack) -> None:
    got = await events(stack, {"input": "hello"})
    kinds = [e["type"] for e in got]
    deltas = [e for e in got if e["type"] == "response.output_text.delta"]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]  # fmt: skip
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]  # fmt: skip
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    final = got[-1]["response"]
    assert "".join(d["delta"] for d in deltas) == ANSWER == final["output"][0]["content"][0]["text"]
    assert {d["item_id"] for d in deltas} == {final["output"][0]["id"]}
    status, stored = await call(stack, "GET", f"/v1/responses/{final['id']}")
    assert status == 200 and stored == final


async def test_max_output_tokens_makes_an_incomplete_response(stack: Stack) -> None:
    _, response = await call(stack, "POST", "/v1/responses", {"input": "hello", "max_output_tokens": 2})
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    got = await events(stack, {"input": "hello", "max_output_tokens": 2})
    assert got[-1]["type"] == "response.incomplete"


async def test_delete_then_gone(stack: Stack) -> None:
    _, response = await call(stack, "POST", "/v1/responses", {"input": "hello"})
    status, deleted = await call(stack, "DELETE", f"/v1/responses/{response['id']}")
    assert status == 200 and deleted == {"id": response["id"], "object": "response.deleted", "deleted": True}
    assert (await call(stack, "GET", f"/v1/responses/{response['id']}"))[0] == 404
    assert (await call(stack, "DELETE", f"/v1/responses/{response['id']}"))[0] == 404


async def test_input_items_keep_tool_calls_and_outputs_and_page(stack: Stack) -> None:
    items = [
        {"role": "user", "content": "weather in Oslo?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    _, response = await call(stack, "POST", "/v1/responses", {"input": items})
    path = f"/v1/responses/{response['id']}/input_items"
    _, listed = await call(stack, "GET", path + "?order=asc")
    assert [i["type"] for i in listed["data"]] == ["message", "function_call", "function_call_output"]
    assert listed["data"][1]["arguments"] == '{"city": "Oslo"}' and listed["data"][2]["output"] == "sunny"
    _, newest = await call(stack, "GET", path + "?limit=1")
    assert newest["data"] == [listed["data"][2]] and newest["has_more"] is True
    _, rest = await call(stack, "GET", path + f"?limit=5&after={newest['last_id']}")
    assert rest["data"] == listed["data"][1::-1] and rest["has_more"] is False
    assert (await call(stack, "GET", path + "?limit=500"))[0] == 400


async def test_background_is_queued_then_polled_to_completion(stack: Stack) -> None:
    status, queued = await call(stack, "POST", "/v1/responses", {"input": "hello", "background": True})
    assert status == 200 and queued["status"] == "queued" and queued["background"] is True
    response = await poll(stack, queued["id"])
    assert response["status"] == "completed" and response["output"][0]["content"][0]["text"] == ANSWER


async def test_background_cancel_stops_generating(stack: Stack, fake_engine: FakeEngine) -> None:
    fake_engine.stall = 2.0  # the whole answer would take 10 s
    _, queued = await call(stack, "POST", "/v1/responses", {"input": "hello", "background": True})
    await stack.wait_engine_busy(5)
    status, cancelled = await call(stack, "POST", f"/v1/responses/{queued['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    idle = await stack.wait_engine_idle(5)
    assert idle.active_requests == 0  # the engine request ended long before the answer could
    response = await poll(stack, queued["id"])
    assert response["status"] == "cancelled"
    _, plain = await call(stack, "POST", "/v1/responses", {"input": "hello", "max_output_tokens": 1})
    status, error = await call(stack, "POST", f"/v1/responses/{plain['id']}/cancel")
    assert status == 400 and "background" in error["error"]["message"]


async def poll(stack: Stack | str, response_id: str, within: float = 10) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        _, response = await call(stack, "GET", f"/v1/responses/{response_id}")
        if response["status"] not in ("queued", "in_progress") or loop.time() > deadline:
            return response  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


async def test_a_chain_continues_after_a_bridge_restart_and_through_another_bridge(
    stack: Stack, fake_engine: FakeEngine
) -> None:
    _, first = await call(stack, "POST", "/v1/responses", {"input": "my name is Ann"})
    config = stack.server.config
    await stack.bridge.stop()  # the bridge that stored it goes away
    async with bridge_for(config, stack.server.port) as restarted, bridge_for(config, stack.server.port) as other:
        url = f"http://127.0.0.1:{restarted.port}"
        chained = {"input": "and then", "previous_response_id": first["id"]}
        status, second = await call(url, "POST", "/v1/responses", chained)
        assert status == 200 and "my name is Ann" in fake_engine.prompts[-1]
        other_url = f"http://127.0.0.1:{other.port}"
        status, _ = await call(
            other_url, "POST", "/v1/responses", {"input": "finally", "previous_response_id": second["id"]}
        )
        prompt = fake_engine.prompts[-1]
        assert status == 200 and "my name is Ann" in prompt and "and then" in prompt
        assert (await call(other_url, "GET", f"/v1/responses/{first['id']}"))[1] == first


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": [{"type": "reasoning", "id": "r", "summary": []}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content"),
        ({"input": "x", "reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"input": "x", "include": ["file_search_call.results"]}, "include[0]"),
        ({"input": "x", "background": True, "stream": True}, "background"),
        ({"input": "x", "frequency_penalty": 1}, "frequency_penalty"),
        ({"instructions": "x"}, "input"),
        ({"input": "x", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format"),
    ],
)
async def test_what_is_not_supported_is_a_400_naming_the_field(stack: Stack, body: dict[str, Any], param: str) -> None:
    status, error = await call(stack, "POST", "/v1/responses", body)
    assert status == 400, error
    assert error["error"]["param"] == param and error["error"]["message"].startswith(param)


async def test_a_chain_continues_through_another_bridge_on_a_shared_redis(
    fake_engine: FakeEngine, tmp_path: Path, redis_url: str
) -> None:
    async with serving_stack(fake_config(tmp_path / "a", state_store=redis_url), fake_engine) as first_stack:
        _, first = await call(first_stack, "POST", "/v1/responses", {"input": "my name is Ann"})
        other_config = first_stack.server.config.replace(data_dir=str(tmp_path / "b"))  # nothing local is shared
        async with bridge_for(other_config, first_stack.server.port) as other:
            url = f"http://127.0.0.1:{other.port}"
            chained = {"input": "go on", "previous_response_id": first["id"]}
            status, _ = await call(url, "POST", "/v1/responses", chained)
            assert status == 200 and "my name is Ann" in fake_engine.prompts[-1]


async def test_the_agents_sdk_and_langchain_read_the_responses(stack: Stack) -> None:
    """Their parsing of the whole response and of the stream, without a model (the tools: the contract tests)."""
    import openai
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled
    from langchain_openai import ChatOpenAI

    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    async with openai.AsyncOpenAI(base_url=stack.http_url + "/v1", api_key="unused", max_retries=0) as client:
        model = OpenAIResponsesModel(model=FAKE_MODEL, openai_client=client)
        agent = Agent(name="a", instructions="be brief", model=model, model_settings=ModelSettings(temperature=0))
        assert (await Runner.run(agent, "hello")).final_output == ANSWER
        streamed = Runner.run_streamed(agent, "hello")
        deltas = [e.data.delta async for e in streamed.stream_events() if e.type == "raw_response_event"
                  and e.data.type == "response.output_text.delta"]  # fmt: skip
        assert "".join(deltas) == streamed.final_output == ANSWER
    llm = ChatOpenAI(
        base_url=stack.http_url + "/v1",
        api_key="unused",
        model=FAKE_MODEL,
        max_retries=0,
        use_responses_api=True,  # type: ignore[arg-type]
    )
    assert (await llm.ainvoke("hello")).text == ANSWER
    assert "".join([chunk.text async for chunk in llm.astream("hello")]) == ANSWER


async def test_a_stored_response_belongs_to_the_token_that_made_it(fake_engine: FakeEngine, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:token-a\nbob:token-b\n")
    async with serving_stack(fake_config(tmp_path, token_file=str(tokens)), fake_engine) as stack:

        async def as_(token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
                async with session.request(method, stack.http_url + path, json=body) as reply:
                    return reply.status, await reply.json()

        _, made = await as_("token-a", "POST", "/v1/responses", {"input": "secret plans"})
        path = f"/v1/responses/{made['id']}"
        assert (await as_("token-b", "GET", path))[0] == 404
        assert (await as_("token-b", "GET", path + "/input_items"))[0] == 404
        assert (await as_("token-b", "DELETE", path))[0] == 404
        chained = {"input": "go on", "previous_response_id": made["id"]}
        assert (await as_("token-b", "POST", "/v1/responses", chained))[0] == 400
        assert (await as_("token-a", "POST", "/v1/responses", chained))[0] == 200
        assert (await as_("token-a", "GET", path)) == (200, made)
