"""The legacy WebSocket protocol through the real bridge and real gRPC server, over the fake engine;
and a conversation with the real model that remembers its earlier rounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import websocket  # the websocket-client package, as the EAS docs' Python client uses

from chatllm.bridge.runner import BridgeServer
from tests.fake_engine import FakeEngine
from tests.servers import make_config
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
EOS = "<EOS>"
MAX_PENDING = 5
MAX_CONNECTIONS = 3


@pytest_asyncio.fixture(scope="module")
async def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history")


@pytest_asyncio.fixture(scope="module")
async def engine() -> FakeEngine:
    return FakeEngine(answer=ANSWER, stall=0.01)  # a long answer is still running while the test goes on


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path, engine: FakeEngine, history_dir: Path) -> AsyncIterator[Stack]:
    # The server's history export shows exactly which history each round was sent with.
    config = fake_config(
        data_dir,
        temperature=0.0,
        max_new_tokens=24,
        max_round=5,
        ws_max_pending=MAX_PENDING,
        ws_max_connections=MAX_CONNECTIONS,
        export_history_path=str(history_dir),
    )
    async with serving_stack(config, engine) as running:
        yield running


def read_lines(history_dir: Path) -> list[str]:
    return [line for f in sorted(history_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]


async def ws_entries(history_dir: Path) -> list[dict[str, Any]]:
    lines = await asyncio.to_thread(read_lines, history_dir)
    return [e for e in map(json.loads, lines) if e["channel"] == "ws"]


async def exported(history_dir: Path, before: int, count: int, within: float = 10) -> list[dict[str, Any]]:
    """The `count` exchanges of the ws channel exported after the first `before` (polls until written)."""
    deadline = time.monotonic() + within
    while True:
        entries = await ws_entries(history_dir)
        if len(entries) >= before + count or time.monotonic() > deadline:
            return entries[before:]
        await asyncio.sleep(0.05)


def answer_rounds(url: str, frames: list[str], header: list[str] | None = None) -> list[str]:
    """Send all frames back to back, then read until one <EOS> per frame; the answers in order."""
    ws = websocket.create_connection(url, header=header or [], timeout=120)
    try:
        for frame in frames:
            ws.send(frame)
        answers, current = [], []
        while len(answers) < len(frames):
            message = ws.recv()
            if message == EOS:
                answers.append("".join(current))
                current = []
            else:
                current.append(message)
        return answers
    finally:
        ws.close()


PROMPTS = ["Hello, my name is Zorblax.", "What is 2 + 2?", "Name a colour.", "Name a fruit.", "What is my name?"]


async def test_five_back_to_back_prompts_get_five_eos_and_the_history_grows(
    stack: Stack, engine: FakeEngine, history_dir: Path
) -> None:
    prompts = PROMPTS
    frames = [json.dumps({"prompt": p, "max_new_tokens": 16}) for p in prompts]
    before = len(await ws_entries(history_dir))
    answers = await asyncio.to_thread(answer_rounds, stack.ws_url + "/", frames)
    assert len(answers) == 5 and all(answers)
    assert all(p in engine.prompts[-1] for p in prompts)  # round 5 was asked with rounds 1-4
    rounds = await exported(history_dir, before, 5)
    assert [r["prompt"] for r in rounds] == prompts, "answered in order"
    assert [r["history_length"] for r in rounds] == [0, 1, 2, 3, 4]
    assert [r["response"] for r in rounds] == answers


async def test_history_is_trimmed_to_max_round(stack: Stack, history_dir: Path) -> None:
    before = len(await ws_entries(history_dir))
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.ws_url + "/") as ws:
        for i in range(7):
            await ws.send_str(json.dumps({"prompt": f"Say the number {i}.", "max_new_tokens": 4}))
            while (await ws.receive_str(timeout=120)) != EOS:
                pass
    rounds = await exported(history_dir, before, 7)
    assert [r["history_length"] for r in rounds] == [0, 1, 2, 3, 4, 5, 5]


async def test_bare_text_frame_streams_deltas_and_non_stream_sends_one_frame(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.ws_url + "/api/predict/svc") as ws:
        await ws.send_str(QUESTION)
        deltas = []
        while (frame := await ws.receive_str(timeout=120)) != EOS:
            deltas.append(frame)
        assert len(deltas) >= 3 and "".join(deltas) == ANSWER
        await ws.send_str(json.dumps({"prompt": QUESTION, "use_stream_chat": False, "history": []}))
        assert await ws.receive_str(timeout=120) == ANSWER
        assert await ws.receive_str(timeout=120) == EOS


async def test_bad_frame_gets_an_error_frame_then_eos_and_the_socket_stays_usable(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.ws_url + "/") as ws:
        await ws.send_str(json.dumps({"prompt": "hi", "top_k": "many"}))
        error = json.loads(await ws.receive_str(timeout=120))["error"]
        assert error["status"] == 400 and error["param"] == "top_k" and error["message"].startswith("top_k:")
        assert await ws.receive_str(timeout=120) == EOS
        await ws.send_str(json.dumps({"prompt": "hi", "temperature": 9}))  # range checked by the server
        assert json.loads(await ws.receive_str(timeout=120))["error"]["param"] == "temperature"
        assert await ws.receive_str(timeout=120) == EOS
        await ws.send_str(json.dumps({"prompt": QUESTION, "use_stream_chat": "false"}))
        assert await ws.receive_str(timeout=120) == ANSWER


async def test_ping_is_answered_with_pong(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.ws_url + "/", autoping=False) as ws:
        await ws.ping(b"still there?")
        message = await ws.receive(timeout=30)
        assert message.type is aiohttp.WSMsgType.PONG and message.data == b"still there?"


async def test_client_close_1000_mid_answer_cancels_the_grpc_call(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(stack.ws_url + "/")
        body = {"prompt": "Write a very long story about a dragon.", "max_new_tokens": 2000, "ignore_eos": True}
        await ws.send_str(json.dumps(body))
        for _ in range(2):
            assert await ws.receive_str(timeout=120) != EOS
        busy = await stack.server_info()
        assert busy.active_requests == 1
        await ws.close(code=aiohttp.WSCloseCode.OK)
    idle = await stack.wait_engine_idle(within=10)
    assert idle.active_requests == 0 and idle.waiting_requests == 0


async def test_too_many_pending_frames_close_with_1013(stack: Stack) -> None:
    body = json.dumps({"prompt": "Count to a thousand.", "max_new_tokens": 2000, "ignore_eos": True})
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.ws_url + "/") as ws:
        for _ in range(MAX_PENDING + 2):  # at most one in progress plus MAX_PENDING queued fit
            await ws.send_str(body)
        while (message := await ws.receive(timeout=120)).type is aiohttp.WSMsgType.TEXT:
            pass
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER and "pending" in message.extra
    assert (await stack.wait_engine_idle(within=10)).active_requests == 0


async def test_connection_limit_refuses_the_handshake_with_503(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        open_sockets = [await session.ws_connect(stack.ws_url + "/") for _ in range(MAX_CONNECTIONS)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(stack.ws_url + "/")
        assert refused.value.status == 503
        for ws in open_sockets:
            await ws.close()


async def test_shutdown_finishes_the_answer_in_progress_then_closes_1001(stack: Stack, data_dir: Path) -> None:
    bridge = BridgeServer(make_config(data_dir, shutdown_grace=60.0), stack.grpc_target)
    await bridge.start()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"ws://127.0.0.1:{bridge.port}/")
        await ws.send_str(json.dumps({"prompt": QUESTION, "max_new_tokens": 16, "temperature": 0}))
        first = await ws.receive_str(timeout=120)
        stopping = asyncio.create_task(bridge.stop())
        frames = [first]
        while (message := await ws.receive(timeout=120)).type is aiohttp.WSMsgType.TEXT:
            frames.append(message.data)
        assert frames[-1] == EOS and "".join(frames[:-1]) == ANSWER
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY
        await stopping
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.ws_connect(f"ws://127.0.0.1:{bridge.port}/")


async def test_answer_still_running_after_the_grace_ends_with_an_error_frame(stack: Stack, data_dir: Path) -> None:
    bridge = BridgeServer(make_config(data_dir, shutdown_grace=1.0), stack.grpc_target)
    await bridge.start()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"ws://127.0.0.1:{bridge.port}/")
        await ws.send_str(json.dumps({"prompt": "Write a long story.", "max_new_tokens": 2000, "ignore_eos": True}))
        assert await ws.receive_str(timeout=120) != EOS
        stopping = asyncio.create_task(bridge.stop())
        frames = []
        while (message := await ws.receive(timeout=120)).type is aiohttp.WSMsgType.TEXT:
            frames.append(message.data)
        await stopping
    assert frames[-1] == EOS
    error = json.loads(frames[-2])["error"]
    assert error["status"] == 503 and "shutting down" in error["message"]
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY
    assert (await stack.wait_engine_idle(within=10)).active_requests == 0


async def test_the_real_model_answers_the_fifth_prompt_from_the_first_four(hf_stack: Stack) -> None:
    frames = [json.dumps({"prompt": p, "max_new_tokens": 16, "temperature": 0}) for p in PROMPTS]
    answers = await asyncio.to_thread(answer_rounds, hf_stack.ws_url + "/", frames)
    assert "Zorblax" in answers[-1]
