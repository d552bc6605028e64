"""The client core (chatllm.clients.core) and its two faces, over the real server and the fake engine:
the blocking ChatClient runs the same async core as AsyncChatClient, so both answer alike and fail
with the same gRPC errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from chatllm.clients import AsyncChatClient, ChatClient
from chatllm.clients.core import authorization_metadata
from tests.fake_engine import FakeEngine
from tests.stack import StackThread, fake_config

TOKEN = "core-token-1"


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine(answer="one two three four five six seven eight", stall=0.02)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: FakeEngine) -> Iterator[StackThread]:
    config = fake_config(tmp_path_factory.mktemp("core"), token=TOKEN)
    with StackThread(config, engine) as running:
        yield running


def target(server: StackThread) -> str:
    return f"127.0.0.1:{server.port}"


def test_the_blocking_and_the_async_client_answer_alike(server: StackThread, engine: FakeEngine) -> None:
    with ChatClient(target(server), token=TOKEN) as client:
        blocking = client.chat("hello", temperature=0)
        streamed = "".join(client.generate("hello", temperature=0))
        ready = client.ready()

    async def with_async_client() -> str:
        async with AsyncChatClient(target(server), token=TOKEN) as client:
            return (await client.chat("hello", temperature=0)).text

    assert blocking.text == streamed == asyncio.run(with_async_client()) == engine.answer
    assert blocking.finish_reason == "stop" and blocking.usage.completion_tokens == 8 and ready


def test_a_refused_call_is_the_same_grpc_error(server: StackThread) -> None:
    with ChatClient(target(server), token="wrong") as client, pytest.raises(grpc.RpcError) as refused:
        client.server_info()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_blocking_stream_cancelled_from_another_thread_ends_as_cancelled(
    server: StackThread, engine: FakeEngine
) -> None:
    with ChatClient(target(server), token=TOKEN) as client:
        # 2000 words at one per 20 ms: 40 s unless the cancel reaches the engine.
        call = client.stream("hello", max_new_tokens=2000, ignore_eos=True)
        assert next(call).text
        threading.Timer(0.05, call.cancel).start()
        with pytest.raises(grpc.RpcError) as cancelled:
            list(call)
        assert cancelled.value.code() == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + 10
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.running == 0  # the server ended the engine's stream


def test_only_sendable_authorization_goes_out() -> None:
    assert authorization_metadata("Bearer abc") == (("authorization", "Bearer abc"),)
    assert authorization_metadata(None) == authorization_metadata("") == ()
    assert authorization_metadata("tökén") == authorization_metadata("a\nb") == ()


def test_closing_twice_is_harmless(server: StackThread) -> None:
    client = ChatClient(target(server), token=TOKEN)
    client.close()
    client.close()
    assert client.loop.is_closed()
