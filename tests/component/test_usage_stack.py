"""Usage per token through the real bridge and server over the fake engine: the totals in GET /api/usage,
`chatllm usage` and /metrics equal the sum of the `usage` blocks the clients received; only admin
tokens read them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from chatllm.clients import AsyncChatClient
from chatllm.clients.cli import main as cli_main
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
ALICE, BOB, OPS = "alice-token-0001", "bob-token-0002", "ops-token-0003"


@pytest_asyncio.fixture(loop_scope="session")
async def stack(tmp_path: Path, fake_engine: FakeEngine) -> AsyncIterator[Stack]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{ALICE}\nbob:{BOB}:tpm=100000\nops:{OPS}:admin\n")
    async with serving_stack(fake_config(tmp_path, token_file=str(tokens)), fake_engine) as running:
        yield running


async def call(stack: Stack, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, stack.http_url + path, json=body, headers={"Authorization": token}) as r:
            return r.status, await r.json()


def tokens_metric(token: str, kind: str) -> float:
    value = REGISTRY.get_sample_value("chatllm_token_tokens_total", {"token": token, "model": FAKE_MODEL, "kind": kind})
    return value or 0.0


async def test_usage_totals_equal_what_the_clients_were_told(stack: Stack) -> None:
    before = {name: tokens_metric(name, "completion") for name in ("alice", "bob")}
    sent: dict[str, list[tuple[int, int]]] = {"alice": [], "bob": []}
    chat = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
    status, body = await call(stack, "POST", "/v1/chat/completions", ALICE, chat)
    assert status == 200
    sent["alice"].append((body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]))
    status, body = await call(stack, "POST", "/", ALICE, {"prompt": "a question", "use_stream_chat": False})
    sent["alice"].append((body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]))
    async with AsyncChatClient(stack.grpc_target, token=BOB) as bob:
        for question in ("one", "two words"):
            result = await bob.chat(question, max_new_tokens=3)
            sent["bob"].append((result.usage.prompt_tokens, result.usage.completion_tokens))

    status, report = await call(stack, "GET", "/api/usage", OPS)
    assert status == 200 and report["state_store"] == "embedded"
    totals = {row["token"]: row for row in report["totals"]}
    for name, blocks in sent.items():
        row = totals[name]
        assert row["model"] == FAKE_MODEL and row["requests"] == len(blocks)
        assert row["prompt_tokens"] == sum(p for p, _ in blocks)
        assert row["completion_tokens"] == sum(c for _, c in blocks)
        assert tokens_metric(name, "completion") - before[name] == sum(c for _, c in blocks)
    assert {row["day"] for row in report["data"]} == {report["data"][0]["day"]}  # today, one day

    status, only_bob = await call(stack, "GET", f"/api/usage?token=bob&start={report['data'][0]['day']}", OPS)
    assert [row["token"] for row in only_bob["data"]] == ["bob"]


async def test_only_admin_tokens_read_usage(stack: Stack) -> None:
    status, body = await call(stack, "GET", "/api/usage", ALICE)
    assert status == 403 and body["error"]["code"] == "permission_denied"
    status, body = await call(stack, "GET", "/api/usage?start=yesterday", OPS)
    assert status == 400 and body["error"]["param"] == "start"
    async with AsyncChatClient(stack.grpc_target, token=ALICE) as alice:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alice.usage()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_chatllm_usage_prints_the_same_totals(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    async with AsyncChatClient(stack.grpc_target, token=ALICE) as alice:
        await alice.chat("count me", max_new_tokens=2)
    _, report = await call(stack, "GET", "/api/usage?token=alice", OPS)
    args = ["usage", "--target", stack.grpc_target, "--token", OPS, "--of", "alice"]
    assert await asyncio.to_thread(cli_main, [*args, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["token"], int(r["requests"]), int(r["completion_tokens"])) for r in records] == [
        (row["token"], row["requests"], row["completion_tokens"]) for row in report["data"]
    ]
    assert await asyncio.to_thread(cli_main, args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["TOKEN", "MODEL", "REQUESTS", "PROMPT", "CACHED", "COMPLETION", "TOTAL"]
    assert table[1].split()[:3] == ["alice", FAKE_MODEL, str(report["totals"][0]["requests"])]
    assert await asyncio.to_thread(cli_main, ["usage", "--target", stack.grpc_target, "--token", ALICE]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
