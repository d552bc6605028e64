"""One vLLM-backed stack for every contract test module in this package (started once, stopped after
the package): the built-in model given as a .gguf path to `--backend auto` (vLLM here, in fp32), with a
tool-aware chat template, a LoRA adapter, and the knowledge base (for embeddings). test_vllm_engine.py
kills the engine in its last test: keep it the last module of the package (by name)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from chatllm.server.engines.vllm_setup import vllm_build
from chatllm.server.model_source import builtin_gguf
from tests.adapters import make_lora_adapter
from tests.servers import make_config
from tests.stack import Stack, serving_stack

MODEL = "SmolLM2-135M-Instruct"
ADAPTER = "pirate"
EMBEDDER = "all-MiniLM-L6-v2"
QUESTION = "What is the capital of France?"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "contract" in item.nodeid and vllm_build() is None:
            item.add_marker(pytest.mark.skip(reason="vLLM is not installed (make install puts it in .venv)"))


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(data_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    adapter = await asyncio.to_thread(make_lora_adapter, model_dir, tmp_path_factory.mktemp("lora") / ADAPTER)
    config = make_config(
        data_dir,
        backend="auto",
        model_path=str(builtin_gguf()),
        served_model_name=MODEL,
        precision="fp32",
        max_new_tokens=64,
        chat_template="chatml-tools",
        lora_modules=(f"{ADAPTER}={adapter}",),
        knowledge_base=True,
        milvus_uri=str(tmp_path_factory.mktemp("kb") / "milvus.db"),
    )
    async with serving_stack(config) as running:
        yield running
