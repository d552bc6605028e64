"""`chatllm serve`'s bridge calls Generate in process (chatllm.server.local_generate): every protocol answers
as over loopback gRPC, with the same errors, token check, metrics, cancellation and deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from chatllm.bridge.errors import rpc_details
from chatllm.proto import pb
from chatllm.server.local_generate import LocalCall
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.servers import grpc_server
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TRANSPORTS = ("grpc", "in-process")


@pytest_asyncio.fixture(loop_scope="session", params=TRANSPORTS)
async def stack(request: pytest.FixtureRequest, tmp_path: Path, fake_engine: FakeEngine) -> AsyncIterator[Stack]:
    async with serving_stack(fake_config(tmp_path), fake_engine, in_process=request.param == "in-process") as stack:
        yield stack


def generations(code: str) -> float:
    return REGISTRY.get_sample_value("chatllm_requests_total", {"method": "Generate", "code": code}) or 0.0


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def every_protocol(stack: Stack) -> dict[str, Any]:
    """One streamed answer on each of the bridge's protocols, reduced to what a client keeps."""
    legacy = {"prompt": "hello", "use_stream_chat": True, "max_new_tokens": 9, "ignore_eos": True, "temperature": 0}
    chat = {
        "model": FAKE_MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 9,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + "/", json=legacy) as reply:
            out["nul"] = json.loads((await reply.read()).split(b"\0")[-2])
        async with session.post(stack.http_url + "/", json=legacy, headers={"Accept": "text/event-stream"}) as reply:
            out["sse"] = json.loads((await reply.text()).strip().split("\n\n")[-1].removeprefix("data: "))
        async with session.post(stack.http_url + "/v1/chat/completions", json=chat) as reply:
            events = [json.loads(e[6:]) for e in (await reply.text()).strip().split("\n\n")[:-1]]
        out["openai"] = (
            "".join(c["delta"].get("content", "") for e in events for c in e["choices"]),
            [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]],
            events[-1]["usage"],
        )
        async with session.ws_connect(stack.ws_url + "/") as ws:
            await ws.send_str(json.dumps(legacy))
            frames = []
            while (frame := await ws.receive_str()) != "<EOS>":
                frames.append(frame)
        out["websocket"] = "".join(frames)
    return out


async def test_every_protocol_answers_the_same_in_process(tmp_path: Path) -> None:
    answers = {}
    for transport in TRANSPORTS:
        engine = FakeEngine(stall=0.002)
        async with serving_stack(fake_config(tmp_path), engine, in_process=transport == "in-process") as stack:
            answers[transport] = await every_protocol(stack)
    local = answers["in-process"]
    assert local == answers["grpc"]
    words = (FakeEngine().answer.split() * 2)[:9]
    assert local["nul"]["response"] == local["sse"]["response"] == " ".join(words)
    assert local["nul"]["usage"]["completion_tokens"] == 9
    assert local["openai"][1:] == (["length"], {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20})


async def test_refusals_and_failures_read_the_same(stack: Stack, fake_engine: FakeEngine) -> None:
    chat = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + "/v1/chat/completions", json=chat) as reply:
            assert reply.status == 404
            assert (await reply.json())["error"]["code"] == "model_not_found"
        fake_engine.fail = True
        async with session.post(stack.http_url + "/", json={"prompt": "hi", "use_stream_chat": True}) as reply:
            last = json.loads((await reply.read()).split(b"\0")[-2])
    assert reply.status == 200 and "the fake engine failed" in last["error"]["message"]


async def test_a_client_that_leaves_aborts_the_engine_request(stack: Stack, fake_engine: FakeEngine) -> None:
    fake_engine.stall = 0.05
    cancelled = generations("CANCELLED")
    body = {"prompt": "count", "use_stream_chat": True, "max_new_tokens": 500, "ignore_eos": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + "/", json=body) as reply:
            await reply.content.readuntil(b"\0")
            assert fake_engine.running == 1
    await until(lambda: fake_engine.running == 0)  # its generator closed: a real engine aborts the request there
    await until(lambda: generations("CANCELLED") == cancelled + 1)


@pytest_asyncio.fixture(loop_scope="session")
async def token_server(tmp_path: Path) -> AsyncIterator[Any]:
    async with grpc_server(fake_config(tmp_path, token="secret"), FakeEngine(stall=0.02)) as server:
        yield server


def request(tokens: int = 4) -> pb.GenerateRequest:
    return pb.GenerateRequest(prompt="hi", sampling=pb.SamplingParams(max_new_tokens=tokens, ignore_eos=True))


async def test_the_token_and_the_error_table_apply_in_process(token_server: Any) -> None:
    generate = token_server.local_generate
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [r async for r in generate(request(), ())]
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rpc_details(refused.value).reason == "UNAUTHENTICATED"

    ok = generations("OK")
    answer = [r async for r in generate(request(), (("authorization", "secret"),))]
    assert answer[-1].final.usage.completion_tokens == 4 and answer[0].model == FAKE_MODEL
    assert generations("OK") == ok + 1

    bad = request()
    bad.sampling.temperature = -1
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        [r async for r in generate(bad, (("authorization", "secret"),))]
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_details(invalid.value).field == "sampling.temperature"


async def test_the_deadline_ends_the_call_and_aborts_the_engine_request(token_server: Any) -> None:
    call = token_server.local_generate(request(500), (("authorization", "secret"),), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        async for _ in call:
            pass
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the call's own cancel did not leak into the reader
    await until(lambda: token_server.state.engine.running == 0)


async def test_cancel_wakes_a_waiting_reader_and_stop_cancels_the_rest(token_server: Any) -> None:
    generate = token_server.local_generate
    call: LocalCall = generate(request(500), (("authorization", "secret"),))
    responses: list[pb.GenerateResponse] = []

    async def read() -> None:
        async for response in call:
            responses.append(response)

    reader = asyncio.create_task(read())
    await until(lambda: len(responses) >= 1)
    assert call.cancel() and not call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await until(lambda: token_server.state.engine.running == 0)

    idle = generate(request(500), (("authorization", "secret"),))
    first = await idle.__anext__()  # then its reader stops reading, without cancelling
    assert first.text
    assert generate.cancel_all() == 1 and not generate.calls
    await until(lambda: token_server.state.engine.running == 0)
    with pytest.raises(asyncio.CancelledError):
        await idle.__anext__()
