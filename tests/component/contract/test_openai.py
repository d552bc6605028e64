"""The deep contract through the real stack on vLLM: structured outputs, tools, logprobs, n, best_of,
the rest of the sampling fields, prefill, context length, models and LoRA adapters — with the `openai`
client, as users call it (LangChain and LlamaIndex: test_frameworks.py; gRPC: test_grpc.py)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import openai
import pytest
import pytest_asyncio

from tests.component.contract.conftest import ADAPTER, EMBEDDER, MODEL, QUESTION
from tests.function_tools import TIME, WEATHER
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.http_url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def ask(content: str = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


# ------------------------------------------------------------------ structured outputs
async def test_json_schema_answers_validate_against_the_schema(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=ask("Name a big city and its population."),
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}},
        max_tokens=60,
        temperature=0,
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), CITY)


async def test_json_object_is_a_json_object(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=ask("Describe Paris as JSON."), response_format={"type": "json_object"}, max_tokens=60
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ({"structured_outputs": {"regex": r"[0-9]{3}-[0-9]{4}"}}, lambda t: re.fullmatch(r"[0-9]{3}-[0-9]{4}", t)),
        ({"structured_outputs": {"choice": ["yes", "no"]}}, lambda t: t in ("yes", "no")),
        ({"structured_outputs": {"grammar": 'root ::= "Paris" | "Lyon"'}}, lambda t: t in ("Paris", "Lyon")),
        ({"guided_json": CITY}, lambda t: jsonschema.validate(json.loads(t), CITY) is None),
        ({"guided_choice": ["red", "blue"]}, lambda t: t in ("red", "blue")),
    ],
)
async def test_vllm_constraints_and_the_older_guided_fields(
    client: openai.AsyncOpenAI, extra: dict[str, Any], check: Any
) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=ask("Answer."), max_tokens=40, temperature=0, extra_body=extra
    )
    text = reply.choices[0].message.content or ""
    assert check(text), text


async def test_a_broken_constraint_is_a_400_naming_the_field(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(
            model=MODEL, messages=ask(), extra_body={"structured_outputs": {"regex": "(abc"}}
        )
    assert err.value.body["param"] == "structured_outputs"


# ------------------------------------------------------------------ tools
async def test_named_tool_choice_calls_that_function_with_valid_arguments(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=ask("What is the weather in Paris?"),
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
    )
    choice = reply.choices[0]
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    assert choice.finish_reason == "stop"  # OpenAI's convention for a named function


async def test_required_tool_choice_calls_a_tool_and_says_tool_calls(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=ask("What time is it in Tokyo?"), tools=[WEATHER, TIME], tool_choice="required",
        max_tokens=80, temperature=0,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in choice.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


async def test_streamed_tool_calls_have_openai_chunk_shape(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=ask("Weather in Oslo?"), tools=[WEATHER], stream=True, max_tokens=60, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    pieces = [c.choices[0].delta.tool_calls for c in [chunk async for chunk in stream] if c.choices]
    deltas = [d for piece in pieces if piece for d in piece]
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.type == "function" and first.function.name == "get_weather"
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


async def test_tool_results_go_back_to_the_model(client: openai.AsyncOpenAI) -> None:
    messages = [
        *ask("What is the weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees."},
    ]  # fmt: skip
    reply = await client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=30, temperature=0
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


# What the model writes in Hermes' tool-call format (SmolLM2's template has none of its own), forced with a
# regex so that even the tiny model writes it: the `auto` path must turn that text into a tool call.
HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'


async def test_auto_tool_choice_parses_the_models_call_with_vllms_parser(client: openai.AsyncOpenAI) -> None:
    """`auto` leaves the model free (no grammar from the tools) and vLLM's hermes parser (the server's
    --tool-call-parser) separates the call from the text, whole and streamed."""
    forced = {"structured_outputs": {"regex": re.escape(HERMES_CALL)}}
    request: dict[str, Any] = {
        "model": MODEL, "messages": ask("What is the weather in Paris?"), "tools": [WEATHER, TIME],
        "tool_choice": "auto", "max_tokens": 60, "temperature": 0, "extra_body": forced,
    }  # fmt: skip
    reply = await client.chat.completions.create(**request)
    choice = reply.choices[0]
    (call,) = choice.message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris", "unit": "celsius"},
    )
    assert choice.finish_reason == "tool_calls" and not choice.message.content

    stream = await client.chat.completions.create(**request, stream=True)
    chunks = [c async for c in stream]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris", "unit": "celsius"}
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

    free = await client.chat.completions.create(**{**request, "extra_body": {}})  # unforced: text, no call
    assert free.choices[0].message.content and not free.choices[0].message.tool_calls


# ------------------------------------------------------------------ logprobs, n, best_of
async def test_chat_logprobs_in_openai_shape_streamed_and_not(client: openai.AsyncOpenAI) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": ask(), "max_tokens": 8, "temperature": 0}
    reply = await client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert entry.token == entry.top_logprobs[0].token  # greedy: the chosen token is the most likely
    stream = await client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=1, stream=True)
    streamed = [
        e
        for c in [x async for x in stream]
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in content]


async def test_completions_logprobs_and_echo(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, logprobs=2,
                                            echo=True, temperature=0)  # fmt: skip
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the prompt's first token
    assert reply.choices[0].text.startswith("The capital of France is")
    assert "".join(lp.tokens) == reply.choices[0].text


async def test_n_choices_streamed_and_whole(client: openai.AsyncOpenAI) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": ask("Tell me a word."), "max_tokens": 8, "temperature": 1.0}
    reply = await client.chat.completions.create(**kwargs, n=2, seed=3)
    assert [c.index for c in reply.choices] == [0, 1]
    stream = await client.chat.completions.create(**kwargs, n=2, seed=3, stream=True)
    finishes = [
        (c.choices[0].index, c.choices[0].finish_reason)
        async for c in stream
        if c.choices and c.choices[0].finish_reason
    ]
    assert sorted(finishes) == [(0, "length"), (1, "length")] or sorted(i for i, _ in finishes) == [0, 1]


async def test_best_of_picks_among_candidates(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, best_of=3,
                                            temperature=1.0, seed=5)  # fmt: skip
    assert len(reply.choices) == 1 and reply.choices[0].text


# ------------------------------------------------------------------ the rest of the sampling fields
async def test_seed_reproduces_a_sample(client: openai.AsyncOpenAI) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": ask("Say something."), "max_tokens": 12, "temperature": 1.0}
    first = await client.chat.completions.create(**kwargs, seed=42)
    again = await client.chat.completions.create(**kwargs, seed=42)
    assert first.choices[0].message.content == again.choices[0].message.content


async def test_logit_bias_bans_a_token(client: openai.AsyncOpenAI, stack: Stack) -> None:
    tokens = await _tokenize(stack, " Paris")
    kwargs: dict[str, Any] = {"model": MODEL, "messages": ask(), "max_tokens": 12, "temperature": 0}
    plain = await client.chat.completions.create(**kwargs)
    assert "Paris" in (plain.choices[0].message.content or "")
    banned = await client.chat.completions.create(**kwargs, logit_bias={str(t): -100 for t in tokens})
    assert " Paris" not in (banned.choices[0].message.content or "")


async def test_min_tokens_stop_token_ids_and_include_stop_str(client: openai.AsyncOpenAI, stack: Stack) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": ask(), "max_tokens": 40, "temperature": 0}
    longer = await client.chat.completions.create(**kwargs, extra_body={"min_tokens": 30, "ignore_eos": False})
    assert longer.usage.completion_tokens >= 30
    (period,) = await _tokenize(stack, ".")
    stopped = await client.chat.completions.create(**kwargs, extra_body={"stop_token_ids": [period]})
    assert "." not in (stopped.choices[0].message.content or "") and stopped.choices[0].finish_reason == "stop"
    kept = await client.chat.completions.create(
        **kwargs, stop=["Paris"], extra_body={"include_stop_str_in_output": True}
    )
    assert (kept.choices[0].message.content or "").endswith("Paris")


async def test_penalties_and_min_p_are_honoured(client: openai.AsyncOpenAI) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": ask("List fruits."), "max_tokens": 40, "temperature": 0}
    plain = await client.chat.completions.create(**kwargs)
    penalised = await client.chat.completions.create(**kwargs, frequency_penalty=2.0, presence_penalty=2.0,
                                                     extra_body={"min_p": 0.1, "repetition_penalty": 1.3})  # fmt: skip
    assert plain.choices[0].message.content != penalised.choices[0].message.content


# ------------------------------------------------------------------ messages, context, models
async def test_an_assistant_message_last_is_continued(client: openai.AsyncOpenAI) -> None:
    messages = [*ask(), {"role": "assistant", "content": "The capital of France is"}]
    reply = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0)
    assert "Paris" in (reply.choices[0].message.content or "")


async def test_messages_too_long_for_the_context_are_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model=MODEL, messages=ask("word " * 9000), max_tokens=4)
    assert err.value.body["code"] == "context_length_exceeded" and err.value.body["param"] == "messages"


async def test_unknown_models_are_404_on_every_route(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as chat:
        await client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=2)
    with pytest.raises(openai.NotFoundError) as completion:
        await client.completions.create(model="gpt-4o", prompt="x", max_tokens=2)
    for err in (chat, completion):
        assert err.value.body["code"] == "model_not_found" and MODEL in err.value.body["message"]


async def test_models_list_the_base_and_the_adapter(client: openai.AsyncOpenAI) -> None:
    models = {m.id: m for m in (await client.models.list()).data}
    assert set(models) == {MODEL, ADAPTER}
    assert all(m.created > 1_700_000_000 for m in models.values())


async def test_an_adapter_answers_differently_and_leaves_the_base_alone(client: openai.AsyncOpenAI) -> None:
    kwargs: dict[str, Any] = {"messages": ask(), "max_tokens": 16, "temperature": 0}
    base_before = await client.chat.completions.create(model=MODEL, **kwargs)
    adapted, base_during = await asyncio.gather(
        client.chat.completions.create(model=ADAPTER, **kwargs), client.chat.completions.create(model=MODEL, **kwargs)
    )
    assert adapted.model == ADAPTER
    assert adapted.choices[0].message.content != base_before.choices[0].message.content
    assert base_during.choices[0].message.content == base_before.choices[0].message.content


async def _tokenize(stack: Stack, text: str) -> list[int]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_url + "/tokenize", json={"model": MODEL, "prompt": text, "add_special_tokens": False}
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return list((await response.json())["tokens"])


# ------------------------------------------------------------------ embeddings and tokens
async def test_embeddings_float_and_base64_agree(client: openai.AsyncOpenAI) -> None:
    import numpy as np

    texts = ["Green tea is brewed at 80 degrees.", "The warranty lasts three years."]
    floats = await client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    packed = await client.embeddings.create(model=EMBEDDER, input=texts)  # the client asks for base64 and decodes it
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.prompt_tokens > 0
    for a, b in zip(floats.data, packed.data, strict=True):
        assert len(a.embedding) == 384 and np.allclose(a.embedding, b.embedding, atol=1e-6)
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError) as err:
        await client.embeddings.create(model=EMBEDDER, input="x", dimensions=64)
    assert err.value.body["param"] == "dimensions"


async def test_tokenize_and_detokenize_round_trip(stack: Stack) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(
            stack.http_url + "/tokenize", json={"prompt": QUESTION, "return_token_strs": True}
        ) as r:
            tokens = await r.json()
        assert tokens["count"] == len(tokens["tokens"]) == len(tokens["token_strs"]) and tokens["max_model_len"] > 0
        async with session.post(stack.http_url + "/detokenize", json={"tokens": tokens["tokens"]}) as r:
            assert (await r.json())["prompt"] == QUESTION
        async with session.post(stack.http_url + "/tokenize", json={"model": "nope", "prompt": "x"}) as r:
            assert r.status == 404


async def test_a_repeated_long_prompt_reports_cached_tokens_in_openai_usage(client: openai.AsyncOpenAI) -> None:
    context = " ".join(f"Note {i}: the lake froze on night {i}." for i in range(40))  # > 2 KV blocks of 128
    ask_twice = {"model": MODEL, "messages": ask(context + " When did the lake freeze?"), "max_tokens": 2}
    first = await client.chat.completions.create(**ask_twice)
    again = await client.chat.completions.create(**ask_twice)
    assert first.usage and first.usage.prompt_tokens > 256
    assert again.usage and again.usage.prompt_tokens_details and again.usage.prompt_tokens_details.cached_tokens
    assert again.usage.prompt_tokens_details.cached_tokens >= 128
    streamed = await client.chat.completions.create(**ask_twice, stream=True, stream_options={"include_usage": True})
    usage = [chunk.usage async for chunk in streamed if chunk.usage]
    assert usage and usage[-1].prompt_tokens_details and usage[-1].prompt_tokens_details.cached_tokens >= 128
