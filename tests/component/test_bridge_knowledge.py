"""Legacy `langchain` / `kb` fields through the bridge to the real knowledge base (milvus-lite,
real embedder), over the fake engine: replies carry the retrieved sources, the prompt the chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import requests

from chatllm.clients import AsyncChatClient
from tests.fake_engine import FakeEngine
from tests.stack import Stack, fake_config, serving_stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.model]  # the real embedder

ROUTER = b"""# Zephyr R7 router

## Factory reset

Hold the pinhole button on the back for twelve seconds until the lamp turns violet.

## Default Wi-Fi password

The default Wi-Fi password of the Zephyr R7 is printed under the stand: tangerine-42.
"""
QUESTION = "What is the default Wi-Fi password of the Zephyr R7?"


@pytest_asyncio.fixture(scope="module")
async def engine() -> FakeEngine:
    return FakeEngine()


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path, engine: FakeEngine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    db = tmp_path_factory.mktemp("kb") / "milvus.db"
    config = fake_config(
        data_dir, knowledge_base=True, milvus_uri=str(db), chunk_size=200, chunk_overlap=20, temperature=0.0
    )
    async with serving_stack(config, engine) as running:
        async with AsyncChatClient(running.grpc_target) as client:
            await client.ingest(data=ROUTER, filename="zephyr.md", knowledge_base="devices")
        yield running


async def test_langchain_true_answers_from_the_knowledge_base_with_sources(stack: Stack, engine: FakeEngine) -> None:
    body = {"prompt": QUESTION, "langchain": "True", "kb": "devices", "max_new_tokens": 24}
    response = await asyncio.to_thread(requests.post, stack.http_url + "/", json=body, timeout=300)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert set(reply) == {"response", "history", "usage", "sources"}
    assert reply["sources"] and all(set(s) == {"file", "chunk", "score", "text"} for s in reply["sources"])
    assert reply["sources"][0]["file"] == "zephyr.md" and "tangerine-42" in reply["sources"][0]["text"]
    assert reply["response"] == engine.answer and "tangerine-42" in engine.prompts[-1]
    plain = await asyncio.to_thread(
        requests.post, stack.http_url + "/", json={"prompt": QUESTION, "max_new_tokens": 4}, timeout=300
    )
    assert "sources" not in plain.json()  # without `langchain` the knowledge base is not used


async def test_stream_carries_the_sources_in_its_last_object(stack: Stack) -> None:
    body = {"prompt": QUESTION, "langchain": True, "kb": "devices", "use_stream_chat": True, "max_new_tokens": 8}

    def read() -> list[dict[str, object]]:
        with requests.post(stack.http_url + "/", json=body, stream=True, timeout=300) as response:
            return [json.loads(c) for c in response.iter_lines(delimiter=b"\0") if c]

    objects = await asyncio.to_thread(read)
    assert "sources" not in objects[0] and objects[-1]["sources"]


async def test_unknown_knowledge_base_is_404(stack: Stack) -> None:
    body = {"prompt": QUESTION, "langchain": True, "kb": "no-such-kb"}
    response = await asyncio.to_thread(requests.post, stack.http_url + "/", json=body, timeout=300)
    assert response.status_code == 404 and "no-such-kb" in response.json()["error"]["message"]
