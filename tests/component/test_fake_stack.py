"""The fast tier's seam: the real gRPC server and bridge over tests/fake_engine.py, with no model."""

from __future__ import annotations

import re

import aiohttp
import pytest

from chatllm.clients import AsyncChatClient
from chatllm.server.errors import InvalidArgument
from chatllm.server.validation import knowledge_base_name
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_injected_engine_answers_every_surface(fake_stack: Stack, fake_engine: FakeEngine) -> None:
    async with AsyncChatClient(fake_stack.grpc_target) as client:
        result = await client.chat("hello there", temperature=0)
        models = await client.models()
    assert result.text == fake_engine.answer and result.finish_reason == "stop"
    assert [(m.id, m.backend) for m in models.models] == [(FAKE_MODEL, "fake")]
    async with aiohttp.ClientSession() as session:
        async with session.post(fake_stack.http_url + "/", json={"prompt": "hello", "use_stream_chat": False}) as r:
            legacy = await r.json()
    assert legacy["response"] == fake_engine.answer
    assert fake_engine.prompts == ["<user>hello there</user>\n<assistant>", "<user>hello</user>\n<assistant>"]


async def test_api_info_gives_the_page_the_servers_knowledge_base_name_rule(fake_stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(fake_stack.http_url + "/api/info") as reply:
            rule = (await reply.json())["rules"]["knowledge_base_name"]
    assert rule["default"] == "default" and "64" in rule["rule"]
    for name in ("manuals", "team_docs-2", "x" * 64, "no spaces", "", "x" * 65, "ü"):
        try:
            knowledge_base_name(name or "?")
            accepted = True
        except InvalidArgument:
            accepted = False
        assert bool(re.match(rule["pattern"], name or "?")) == accepted, name
