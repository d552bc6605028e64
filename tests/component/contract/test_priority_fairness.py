"""Priority classes and fair share through the real stack on the real model: a second server (its own
admission: --max-concurrent 2, no interactive slots, a token file) over the package's running vLLM
engine (no model start-up), with a bridge in front. An interactive request sent behind a bulk backlog
gets its first token before the bulk ones queued ahead of it, and every bulk request completes; two
backlogged tokens are served within the VTC bound."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from chatllm.bridge.runner import BridgeServer
from chatllm.server.app import ChatLLMServer
from chatllm.server.engines.base import Engine
from tests.component.contract.conftest import MODEL
from tests.servers import make_config
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TOKENS = {"page": "page-token-0000001", "batch": "batch-token-000002", "a": "a-token-00000003", "b": "b-token-00000004"}
PROMPT = "Write a long story about a lighthouse keeper."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The bridge URL of a server with two slots over the package's engine."""
    workdir = tmp_path_factory.mktemp("small")
    tokens = workdir / "tokens"
    tokens.write_text(
        f"page:{TOKENS['page']}\nbatch:{TOKENS['batch']}:priority=bulk\na:{TOKENS['a']}\nb:{TOKENS['b']}\n"
    )
    engine = stack.server.state.engine
    assert isinstance(engine, Engine)
    config = make_config(
        workdir,
        served_model_name=MODEL,
        token_file=str(tokens),
        max_concurrent=2,
        interactive_slots=0,
        knowledge_base=False,
        temperature=0.0,
    )
    async with ChatLLMServer.running(config, engine) as server:
        bridge = BridgeServer(config, f"127.0.0.1:{server.port}")
        await bridge.start()
        try:
            yield f"http://127.0.0.1:{bridge.port}"
        finally:
            await bridge.stop()


async def stream(url: str, token: str, tokens: int, priority: str | None = None) -> dict[str, float]:
    """A legacy NUL stream: when its first token came and when it ended (monotonic), and its usage."""
    body: dict[str, object] = {"prompt": PROMPT, "max_new_tokens": tokens, "ignore_eos": True, "use_stream_chat": True}
    if priority is not None:
        body["priority"] = priority
    first, last = 0.0, {}
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/", json=body, headers={"Authorization": TOKENS[token]}) as response:
            assert response.status == 200, await response.text()
            buffer = b""
            async for block in response.content.iter_any():
                buffer += block
                *objects, buffer = buffer.split(b"\0")
                for raw in objects:
                    last = json.loads(raw)
                    if not first and last["response"]:
                        first = time.monotonic()
    usage = last["usage"]
    return {
        "first": first,
        "ended": time.monotonic(),
        "prompt": usage["prompt_tokens"],
        "completion": usage["completion_tokens"],
    }


async def test_an_interactive_request_overtakes_a_bulk_backlog(small: str) -> None:
    bulk = [asyncio.create_task(stream(small, "batch", 24, "bulk")) for _ in range(6)]
    await asyncio.sleep(0.5)  # two generate, four wait
    chat = await stream(small, "page", 4, "interactive")
    done = await asyncio.gather(*bulk)
    waiting = sorted(done, key=lambda d: d["first"])[2:]  # the four that were queued when the chat arrived
    assert all(chat["first"] < d["first"] for d in waiting)
    assert all(d["completion"] == 24 for d in done)  # every bulk request completes


async def test_two_backlogged_tokens_are_served_within_the_vtc_bound(small: str) -> None:
    a = [asyncio.create_task(stream(small, "a", 16)) for _ in range(10)]
    await asyncio.sleep(0.2)  # a's backlog first: arrival order alone would serve all of a before b
    b = [asyncio.create_task(stream(small, "b", 16)) for _ in range(10)]
    results = {"a": await asyncio.gather(*a), "b": await asyncio.gather(*b)}
    cost = max(d["prompt"] + 2 * d["completion"] for d in results["a"] + results["b"])  # the most one request adds
    finished = sorted((d["ended"], name, d["prompt"] + 2 * d["completion"]) for name, ds in results.items() for d in ds)
    served, remaining = {"a": 0.0, "b": 0.0}, {"a": 10, "b": 10}
    for _, name, weighted in finished:
        served[name] += weighted
        remaining[name] -= 1
        if all(remaining.values()):  # both still backlogged
            # The paper's bound (2 x the most one request adds), plus the two requests in flight.
            assert abs(served["a"] - served["b"]) <= 4 * cost, served
