"""Helpers to run real servers in the test process (port 0, cleaned up on exit)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from chatllm.server.app import ChatLLMServer
from chatllm.server.config import Config


def make_config(data_dir: Path, **overrides: Any) -> Config:
    """A Config for tests: loopback, free ports, hf backend, no knowledge base unless asked."""
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "backend": "hf",
        "knowledge_base": False,
        "data_dir": str(data_dir),
        "shutdown_grace": 10.0,
    }
    values.update(overrides)
    return Config(**values)


@contextlib.asynccontextmanager
async def grpc_server(config: Config) -> AsyncIterator[ChatLLMServer]:
    async with ChatLLMServer.running(config) as server:
        yield server
