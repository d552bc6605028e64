"""GPU paths of the vLLM engine: CUDA, pipeline and tensor parallel, through the real gRPC server.

They run only where vLLM's CUDA build and enough GPUs are present, and are skipped with
the reason otherwise (the CI machines have no GPU). SmolLM2-135M has 9 attention heads
and 3 KV heads, so its tensor-parallel sizes are 1 and 3; pipeline parallel splits its
30 layers over 2 GPUs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatllm.clients import AsyncChatClient
from chatllm.kernel.config import Config
from chatllm.server.engines import choose_backend
from chatllm.server.engines.vllm_setup import cuda_devices, vllm_build
from tests.servers import grpc_server, make_config

GPUS = cuda_devices()
CUDA_VLLM = vllm_build() == "cuda"

pytestmark = [
    pytest.mark.model,
    pytest.mark.gpu,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        not (GPUS and CUDA_VLLM),
        reason=f"needs a CUDA GPU and vLLM's CUDA build (found {GPUS} GPU(s), vLLM build {vllm_build()!r})",
    ),
]

QUESTION = "What is the capital of France?"


@pytest.fixture
async def answer(data_dir: Path, model_dir: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple]:
    """Start a server with the test's config overrides; yield (model info, greedy answer)."""
    overrides = request.param
    async with grpc_server(make_config(data_dir, backend="auto", **overrides)) as server:
        async with AsyncChatClient(f"127.0.0.1:{server.port}") as client:
            model = (await client.models()).models[0]
            result = await client.chat(QUESTION, temperature=0.0, max_new_tokens=16)
            yield model, result


def test_auto_picks_vllm_on_a_gpu_machine() -> None:
    assert choose_backend(Config.build()) == ("vllm", "auto: vLLM is installed and supports this device")


@pytest.mark.parametrize("answer", [{}], indirect=True)
async def test_cuda_engine_answers(answer: tuple) -> None:
    model, result = answer
    assert model.backend == "vllm" and model.device == "cuda"
    assert "Paris" in result.text and result.finish_reason == "stop"


@pytest.mark.skipif(GPUS < 2, reason=f"pipeline parallel 2 needs 2 GPUs, found {GPUS}")
@pytest.mark.parametrize("answer", [{"pipeline_parallel_size": 2}], indirect=True)
async def test_pipeline_parallel_over_two_gpus(answer: tuple) -> None:
    model, result = answer
    assert model.pipeline_parallel_size == 2
    assert "Paris" in result.text


@pytest.mark.skipif(GPUS < 3, reason=f"tensor parallel 3 (9 heads, 3 KV heads) needs 3 GPUs, found {GPUS}")
@pytest.mark.parametrize("answer", [{"tensor_parallel_size": 3}], indirect=True)
async def test_tensor_parallel_over_three_gpus(answer: tuple) -> None:
    model, result = answer
    assert model.tensor_parallel_size == 3
    assert "Paris" in result.text
