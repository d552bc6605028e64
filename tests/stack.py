"""The whole stack in the test process: a real gRPC server and the real bridge in front of it, both
on port 0, talking gRPC over loopback (or, as in `chatllm serve`, calling Generate in process). The
server runs the real model, or (the fast tier) the scripted tests/fake_engine.py: then the stack starts
in milliseconds and needs no model at all."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatllm.bridge.runner import BridgeServer
from chatllm.clients import AsyncChatClient
from chatllm.kernel.config import Config
from chatllm.proto import pb
from chatllm.server.app import ChatLLMServer, EngineFactory
from chatllm.server.engines import Engine, running_engine
from tests.fake_engine import FAKE_MODEL
from tests.servers import ServerThread, grpc_server, make_config, wait_engine_idle


@dataclass
class Stack:
    server: ChatLLMServer
    bridge: BridgeServer

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.bridge.port}"

    async def server_info(self, token: str | None = None) -> pb.ServerInfo:
        async with AsyncChatClient(self.grpc_target, token=token) as client:
            return await client.server_info()

    async def wait_engine_idle(self, within: float, token: str | None = None) -> pb.ServerInfo:
        """Poll until the engine has no running or waiting request (or `within` seconds pass)."""
        async with AsyncChatClient(self.grpc_target, token=token) as client:
            return await wait_engine_idle(client, within)

    async def wait_engine_busy(self, within: float, token: str | None = None) -> pb.ServerInfo:
        deadline = time.monotonic() + within
        async with AsyncChatClient(self.grpc_target, token=token) as client:
            while True:
                info = await client.server_info()
                if info.active_requests + info.waiting_requests > 0 or time.monotonic() > deadline:
                    return info
                await asyncio.sleep(0.05)


def fake_config(data_dir: Path, **overrides: Any) -> Config:
    """make_config for a stack over the fake engine (served as FAKE_MODEL). Tool calling is off unless
    asked for: its parsers are vLLM's, and importing vLLM takes longer than the whole fast tier's stack."""
    return make_config(data_dir, **{"served_model_name": FAKE_MODEL, "tool_call_parser": "none", **overrides})


@contextlib.asynccontextmanager
async def serving_stack(
    config: Config, engine: Engine | EngineFactory = running_engine, in_process: bool = False
) -> AsyncIterator[Stack]:
    """`in_process`: the bridge calls Generate in the server's process, as `chatllm serve`'s does."""
    async with grpc_server(config, engine) as server:
        local = server.local_generate if in_process else None
        bridge = BridgeServer(config, f"127.0.0.1:{server.port}", local_generate=local)
        await bridge.start()
        try:
            yield Stack(server, bridge)
        finally:
            await bridge.stop()


class StackThread(ServerThread):
    """The whole stack (server + bridge, one event loop) in a background thread, for tests that
    use blocking clients (requests, websocket-client, schemathesis, hypothesis) from the test thread."""

    def __init__(self, config: Config, engine: Engine | EngineFactory = running_engine) -> None:
        super().__init__(config, engine)
        self.bridge_port = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.bridge_port}"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with serving_stack(self.config, self.engine) as stack:
                self.server, self.port, self.bridge_port = stack.server, stack.server.port, stack.bridge.port
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # surfaced to the test thread by start()
            self._error = exc
            self._ready.set()
