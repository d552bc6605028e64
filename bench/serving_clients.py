"""The serving benchmark's clients: one stream of request i on each protocol, as its users ask for it.

Each returns (completion tokens, seconds until the first text arrived). Every request is prompt i
of bench.common.PROMPTS, greedy, EOS ignored, `tokens` new tokens; the token count is the one the
protocol reports (the final usage), except on the legacy WebSocket, whose text frames carry no
usage: with EOS ignored an answer is exactly `tokens` long, which the other legs' counts confirm.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from bench.common import PROMPTS, grpc_timed_stream, legacy_body

OneStream = Callable[[int], Awaitable[tuple[int, float]]]
EOS_FRAME = "<EOS>"


class FirstText:
    """Time to the first text of one stream."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds = 0.0

    def saw(self, text: str | None) -> None:
        if text and not self.seconds:
            self.seconds = time.perf_counter() - self.started


def openai_body(model: str, i: int, tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def nul_objects(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The legacy stream's JSON objects, each ended by one NUL byte."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        *objects, buffer = buffer.split(b"\0")
        for raw in objects:
            yield json.loads(raw)


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON of each `data:` event, up to `[DONE]` (OpenAI) or the end of the body (legacy SSE)."""
    async for line in response.content:
        if not line.startswith(b"data: "):
            continue
        if line.strip() == b"data: [DONE]":
            return
        yield json.loads(line[6:])


Reader = Callable[[aiohttp.ClientResponse], AsyncIterator[dict[str, Any]]]


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)  # the benchmark's concurrency, not aiohttp's default 100
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        yield session


def legacy_stream(session: aiohttp.ClientSession, url: str, tokens: int, sse: bool = False) -> OneStream:
    """The bridge's legacy `POST /` stream: NUL-delimited objects, or SSE events (`Accept: text/event-stream`);
    each object's `response` is the answer so far, the last one's usage counts the tokens."""
    headers = {"Accept": "text/event-stream"} if sse else {}
    reader: Reader = sse_events if sse else nul_objects

    async def one(i: int) -> tuple[int, float]:
        first, last = FirstText(), {}
        async with session.post(url, json=legacy_body(i, tokens), headers=headers) as response:
            response.raise_for_status()
            async for last in reader(response):
                first.saw(last.get("response"))
        return int(last.get("usage", {}).get("completion_tokens", 0)), first.seconds

    return one


def openai_stream(session: aiohttp.ClientSession, url: str, model: str, tokens: int) -> OneStream:
    """/v1/chat/completions with `stream` and `include_usage` (vLLM's server or our bridge)."""

    async def one(i: int) -> tuple[int, float]:
        first, completion = FirstText(), 0
        async with session.post(url, json=openai_body(model, i, tokens)) as response:
            response.raise_for_status()
            async for event in sse_events(response):
                choices = event.get("choices") or []
                if choices:
                    first.saw(choices[0].get("delta", {}).get("content"))
                if event.get("usage"):
                    completion = int(event["usage"]["completion_tokens"])
        return completion, first.seconds

    return one


def websocket_stream(session: aiohttp.ClientSession, url: str, tokens: int) -> OneStream:
    """The legacy WebSocket: one connection per stream, one request frame, text deltas until `<EOS>`."""

    async def one(i: int) -> tuple[int, float]:
        first = FirstText()
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps(legacy_body(i, tokens)))
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"the WebSocket answered {message.type.name}: {message.data!r}")
                if message.data == EOS_FRAME:
                    return tokens, first.seconds
                if message.data.startswith('{"error"'):
                    raise RuntimeError(f"the WebSocket answered an error: {message.data}")
                first.saw(message.data)
        raise RuntimeError("the WebSocket closed before <EOS>")

    return one


@contextlib.asynccontextmanager
async def grpc_streams(target: str, tokens: int) -> AsyncIterator[OneStream]:
    from chatllm.clients import AsyncChatClient

    async with AsyncChatClient(target) as client:
        yield lambda i: grpc_timed_stream(client, i, tokens)
