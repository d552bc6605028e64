"""Helpers to run real servers in the test process (port 0, cleaned up on exit)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from chatllm.clients import AsyncChatClient
from chatllm.kernel.config import Config
from chatllm.proto import pb
from chatllm.server.app import ChatLLMServer, EngineFactory
from chatllm.server.engines import Engine, running_engine
from tests.startups import ENV as STARTUP_LOG_ENV


async def long_story_under_way(client: AsyncChatClient) -> Any:
    """The call of a long answer (2000 tokens, EOS ignored), once two pieces of its text have arrived."""
    call = client.stream("Write a very long story about a dragon.", max_new_tokens=2000, ignore_eos=True)
    got = 0
    async for r in call:
        got += bool(r.text)
        if got >= 2:
            break
    return call


async def wait_engine_idle(client: AsyncChatClient, within: float) -> pb.ServerInfo:
    """Poll until the engine has no running or waiting request (or `within` seconds pass)."""
    deadline = time.monotonic() + within
    while True:
        info = await client.server_info()
        if (info.active_requests == 0 and info.waiting_requests == 0) or time.monotonic() > deadline:
            return info
        await asyncio.sleep(0.05)


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
        "engine_start_log": os.environ.get(STARTUP_LOG_ENV),  # counted at the end of the run
    }
    values.update(overrides)
    return Config.build(**values)


@contextlib.asynccontextmanager
async def grpc_server(config: Config, engine: Engine | EngineFactory = running_engine) -> AsyncIterator[ChatLLMServer]:
    """A real server: on the config's model and backend, or on `engine` (a FakeEngine: no model)."""
    async with ChatLLMServer.running(config, engine) as server:
        yield server


class ServerThread:
    """A real ChatLLMServer on its own event loop in a background thread, for tests that
    use blocking clients (requests, websocket-client, hypothesis) from the test thread."""

    def __init__(self, config: Config, engine: Engine | EngineFactory = running_engine) -> None:
        self.config = config
        self.engine = engine
        self.port = 0
        self.server: ChatLLMServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chatllm-test-server", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with ChatLLMServer.running(self.config, self.engine) as server:
                self.server, self.port = server, server.port
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # surfaced to the test thread by start()
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 300) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def transformers_greedy(model_dir: Path, question: str, max_new_tokens: int) -> tuple[str, int]:
    """What plain `model.generate` answers greedily to `question` in the model's own chat template, and the
    prompt's token count: the reference an engine's greedy answer must equal (blocking: call in a thread)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    messages = [{"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_tokens = ids["input_ids"].shape[1]
    return tokenizer.decode(out[0][prompt_tokens:], skip_special_tokens=True), prompt_tokens
