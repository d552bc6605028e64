"""The OpenAI-compatible API through the real bridge and server, driven by the real `openai` package, over
the fake engine (which, as the hf backend, refuses every sampling field beyond temperature, top-k and
top-p). The same client against the real model on vLLM: tests/component/contract/."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
MODEL = FAKE_MODEL


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path) -> AsyncIterator[Stack]:
    engine = FakeEngine(answer=ANSWER, stall=0.01, supports_everything=False)
    async with serving_stack(fake_config(data_dir, max_new_tokens=48), engine) as running:
        yield running


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.http_url + "/v1", api_key="not-needed", max_retries=0) as c:
        yield c


async def test_chat_completion_non_stream(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=16,
    )
    assert reply.object == "chat.completion" and reply.model == MODEL
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == ANSWER
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 10
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_chat_completion_stream_matches_non_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert len([p for p in pieces if p]) >= 3 and "".join(pieces) == ANSWER
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


async def test_system_and_earlier_turns_reach_the_model(client: openai.AsyncOpenAI) -> None:
    async def prompt_tokens(messages: list[dict[str, str]]) -> int:
        reply = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)  # type: ignore[arg-type]
        assert reply.usage is not None
        return reply.usage.prompt_tokens

    alone = await prompt_tokens([{"role": "user", "content": "What is my name?"}])
    with_context = await prompt_tokens(
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Hello, my name is Zorblax."},
            {"role": "assistant", "content": "Nice to meet you, Zorblax!"},
            {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
        ]
    )
    assert with_context > alone + 15


async def test_completions_use_the_raw_prompt_stream_and_not(client: openai.AsyncOpenAI) -> None:
    prompt = "The capital of France is"
    whole = await client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=8)
    assert whole.object == "text_completion" and whole.choices[0].text.strip()
    assert whole.usage is not None and whole.usage.prompt_tokens < 10  # no chat template around it
    stream = await client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=8, stream=True)
    pieces = [chunk.choices[0].text async for chunk in stream]
    assert "".join(pieces) == whole.choices[0].text
    echoed = await client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=8, echo=True)
    assert echoed.choices[0].text == prompt + whole.choices[0].text


async def test_an_unknown_model_is_404_not_the_base_model(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}])
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "model_not_found"


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == [MODEL]
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3}, "temperature"),  # checked by the server, named as the client sent it
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"messages": [{"role": "user"}]}, "messages[0]"),  # an assistant message last is now a prefill
        ({"messages": [{"role": "tool", "content": "hi"}]}, "messages[0]"),  # tool messages need tool_call_id
        ({"logprobs": True}, "logprobs"),  # a backend without them (hf, this fake) refuses them: never dropped
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    client: openai.AsyncOpenAI, kwargs: dict[str, object], param: str
) -> None:
    request: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(**request)  # type: ignore[call-overload]
    assert isinstance(err.value.body, dict) and err.value.body["param"] == param
    assert err.value.body["message"].startswith(param + ":")


async def test_abandoned_stream_cancels_the_engine_request(client: openai.AsyncOpenAI, stack: Stack) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a very long story."}],
        max_tokens=2000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    assert (await stack.server_info()).active_requests == 1
    await stream.close()
    idle = await stack.wait_engine_idle(within=10)
    assert idle.active_requests == 0 and idle.waiting_requests == 0


def server_calls(method: str) -> float:
    return REGISTRY.get_sample_value("chatllm_requests_total", {"method": method, "code": "OK"}) or 0.0


async def test_the_reply_names_the_model_the_server_says_answered_without_asking_for_the_list(stack: Stack) -> None:
    """A body without `model` gets the base model's name, from the server's first message: the bridge
    makes no ListModels call for it."""
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
    listed = server_calls("ListModels")
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + "/v1/chat/completions", json=body) as whole:
            assert (await whole.json())["model"] == MODEL
        async with session.post(stack.http_url + "/v1/completions", json={"prompt": "hi", "stream": True}) as stream:
            events = [json.loads(line[6:]) for line in (await stream.text()).splitlines() if line[6:7] == "{"]
    assert events and all(event["model"] == MODEL for event in events)
    assert server_calls("ListModels") == listed
