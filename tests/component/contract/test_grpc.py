"""The same contract for services on gRPC, with the project's client: messages, tools, structured outputs,
logprobs, n, adapters, Tokenize / Detokenize / Embed, prefix-cache usage and readable error details."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import jsonschema
import numpy as np
import pytest
import pytest_asyncio

from chatllm.clients import AsyncChatClient, error_details
from chatllm.proto import pb
from tests.component.contract.conftest import ADAPTER, EMBEDDER, MODEL, QUESTION
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[AsyncChatClient]:
    async with AsyncChatClient(stack.grpc_target) as c:
        yield c


async def responses(client: AsyncChatClient, **kwargs: object) -> list[pb.GenerateResponse]:
    return [r async for r in client.stream(**kwargs)]


async def test_messages_with_a_named_tool_stream_deltas_and_end_with_complete_calls(client: AsyncChatClient) -> None:
    out = await responses(
        client, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[TOOL], tool_choice="get_weather",
        temperature=0, max_new_tokens=40,
    )  # fmt: skip
    deltas = [d for r in out for d in r.tool_calls]
    assert deltas and deltas[0].id and deltas[0].name == "get_weather"
    (call,) = out[-1].final.choices[0].tool_calls
    assert call.arguments == "".join(d.arguments for d in deltas)
    jsonschema.validate(json.loads(call.arguments), TOOL["function"]["parameters"])


async def test_structured_output_logprobs_and_n(client: AsyncChatClient) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    constraint = pb.StructuredOutput(json_schema=json.dumps(schema))
    out = await responses(client, prompt=QUESTION, structured_output=constraint, temperature=0, max_new_tokens=40,
                          logprobs=2)  # fmt: skip
    jsonschema.validate(json.loads("".join(r.text for r in out)), schema)
    entries = [e for r in out for e in r.logprobs]
    assert len(entries) == out[-1].final.usage.completion_tokens and all(len(e.top_logprobs) == 2 for e in entries)
    two = await responses(client, prompt=QUESTION, n=2, temperature=1.0, seed=1, max_new_tokens=6)
    assert {r.index for r in two} == {0, 1} and len(two[-1].final.choices) == 2


async def test_adapter_by_name_and_not_found_with_details(client: AsyncChatClient) -> None:
    base = await client.chat(QUESTION, temperature=0, max_new_tokens=12)
    adapted = await client.chat(QUESTION, model=ADAPTER, temperature=0, max_new_tokens=12)
    assert adapted.text != base.text
    models = await client.models()
    assert [m.id for m in models.models] == [MODEL, ADAPTER] and models.models[1].parent == MODEL
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat(QUESTION, model="nope")
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert error_details(err.value).reason == "MODEL_NOT_FOUND"


async def test_bad_input_names_the_field_in_the_details(client: AsyncChatClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat(QUESTION, top_p=3.0)
    details = error_details(err.value)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.field) == ("INVALID_FIELD", "sampling.top_p")


async def test_tokenize_detokenize_round_trip_and_messages_match_generate(client: AsyncChatClient) -> None:
    stub = client.stub
    tokens = await stub.Tokenize(pb.TokenizeRequest(prompt="hello world", return_token_strs=True))
    assert tokens.count == len(tokens.tokens) == len(tokens.token_strs) and tokens.max_model_len == 8192
    back = await stub.Detokenize(pb.DetokenizeRequest(tokens=tokens.tokens))
    assert back.prompt == "hello world"
    messages = [pb.Message(role="user", content=QUESTION)]
    counted = await stub.Tokenize(pb.TokenizeRequest(messages=messages))
    answer = await client.chat(messages=messages, max_new_tokens=1)
    assert counted.count == answer.usage.prompt_tokens


async def test_embed_matches_the_knowledge_base(client: AsyncChatClient) -> None:
    from chatllm.retrieval.embedder import Embedder

    reply = await client.stub.Embed(pb.EmbedRequest(input=["Green tea is brewed at 80 degrees."]))
    assert reply.model == EMBEDDER and reply.prompt_tokens > 0
    own = Embedder().encode(["Green tea is brewed at 80 degrees."])[0]
    assert np.allclose(np.asarray(reply.embeddings[0].values), own, atol=1e-5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.Embed(pb.EmbedRequest(input=["x"], dimensions=128))
    assert error_details(err.value).field == "dimensions"


async def test_a_repeated_long_prompt_reports_cached_tokens(client: AsyncChatClient) -> None:
    context = " ".join(f"Fact {i}: the sky was blue on day {i}." for i in range(40))  # > 2 KV blocks of 128
    first = await client.chat(context + " What colour was the sky?", max_new_tokens=2)
    again = await client.chat(context + " What colour was the sky?", max_new_tokens=2)
    assert first.usage.prompt_tokens > 256 and again.usage.cached_prompt_tokens >= 128
