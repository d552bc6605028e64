"""The real gRPC server (in process, port 0): its protocol over the fake engine, and what the real model
does through it on the hf engine (the shared `hf_stack`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from chatllm.clients import AsyncChatClient
from chatllm.proto import SERVICE_NAME, pb
from chatllm.server.app import ChatLLMServer
from chatllm.server.engines.hf import PAGE_SIZE, _check_cache_holds_context, _kv_blocks
from chatllm.server.errors import StartupError
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.servers import grpc_server, long_story_under_way, make_config, transformers_greedy, wait_engine_idle
from tests.stack import Stack, fake_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine(answer=ANSWER, stall=0.001)  # a long answer is still streaming when a test cancels it


@pytest_asyncio.fixture(scope="module")
async def server(data_dir: Path, engine: FakeEngine) -> AsyncIterator[ChatLLMServer]:
    async with grpc_server(fake_config(data_dir, max_concurrent=16, max_queue=32), engine) as running:
        yield running


@pytest_asyncio.fixture
async def client(server: ChatLLMServer) -> AsyncIterator[AsyncChatClient]:
    async with AsyncChatClient(f"127.0.0.1:{server.port}") as c:
        yield c


@pytest_asyncio.fixture
async def hf_client(hf_stack: Stack) -> AsyncIterator[AsyncChatClient]:
    """A client of the real model on the hf engine."""
    async with AsyncChatClient(hf_stack.grpc_target) as c:
        yield c


async def test_stream_of_deltas_concatenates_to_the_final_text(client: AsyncChatClient) -> None:
    responses = [r async for r in client.stream(QUESTION, temperature=0.0, max_new_tokens=24)]
    deltas = [r.text for r in responses if not r.HasField("final")]
    assert len(deltas) >= 3, deltas
    assert all(deltas), "every non-final response carries text"
    final = responses[-1]
    assert final.HasField("final") and sum(r.HasField("final") for r in responses) == 1
    text = "".join(r.text for r in responses)
    assert text == ANSWER
    assert final.final.finish_reason == pb.FINISH_REASON_STOP
    assert final.final.usage.completion_tokens == final.completion_tokens > 0
    assert final.final.usage.prompt_tokens > 10
    assert final.final.usage.total_tokens == final.final.usage.prompt_tokens + final.final.usage.completion_tokens
    t = final.final.timings
    assert 0 < t.time_to_first_token_seconds <= t.total_seconds


async def test_greedy_answer_matches_transformers_generate(hf_client: AsyncChatClient, model_dir: Path) -> None:
    """The engine path changes nothing: greedy output equals plain model.generate."""
    result = await hf_client.chat(QUESTION, temperature=0.0, max_new_tokens=16)
    expected, prompt_tokens = await asyncio.to_thread(transformers_greedy, model_dir, QUESTION, 16)
    assert (result.text, result.usage.prompt_tokens) == (expected, prompt_tokens)


async def test_eight_concurrent_streams_finish_with_correct_usage(hf_client: AsyncChatClient) -> None:
    client = hf_client

    async def one(i: int) -> tuple[int, int, int]:
        n_deltas = 0
        final = None
        async for r in client.stream(f"Count from {i} to {i + 20}.", max_new_tokens=12, ignore_eos=True):
            n_deltas += bool(r.text)
            if r.HasField("final"):
                final = r.final
        assert final is not None
        return final.usage.completion_tokens, final.finish_reason, n_deltas

    results = await asyncio.gather(*(one(i) for i in range(8)))
    for completion, reason, n_deltas in results:
        assert completion == 12
        assert reason == pb.FINISH_REASON_LENGTH
        assert n_deltas >= 2


async def test_cancelled_stream_frees_its_engine_slot(hf_client: AsyncChatClient) -> None:
    client = hf_client
    call = await long_story_under_way(client)
    busy = await client.server_info()
    assert busy.active_requests + busy.waiting_requests >= 1
    call.cancel()
    info = await wait_engine_idle(client, within=1.0)
    assert info.active_requests == 0 and info.waiting_requests == 0


async def test_deadline_aborts_the_engine_request(hf_client: AsyncChatClient) -> None:
    client = hf_client
    call = client.stream("Tell me everything about Rome.", max_new_tokens=2000, ignore_eos=True, timeout=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info = await wait_engine_idle(client, within=1.0)
    assert info.active_requests == 0


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        ({"temperature": 3.0}, "sampling.temperature"),
        ({"temperature": float("nan")}, "sampling.temperature"),
        ({"top_p": 0.0}, "sampling.top_p"),
        ({"top_p": 1.5}, "sampling.top_p"),
        ({"top_k": -1}, "sampling.top_k"),
        ({"max_new_tokens": 0}, "sampling.max_new_tokens"),
        ({"repetition_penalty": 20.0}, "sampling.repetition_penalty"),
        ({"stop": [""]}, "sampling.stop"),
    ],
)
async def test_invalid_sampling_is_invalid_argument_naming_the_field(
    client: AsyncChatClient, sampling: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat(QUESTION, **sampling)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":"), err.value.details()


@pytest.mark.parametrize(("sampling", "field"), [({"repetition_penalty": 1.2}, "sampling.repetition_penalty"),
                                                 ({"seed": 7}, "sampling.seed")])  # fmt: skip
async def test_the_hf_engine_refuses_what_it_cannot_honour(
    hf_client: AsyncChatClient, sampling: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hf_client.chat(QUESTION, **sampling)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ": not supported by the hf backend"), err.value.details()


async def test_empty_prompt_and_overlong_prompt_are_invalid(
    client: AsyncChatClient, hf_client: AsyncChatClient
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat("   ")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("prompt:")
    # ~10k tokens: under the character limit, over the model's 8192-token context.
    long_prompt = " ".join(f"w{i}" for i in range(12_000))[:99_000]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hf_client.chat(long_prompt)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context" in err.value.details() and err.value.details().startswith("prompt:")


async def test_stop_strings_end_the_answer_before_the_stop(hf_client: AsyncChatClient) -> None:
    client = hf_client
    full = await client.chat(QUESTION, temperature=0.0, max_new_tokens=16)
    assert "Paris" in full.text
    cut = await client.chat(QUESTION, temperature=0.0, max_new_tokens=16, stop=["Paris"])
    assert cut.text == full.text[: full.text.index("Paris")]
    assert cut.finish_reason == "stop"


async def test_history_and_system_prompt_reach_the_model(client: AsyncChatClient, engine: FakeEngine) -> None:
    await client.chat("What is my name?", max_new_tokens=12)
    assert engine.prompts[-1] == "<user>What is my name?</user>\n<assistant>"
    history = [("Hello, my name is Zorblax.", "Nice to meet you, Zorblax!")]
    await client.chat("What is my name?", max_new_tokens=12, history=history)
    assert engine.prompts[-1] == (
        "<user>Hello, my name is Zorblax.</user>\n<assistant>Nice to meet you, Zorblax!</assistant>\n"
        "<user>What is my name?</user>\n<assistant>"
    )
    await client.chat("What is my name?", max_new_tokens=12, system_prompt="Always answer in French.")
    assert engine.prompts[-1].startswith("<system>Always answer in French.</system>\n")


async def test_list_models_and_server_info(client: AsyncChatClient) -> None:
    models = await client.models()
    assert models.models[0].id == FAKE_MODEL and models.models[0].backend == "fake"
    assert any(m.name == "Qwen2-7b" and "A10" in m.recommended_hardware for m in models.catalog)
    info = await client.server_info()
    assert info.uptime_seconds > 0 and info.version
    assert info.max_concurrent == 16 and not info.draining


async def test_the_real_model_is_described_as_loaded(hf_client: AsyncChatClient) -> None:
    (base,) = (await hf_client.models()).models
    assert (base.id, base.backend, base.context_length, base.chat_template) == (
        "SmolLM2-135M-Instruct", "hf", 8192, "tokenizer"
    )  # fmt: skip


async def test_health_serving_and_reflection_lists_the_service(server: ChatLLMServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = []
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = [s.name for s in reply.list_services_response.service]
        assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


async def test_knowledge_base_disabled_is_unavailable(client: AsyncChatClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat(QUESTION, knowledge_base="default")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "knowledge base" in err.value.details()


async def test_a_kv_cache_smaller_than_the_context_is_a_startup_error(model_dir: Path) -> None:
    """One 256-token block cannot hold the model's 8192-token context: refuse to start, saying what
    to change, rather than let a long request wait forever for blocks that never free up."""
    from transformers import AutoConfig

    blocks = _kv_blocks(AutoConfig.from_pretrained(model_dir), 4, 0.02)  # fp32
    assert blocks == 1
    with pytest.raises(StartupError, match=r"holds 256 tokens.*--max-model-len 256"):
        _check_cache_holds_context(blocks, 8192, 0.02)
    _check_cache_holds_context(blocks, PAGE_SIZE, 0.02)  # a context capped to the cache starts


async def test_requests_that_each_fill_the_whole_cache_take_turns(data_dir: Path, model_dir: Path) -> None:
    """With one cache block (a request holds a whole block), two answers that each need it both finish."""
    async with grpc_server(make_config(data_dir, kv_cache_space=0.02, max_model_len=128)) as server:
        async with AsyncChatClient(f"127.0.0.1:{server.port}") as client:
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(client.chat(QUESTION, max_new_tokens=24, ignore_eos=True, temperature=0.0) for _ in range(2))
                ),
                timeout=300,
            )
            assert [a.usage.completion_tokens for a in answers] == [24, 24]
            assert (await client.server_info()).model.context_length == 128


def calls(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("chatllm_requests_total", {"method": method, "code": code}) or 0.0


async def test_every_call_is_counted_with_its_status_and_leaves_nothing_in_flight(client: AsyncChatClient) -> None:
    """The outcome interceptor's bookkeeping, for a unary call, a stream answered, refused and cancelled."""
    before = {key: calls(*key) for key in [("Generate", "OK"), ("Generate", "INVALID_ARGUMENT"),
                                          ("Generate", "CANCELLED"), ("GetServerInfo", "OK")]}  # fmt: skip
    await client.chat(QUESTION)
    with pytest.raises(grpc.aio.AioRpcError):
        await client.chat(QUESTION, temperature=9.0)
    call = client.stream(QUESTION, max_new_tokens=2000, ignore_eos=True)
    await call.read()
    call.cancel()
    await client.server_info()
    deadline = asyncio.get_running_loop().time() + 10
    while calls("Generate", "CANCELLED") == before["Generate", "CANCELLED"]:  # the server sees the cancel soon after
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert {key: calls(*key) - value for key, value in before.items()} == dict.fromkeys(before, 1.0)
    assert REGISTRY.get_sample_value("chatllm_requests_in_flight", {"method": "Generate"}) == 0
