"""The vLLM engine behind the real gRPC server (the contract package's stack: `--backend auto` given the
built-in model as a .gguf path, fp32): greedy equals transformers, batching, stop strings, seeds,
penalties, cancellation, deadlines, limits, metrics and the engine's processes.

The engine-death test kills the engine, so this module is the last of the package (pytest runs the
package's modules in name order) and that test the last of the module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.clients import AsyncChatClient
from chatllm.proto import SERVICE_NAME, pb
from chatllm.server.app import ChatLLMServer
from chatllm.server.engines.process_owner import vllm_processes
from chatllm.server.model_source import builtin_gguf
from tests.component.contract.conftest import MODEL
from tests.servers import long_story_under_way, transformers_greedy, wait_engine_idle
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = "What is the capital of France?"


@pytest.fixture
def server(stack: Stack) -> ChatLLMServer:
    return stack.server


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[AsyncChatClient]:
    async with AsyncChatClient(stack.grpc_target) as c:
        yield c


def own_template(model_dir: Path, question: str) -> str:
    """The question in the model's own chat template (the stack renders tools-aware ChatML), sent as a raw
    prompt: what the model answers then is what it answers with its own template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    )


async def ask(client: AsyncChatClient, model_dir: Path, question: str, **sampling: object):  # type: ignore[no-untyped-def]
    return await client.chat(own_template(model_dir, question), raw_prompt=True, **sampling)


async def test_auto_backend_serves_the_gguf_with_vllm_in_fp32(client: AsyncChatClient) -> None:
    model = (await client.models()).models[0]
    assert model.backend == "vllm"
    assert model.model_path == str(builtin_gguf()) and model.id == MODEL
    assert model.device == "cpu" and model.dtype == "float32"
    assert model.context_length == 8192 and model.tensor_parallel_size == 1


async def test_stream_of_deltas_concatenates_to_the_final_text(client: AsyncChatClient, model_dir: Path) -> None:
    prompt = own_template(model_dir, QUESTION)
    responses = [r async for r in client.stream(prompt, raw_prompt=True, temperature=0.0, max_new_tokens=24)]
    deltas = [r.text for r in responses if not r.HasField("final")]
    assert len(deltas) >= 3 and all(deltas), deltas
    final = responses[-1]
    assert final.HasField("final") and sum(r.HasField("final") for r in responses) == 1
    assert "Paris" in "".join(r.text for r in responses)
    assert final.final.finish_reason == pb.FINISH_REASON_STOP  # the model ends its answer with EOS
    assert final.final.usage.completion_tokens == final.completion_tokens > 0
    assert [r.completion_tokens for r in responses] == sorted(r.completion_tokens for r in responses)
    t = final.final.timings
    assert 0 < t.time_to_first_token_seconds <= t.total_seconds
    assert 0 <= t.queue_seconds < t.total_seconds


async def test_greedy_fp32_answer_equals_transformers_generate(client: AsyncChatClient, model_dir: Path) -> None:
    question = "Name three colours of the rainbow."
    result = await ask(client, model_dir, question, temperature=0.0, max_new_tokens=32)
    expected, prompt_tokens = await asyncio.to_thread(transformers_greedy, model_dir, question, 32)
    assert (result.text, result.usage.prompt_tokens) == (expected, prompt_tokens)


async def test_eight_concurrent_streams_finish_with_correct_usage(client: AsyncChatClient) -> None:
    async def one(i: int) -> tuple[int, int, int, str]:
        n_deltas = 0
        final = None
        text = ""
        async for r in client.stream(
            f"Count from {i} to {i + 20}.", max_new_tokens=12, ignore_eos=True, temperature=0.0
        ):
            n_deltas += bool(r.text)
            text += r.text
            if r.HasField("final"):
                final = r.final
        assert final is not None
        return final.usage.completion_tokens, final.finish_reason, n_deltas, text

    results = await asyncio.gather(*(one(i) for i in range(8)))
    for completion, reason, n_deltas, text in results:
        assert completion == 12 and reason == pb.FINISH_REASON_LENGTH
        assert n_deltas >= 2 and text
    # Batched greedy decoding gives each request its own answer, the same as alone.
    alone = await one(3)
    assert alone[3] == results[3][3]


async def test_stop_strings_end_the_answer_before_the_stop(client: AsyncChatClient, model_dir: Path) -> None:
    full = await ask(client, model_dir, QUESTION, temperature=0.0, max_new_tokens=16)
    assert "Paris" in full.text
    cut = await ask(client, model_dir, QUESTION, temperature=0.0, max_new_tokens=16, stop=["Paris"])
    assert cut.text == full.text[: full.text.index("Paris")]
    assert cut.finish_reason == "stop"


async def test_seed_makes_sampling_repeatable(client: AsyncChatClient) -> None:
    prompt = "Invent a name for a new planet."

    async def sample(seed: int) -> str:
        result = await client.chat(
            prompt, temperature=1.0, top_k=0, top_p=1.0, seed=seed, max_new_tokens=12, ignore_eos=True
        )
        return result.text

    first, again = await sample(11), await sample(11)
    assert first == again
    others = {await sample(seed) for seed in (12, 13)}
    assert len(others | {first}) >= 2, "different seeds gave the same sample every time"


async def test_repetition_penalty_reaches_the_engine(client: AsyncChatClient, model_dir: Path) -> None:
    prompt = "Repeat the word 'hello' ten times."
    plain = await ask(client, model_dir, prompt, temperature=0.0, max_new_tokens=16)
    penalised = await ask(client, model_dir, prompt, temperature=0.0, max_new_tokens=16, repetition_penalty=2.0)
    assert plain.text.lower().count("hello") >= 2, plain.text
    assert penalised.text != plain.text  # greedy either way: only the penalty can change the answer


async def test_cancelled_stream_frees_its_engine_request(client: AsyncChatClient, server: ChatLLMServer) -> None:
    call = await long_story_under_way(client)
    busy = await client.server_info()
    assert busy.active_requests == 1 and busy.kv_cache_usage > 0
    call.cancel()
    info = await wait_engine_idle(client, within=5.0)
    assert info.active_requests == 0 and info.waiting_requests == 0
    assert server.state.admission.active == 0


async def test_client_deadline_aborts_the_engine_request(client: AsyncChatClient) -> None:
    call = client.stream("Tell me everything about Rome.", max_new_tokens=2000, ignore_eos=True, timeout=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info = await wait_engine_idle(client, within=5.0)
    assert info.active_requests == 0


async def test_request_timeout_aborts_through_the_engine(
    client: AsyncChatClient, server: ChatLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--request-timeout: the server aborts the engine request, which ends its stream with ABORT."""
    service = server.state.generate
    assert service is not None
    monkeypatch.setattr(service, "limits", dataclasses.replace(service.limits, request_timeout=1.0))
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat("Tell me everything about Rome.", max_new_tokens=2000, ignore_eos=True)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--request-timeout" in err.value.details()
    assert time.monotonic() - started < 10
    info = await wait_engine_idle(client, within=5.0)
    assert info.active_requests == 0


async def test_prompt_longer_than_the_context_is_invalid(client: AsyncChatClient) -> None:
    long_prompt = " ".join(f"w{i}" for i in range(12_000))[:99_000]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat(long_prompt)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("prompt:") and "context" in err.value.details()


async def test_metrics_are_ours_only_and_show_the_engine(client: AsyncChatClient) -> None:
    """vLLM's own Prometheus metrics (`vllm:*`) stay out of this process's registry."""
    from prometheus_client import REGISTRY, generate_latest

    call = client.stream("Write a long story about a lighthouse.", max_new_tokens=200, ignore_eos=True)
    async for r in call:
        if r.completion_tokens >= 2:
            break
    exposition = generate_latest(REGISTRY).decode()
    call.cancel()
    assert "vllm:" not in exposition
    running = [line for line in exposition.splitlines() if line.startswith("chatllm_engine_running_requests ")]
    assert running and float(running[0].split()[1]) >= 1
    usage = [line for line in exposition.splitlines() if line.startswith("chatllm_kv_cache_usage_ratio ")]
    assert usage and float(usage[0].split()[1]) > 0
    await wait_engine_idle(client, within=5.0)


async def test_engine_processes_are_children_of_the_server(server: ChatLLMServer) -> None:
    names = {p.name() for p in vllm_processes()}
    assert any(n.startswith("VLLM::EngineCor") for n in names), names


# --------------------------------------------------------------------------- keep last: kills the engine
async def test_engine_death_fails_requests_unavailable_and_flips_health(
    client: AsyncChatClient, server: ChatLLMServer
) -> None:
    cores = [p for p in vllm_processes() if p.name().startswith("VLLM::EngineCor")]
    assert len(cores) == 1
    cores[0].kill()
    psutil.wait_procs(cores, timeout=10)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            status = (await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))).status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        # A dead engine does not come back: liveness fails too, so an orchestrator restarts the server.
        alive = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert alive.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.chat(QUESTION, max_new_tokens=4)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
