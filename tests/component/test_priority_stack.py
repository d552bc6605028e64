"""Priority classes through the real bridge and server over the fake engine: every way a client asks
(OpenAI `priority` and `service_tier`, legacy JSON, WebSocket frames and handshake, gRPC, X-Priority)
reaches the engine, the token file's ceiling clamps it, bad values are a 400 naming the field, and a
waiting interactive request overtakes queued bulk ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from chatllm.clients import AsyncChatClient
from chatllm.kernel.priority import Priority
from tests.fake_engine import FakeEngine
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
PAGE, BATCH = "page-token-12345", "batch-token-67890"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@pytest_asyncio.fixture(loop_scope="session")
async def stack(tmp_path: Path, fake_engine: FakeEngine) -> AsyncIterator[Stack]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"page:{PAGE}\nbatch:{BATCH}:priority=bulk\n")
    # No slots of the interactive class's own: an interactive request has to overtake the queue.
    config = fake_config(tmp_path, token_file=str(tokens), max_concurrent=1, interactive_slots=0)
    async with serving_stack(config, fake_engine) as running:
        yield running


async def post(stack: Stack, path: str, body: Any, token: str = PAGE, **headers: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        response = await session.post(stack.http_url + path, json=body, headers={"Authorization": token, **headers})
        await response.read()
        return response


@pytest.mark.parametrize(
    ("path", "body", "headers", "expected"),
    [
        ("/v1/chat/completions", {**CHAT, "priority": "interactive"}, {}, Priority.INTERACTIVE),
        ("/v1/chat/completions", {**CHAT, "priority": 5}, {}, Priority.BULK),  # vLLM's integers
        ("/v1/chat/completions", {**CHAT, "service_tier": "flex"}, {}, Priority.BULK),
        ("/v1/chat/completions", {**CHAT, "service_tier": "priority"}, {}, Priority.INTERACTIVE),
        ("/v1/chat/completions", CHAT, {"X-Priority": "bulk"}, Priority.BULK),
        ("/v1/chat/completions", {**CHAT, "priority": "interactive"}, {"X-Priority": "bulk"}, Priority.INTERACTIVE),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "priority": "bulk"}, {}, Priority.BULK),
        ("/", {"prompt": "hi", "max_new_tokens": 2, "priority": "interactive"}, {}, Priority.INTERACTIVE),
        ("/", {"prompt": "hi", "max_new_tokens": 2}, {"X-Priority": "-1"}, Priority.INTERACTIVE),
        ("/", {"prompt": "hi", "max_new_tokens": 2}, {}, Priority.DEFAULT),
    ],
)
async def test_every_way_of_asking_reaches_the_engine(
    stack: Stack, fake_engine: FakeEngine, path: str, body: Any, headers: dict[str, str], expected: Priority
) -> None:
    response = await post(stack, path, body, **headers)
    assert response.status == 200
    assert fake_engine.priorities[-1] == expected


async def test_the_tokens_ceiling_clamps_what_it_asks(stack: Stack, fake_engine: FakeEngine) -> None:
    assert (await post(stack, "/v1/chat/completions", {**CHAT, "priority": "interactive"}, BATCH)).status == 200
    assert fake_engine.priorities[-1] == Priority.BULK
    async with AsyncChatClient(stack.grpc_target, token=BATCH) as client:
        await client.chat("hi", max_new_tokens=2, priority="interactive")
    assert fake_engine.priorities[-1] == Priority.BULK
    async with AsyncChatClient(stack.grpc_target, token=PAGE) as client:
        await client.chat("hi", max_new_tokens=2, priority="interactive")
    assert fake_engine.priorities[-1] == Priority.INTERACTIVE


async def test_websocket_frames_and_the_handshake_header(stack: Stack, fake_engine: FakeEngine) -> None:
    headers = {"Authorization": PAGE, "X-Priority": "bulk"}
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.ws_url + "/", headers=headers) as ws:
        for frame, expected in (({"prompt": "hi"}, Priority.BULK), ({"prompt": "hi", "priority": 0}, Priority.DEFAULT)):
            await ws.send_str(json.dumps({**frame, "max_new_tokens": 2}))
            while (await ws.receive_str()) != "<EOS>":
                pass
            assert fake_engine.priorities[-1] == expected
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(stack.ws_url + "/", headers={"Authorization": PAGE, "X-Priority": "soon"})
        assert refused.value.status == 400


@pytest.mark.parametrize(
    ("path", "body", "headers", "param"),
    [
        ("/v1/chat/completions", {**CHAT, "priority": "urgent"}, {}, "priority"),
        ("/v1/chat/completions", {**CHAT, "service_tier": "scale"}, {}, "service_tier"),
        ("/", {"prompt": "hi", "priority": True}, {}, "priority"),
        ("/", {"prompt": "hi"}, {"X-Priority": "asap"}, "X-Priority"),
    ],
)
async def test_bad_values_are_a_400_naming_the_field(
    stack: Stack, path: str, body: Any, headers: dict[str, str], param: str
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + path, json=body, headers={"Authorization": PAGE, **headers}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == param


async def test_a_waiting_interactive_request_overtakes_queued_bulk(stack: Stack, fake_engine: FakeEngine) -> None:
    fake_engine.stall = 0.05  # five words: a quarter second per answer, one at a time (--max-concurrent 1)
    finished: list[str] = []

    async def ask(label: str, token: str, priority: str) -> None:
        body = {"prompt": label, "max_new_tokens": 5, "priority": priority, "use_stream_chat": False}
        assert (await post(stack, "/", body, token)).status == 200
        finished.append(label)

    running = asyncio.create_task(ask("running", PAGE, "default"))
    await stack.wait_engine_busy(5, PAGE)
    bulk = [asyncio.create_task(ask(f"bulk-{n}", BATCH, "bulk")) for n in range(3)]
    for _ in range(500):  # until the three wait behind it (5 s at most)
        if (await stack.server_info(PAGE)).waiting_requests >= 3:
            break
        await asyncio.sleep(0.01)
    chat = asyncio.create_task(ask("chat", PAGE, "interactive"))
    await asyncio.gather(running, chat, *bulk)
    assert finished[:2] == ["running", "chat"] and len(finished) == 5  # every bulk request completes too
