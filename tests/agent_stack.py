"""The real gRPC server and bridge over tests/fake_engine.py (no model), for the agent APIs' fast tests;
more bridges can be put in front of the same server, on the same state store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatllm.bridge.runner import BridgeServer
from chatllm.kernel.config import Config
from chatllm.server import app as server_app
from chatllm.server.model_source import ModelSource
from tests.fake_engine import FakeEngine
from tests.servers import grpc_server, make_config
from tests.stack import Stack

FAKE_MODEL = "fake-model"


@contextlib.asynccontextmanager
async def fake_served(
    monkeypatch: pytest.MonkeyPatch, engine: FakeEngine, data_dir: Path, **overrides: Any
) -> AsyncIterator[Stack]:
    """The server serving `engine` as FAKE_MODEL, with one bridge in front."""

    @contextlib.asynccontextmanager
    async def running(config: Config, source: ModelSource) -> AsyncIterator[FakeEngine]:
        yield engine

    monkeypatch.setattr(server_app, "resolve", lambda *_: ModelSource(FAKE_MODEL, data_dir, FAKE_MODEL))
    monkeypatch.setattr(server_app, "running_engine", running)
    config = make_config(data_dir, tool_call_parser="none", **overrides)
    async with grpc_server(config) as server, bridge_for(config, server.port) as bridge:
        yield Stack(server, bridge)


@contextlib.asynccontextmanager
async def bridge_for(config: Config, grpc_port: int) -> AsyncIterator[BridgeServer]:
    """Another bridge (a restart, or a second replica of the front door) in front of the same server."""
    bridge = BridgeServer(config, f"127.0.0.1:{grpc_port}")
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()
