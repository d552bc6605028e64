"""Speculative decoding (`--speculative ngram`) through the real stack on vLLM: the drafts are made and
accepted, and what the grammar and the tool parser produce stays correct with them (vLLM #40875
reports n-gram drafts corrupting tool calls on some models). One server for the module.

Each check reads the server's speculative-decoding counters around its requests: a check that passed
while no draft was accepted would prove nothing about speculation."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import openai
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from chatllm.server.engines.speculative import NGRAM_MAX_BATCH
from chatllm.server.engines.vllm_setup import vllm_build
from tests.function_tools import TIME, WEATHER
from tests.servers import make_config
from tests.stack import Stack, serving_stack

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(vllm_build() is None, reason="vLLM is not installed (make install puts it in .venv)"),
]
MODEL = "SmolLM2-135M-Instruct"
T = TypeVar("T")
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}
HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
PASSAGE = (
    "The Kestrel Voyager e-bike has a 630 Wh battery that gives a range of 70 to 140 km, and the standard "
    "4 A charger fills an empty battery in about 4 hours 45 minutes."
)


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path, model_dir: Path) -> AsyncIterator[Stack]:
    config = make_config(
        data_dir, backend="vllm", speculative="ngram", max_new_tokens=64, chat_template="chatml-tools", max_num_seqs=16
    )
    async with serving_stack(config) as running:
        yield running


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.http_url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def counters() -> tuple[float, float]:
    drafted = REGISTRY.get_sample_value("chatllm_spec_decode_draft_tokens_total") or 0.0
    accepted = REGISTRY.get_sample_value("chatllm_spec_decode_accepted_tokens_total") or 0.0
    return drafted, accepted


async def accepted_drafts(call: Awaitable[T]) -> tuple[T, float]:
    """The call's result and how many drafted tokens the model accepted meanwhile."""
    before = counters()[1]
    result = await call
    return result, counters()[1] - before


def ask(content: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


async def test_an_answer_that_quotes_its_context_accepts_drafts(client: openai.AsyncOpenAI) -> None:
    request = client.chat.completions.create(
        model=MODEL, messages=ask(f"Repeat this text exactly: {PASSAGE}"), max_tokens=48, temperature=0
    )
    reply, accepted = await accepted_drafts(request)
    assert reply.choices[0].message.content and accepted >= 8


async def test_drafting_stops_above_the_presets_batch_size(client: openai.AsyncOpenAI) -> None:
    """vLLM's per-batch-size schedule: no drafts while more than NGRAM_MAX_BATCH sequences share a step."""
    prompt = ask(f"Repeat this text exactly: {PASSAGE}")
    drafted_before = counters()[0]
    await client.chat.completions.create(model=MODEL, messages=prompt, max_tokens=32, temperature=0)
    alone = counters()[0] - drafted_before
    many = 4 * NGRAM_MAX_BATCH
    drafted_before = counters()[0]
    await asyncio.gather(
        *(
            client.chat.completions.create(model=MODEL, messages=prompt, max_tokens=32, temperature=0)
            for _ in range(many)
        )
    )
    together = counters()[0] - drafted_before
    # Drafts can only come from the steps before the batch fills up and after it empties.
    assert alone > 0 and together < alone * many / 4, (alone, together)


async def test_json_schema_answers_stay_valid(client: openai.AsyncOpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": ask(
            'Paris is the capital of France and has a population of 2102650. As JSON: {"city": "Paris", '
            '"country": "France", "population": 2102650}. Now give the same JSON for Paris.'
        ),
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}},
        "max_tokens": 60,
        "temperature": 0,
    }
    reply, accepted = await accepted_drafts(client.chat.completions.create(**request))
    text = reply.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), CITY)
    assert accepted > 0
    stream = await client.chat.completions.create(**request, stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert streamed == text


async def test_named_and_required_tool_calls_stay_valid(client: openai.AsyncOpenAI) -> None:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for choice, question in (
        ({"type": "function", "function": {"name": "get_weather"}}, "What is the weather in Paris, in celsius?"),
        ("required", "What time is it in the Asia/Tokyo zone?"),
    ):
        request = client.chat.completions.create(
            model=MODEL, messages=ask(question), tools=[WEATHER, TIME], tool_choice=choice, max_tokens=60,
            temperature=0,
        )  # fmt: skip
        reply, accepted = await accepted_drafts(request)
        calls = reply.choices[0].message.tool_calls or []
        assert calls and accepted > 0, (choice, accepted)
        for call in calls:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


async def test_streamed_tool_call_arguments_join_into_valid_json(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=ask("Weather in Oslo, celsius?"), tools=[WEATHER], stream=True, max_tokens=60,
        temperature=0, tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    deltas = [d for c in [chunk async for chunk in stream] if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_weather" and all(d.index == 0 for d in deltas)
    jsonschema.validate(
        json.loads("".join(d.function.arguments or "" for d in deltas)), WEATHER["function"]["parameters"]
    )


async def test_the_tool_parser_reads_a_drafted_call_whole_and_streamed(client: openai.AsyncOpenAI) -> None:
    """`auto`: vLLM's hermes parser reads the call out of text written with accepted drafts (the call is
    forced with a regex so the tiny model writes it; the prompt holds it, so the drafts find it)."""
    request: dict[str, Any] = {
        "model": MODEL, "messages": ask(f"Answer with exactly this tool call: {HERMES_CALL}"), "tools": [WEATHER, TIME],
        "tool_choice": "auto", "max_tokens": 60, "temperature": 0,
        "extra_body": {"structured_outputs": {"regex": re.escape(HERMES_CALL)}},
    }  # fmt: skip
    reply, accepted = await accepted_drafts(client.chat.completions.create(**request))
    (call,) = reply.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris", "unit": "celsius"},
    )
    assert reply.choices[0].finish_reason == "tool_calls" and accepted > 0

    stream = await client.chat.completions.create(**request, stream=True)
    chunks = [c async for c in stream]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris", "unit": "celsius"}
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
