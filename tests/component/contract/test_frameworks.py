"""LangChain and LlamaIndex against the real stack (vLLM), used as their docs show: structured output in all
three of LangChain's methods, bound tools (named and required; invoke and stream), embeddings, adapters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import numpy as np
import pytest
from pydantic import BaseModel, Field

from tests.component.contract.conftest import ADAPTER, EMBEDDER, MODEL, QUESTION
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


class City(BaseModel):
    """A city and its country."""

    city: str = Field(description="the city's name")
    country: str = Field(description="the country it is in")


def get_weather(city: str, unit: str) -> str:
    """The current weather in a city (unit: celsius or fahrenheit)."""
    return f"sunny in {city}"


def chat_model(stack: Stack, model: str = MODEL) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=stack.http_url + "/v1", api_key="unused", model=model, temperature=0, max_tokens=60, max_retries=0
    )


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_langchain_structured_output_in_every_method(stack: Stack, method: str) -> None:
    structured = chat_model(stack).with_structured_output(City, method=method)
    city = await structured.ainvoke("Paris is a city in France. Give the city and its country.")
    assert isinstance(city, City) and city.city and city.country


async def test_langchain_json_mode_returns_a_json_object(stack: Stack) -> None:
    # json_mode (response_format json_object) promises a JSON object, not a schema: LangChain parses it to a dict.
    structured = chat_model(stack).with_structured_output(None, method="json_mode", include_raw=True)
    reply = await structured.ainvoke("Paris is a city in France. Give the city and its country as JSON.")
    assert reply["parsing_error"] is None and isinstance(reply["parsed"], dict) and reply["parsed"]
    assert json.loads(reply["raw"].content) == reply["parsed"]


@pytest.mark.parametrize("tool_choice", ["get_weather", "required"])
async def test_langchain_bound_tools_invoke_and_stream(stack: Stack, tool_choice: str) -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    bound = chat_model(stack).bind_tools([get_weather], tool_choice=tool_choice)
    schema = convert_to_openai_tool(get_weather)["function"]["parameters"]
    message = await bound.ainvoke("What is the weather in Oslo?")
    (call,) = message.tool_calls[:1]
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(call["args"], schema)
    merged = None
    async for chunk in bound.astream("What is the weather in Oslo?"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.tool_calls and merged.tool_calls[0]["name"] == "get_weather"
    jsonschema.validate(merged.tool_calls[0]["args"], schema)


async def test_langchain_chat_with_an_adapter(stack: Stack) -> None:
    base, adapted = await asyncio.gather(
        chat_model(stack).ainvoke(QUESTION), chat_model(stack, ADAPTER).ainvoke(QUESTION)
    )
    assert base.content != adapted.content and adapted.response_metadata["model_name"] == ADAPTER


async def test_langchain_embeddings_are_the_knowledge_bases_vectors(stack: Stack) -> None:
    from langchain_openai import OpenAIEmbeddings

    from chatllm.retrieval.embedder import Embedder

    embeddings = OpenAIEmbeddings(
        base_url=stack.http_url + "/v1", api_key="unused", model=EMBEDDER, check_embedding_ctx_length=False
    )
    texts = ["Green tea is brewed at 80 degrees.", "The warranty lasts three years."]
    served = await embeddings.aembed_documents(texts)
    own = await asyncio.to_thread(Embedder().encode, texts)  # what the knowledge base stores for these texts
    assert np.allclose(np.asarray(served), own, atol=1e-5)
    query = await embeddings.aembed_query(texts[0])
    assert np.allclose(query, own[0], atol=1e-5)


async def test_llamaindex_openai_like_chat_and_embeddings(stack: Stack) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model=MODEL, api_base=stack.http_url + "/v1", api_key="unused", is_chat_model=True, temperature=0,
        max_tokens=24, max_retries=0,
    )  # fmt: skip
    reply = await llm.achat([ChatMessage(role="user", content=QUESTION)])
    assert "Paris" in (reply.message.content or "")
    pieces = [chunk.delta async for chunk in await llm.astream_chat([ChatMessage(role="user", content=QUESTION)])]
    assert "".join(p or "" for p in pieces) == reply.message.content
    embedder = OpenAIEmbedding(model_name=EMBEDDER, api_base=stack.http_url + "/v1", api_key="unused", max_retries=0)
    vector = await embedder.aget_text_embedding("Green tea is brewed at 80 degrees.")
    assert len(vector) == 384 and abs(np.linalg.norm(vector) - 1.0) < 1e-4
