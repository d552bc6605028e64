"""Client gone, slot freed: for each protocol, the time from a client's disconnect to the server dropping
its engine request, and the tokens the engine decoded after the disconnect (a phase of bench/soak.py).

The client notes the wall-clock time it leaves and how many tokens it had (each legacy stream object
and OpenAI chunk carries the usage so far; a gRPC message its token count; WebSocket text frames are
counted, one token each when the reader keeps up, so that count can only undercount and the tokens
after are an upper bound). The server logs every request it ends with `finish=abort` once the
engine's stream is closed (for vLLM: the abort sent to the engine core, which drops the request at its
next step), with the tokens the engine produced. Bench and server share the machine's clock; the log
has millisecond stamps. HTTP JSON sends nothing before the end, so a gRPC twin sent at the same
moment (same prompt and length: the batch decodes both in step) says how many tokens it had.

A disconnect during prefill sends a prompt that takes the engine hundreds of milliseconds to read and
leaves before the first token: it must never fail the engine (`finish=error`, readiness lost).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import percentile
from chatllm.clients import AsyncChatClient

PROMPT = "Count slowly from one to one hundred, one number per line."
TOKENS = 400  # far more than a disconnect lets through
LEAVE_AFTER = 4  # tokens received before the client leaves
LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO chatllm\.server\.generation: generate request_id='([^']*)' "
    r"token=\S+ channel=(\S+) finish=(\S+) prompt_tokens=(\d+) completion_tokens=(\d+)",
    re.MULTILINE,
)
LATENCY_TARGET_S = 0.100
TOKENS_AFTER_TARGET = 2


@dataclass
class Left:
    """A client that disconnected: when, with how many tokens, and which request (None: WebSocket)."""

    protocol: str
    at: float
    received: int
    request_id: str | None
    channel: str


@dataclass
class Dropped:
    protocol: str
    latency: float  # seconds from the disconnect to the engine stream closed (abort sent)
    after: int  # tokens decoded after the disconnect
    finish: str


def legacy_body(tokens: int, stream: bool, prompt: str = PROMPT) -> dict[str, object]:
    return {"prompt": prompt, "use_stream_chat": stream, "max_new_tokens": tokens, "ignore_eos": True}


async def _read_objects(response: aiohttp.ClientResponse, separator: bytes, want: int) -> int:
    """Read stream objects until one reports `want` tokens; the tokens the last one reported."""
    buffer, tokens = b"", 0
    async for block in response.content.iter_any():
        buffer += block
        *objects, buffer = buffer.split(separator)
        for raw in objects:
            text = raw.decode().removeprefix("data: ").strip()
            if not text or text == "[DONE]":
                continue
            usage = json.loads(text).get("usage") or {}
            tokens = max(tokens, usage.get("completion_tokens", 0))
        if tokens >= want:
            return tokens
    return tokens


async def legacy_stream(session: aiohttp.ClientSession, url: str, accept: str) -> Left:
    """NUL stream (Accept */*) or legacy SSE (Accept text/event-stream): leave after a few tokens."""
    rid = uuid.uuid4().hex
    headers = {"Accept": accept, "X-Request-Id": rid}
    async with session.post(url + "/", json=legacy_body(TOKENS, True), headers=headers) as response:
        separator = b"\n\n" if accept == "text/event-stream" else b"\0"
        received = await _read_objects(response, separator, LEAVE_AFTER)
        at = time.time()
        response.close()  # the socket, not just the body: the bridge sees the client go
    return Left("SSE" if accept == "text/event-stream" else "NUL stream", at, received, rid, "http")


async def openai_stream(session: aiohttp.ClientSession, url: str) -> Left:
    rid = uuid.uuid4().hex
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": TOKENS,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    async with session.post(url + "/v1/chat/completions", json=body, headers={"X-Request-Id": rid}) as response:
        received = await _read_objects(response, b"\n\n", LEAVE_AFTER)
        at = time.time()
        response.close()
    return Left("OpenAI SSE", at, received, rid, "openai")


async def websocket(session: aiohttp.ClientSession, url: str) -> Left:
    async with session.ws_connect(url.replace("http", "ws", 1) + "/") as ws:
        await ws.send_str(json.dumps(legacy_body(TOKENS, True)))
        frames = 0
        while frames < LEAVE_AFTER:
            await ws.receive_str()
            frames += 1
        at = time.time()
        await ws.close(code=1000)
    return Left("WebSocket", at, frames, None, "ws")


async def grpc(client: AsyncChatClient, prompt: str = PROMPT, leave_after: int = LEAVE_AFTER) -> Left:
    rid = uuid.uuid4().hex
    call = client.stream(prompt, max_new_tokens=TOKENS, ignore_eos=True, request_id=rid)
    received = 0
    async for response in call:
        received = response.completion_tokens
        if received >= leave_after:
            break
    at = time.time()
    call.cancel()
    return Left("gRPC", at, received, rid, "grpc")


async def http_json(session: aiohttp.ClientSession, url: str, client: AsyncChatClient) -> Left:
    """A non-streaming POST left while its gRPC twin (sent with it) shows it is decoding."""
    rid = uuid.uuid4().hex

    async def send() -> None:
        body, headers = legacy_body(TOKENS, False), {"X-Request-Id": rid}
        async with session.post(url + "/", json=body, headers=headers) as response:
            await response.read()

    twin = client.stream(PROMPT, max_new_tokens=TOKENS, ignore_eos=True)
    post = asyncio.create_task(send())
    received = 0
    async for response in twin:
        received = response.completion_tokens
        if received >= LEAVE_AFTER:
            break
    at = time.time()
    post.cancel()  # the request is in flight: cancelling it closes its connection
    twin.cancel()
    await asyncio.gather(post, return_exceptions=True)
    return Left("HTTP JSON", at, received, rid, "http")


async def during_prefill(client: AsyncChatClient, long_prompt: str, wait: float) -> Left:
    """Send a prompt that takes the engine a while to read; leave `wait` seconds later, before any token."""
    rid = uuid.uuid4().hex
    call = client.stream(long_prompt, max_new_tokens=16, request_id=rid, raw_prompt=True)
    received = 0

    async def read() -> None:
        nonlocal received
        async for response in call:
            received = response.completion_tokens

    reader = asyncio.create_task(read())
    await asyncio.sleep(wait)
    at = time.time()
    call.cancel()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    return Left("during prefill", at, received, rid, "grpc")


def abort_lines(log_text: str) -> list[tuple[float, str, str, str, int]]:
    """(wall time, request id, channel, finish, completion tokens) of every logged request."""
    found = []
    for stamp, rid, channel, finish, _, completion in LOG_LINE.findall(log_text):
        when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        found.append((when, rid, channel, finish, int(completion)))
    return found


async def dropped(log: Path, left: Left, seen: set[str], within: float = 10.0) -> Dropped | None:
    """The server's record of the request `left` belongs to (None when none came within `within` s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        for when, rid, channel, finish, completion in abort_lines(text):
            if left.request_id is not None:
                ours = rid == left.request_id
            else:  # the WebSocket's: the first of its channel logged after the client left
                ours = channel == left.channel and when >= left.at - 0.002
            if ours and rid not in seen:
                seen.add(rid)
                return Dropped(left.protocol, max(0.0, when - left.at), max(0, completion - left.received), finish)
        await asyncio.sleep(0.05)
    return None


Measure = Callable[[], Awaitable[Left]]


async def measure_all(kinds: dict[str, Measure], rounds: int, log: Path) -> tuple[list[Dropped], int]:
    """Each kind `rounds` times, one disconnect at a time; (what the server logged, disconnects it never logged)."""
    results, missing, seen = [], 0, set[str]()
    for _ in range(rounds):
        for measure in kinds.values():
            left = await measure()
            found = await dropped(log, left, seen)
            if found is None:
                missing += 1
            else:
                results.append(found)
    return results, missing


def summary(results: list[Dropped]) -> dict[str, dict[str, float]]:
    by_protocol: dict[str, list[Dropped]] = {}
    for result in results:
        by_protocol.setdefault(result.protocol, []).append(result)
    return {
        protocol: {
            "count": len(items),
            "latency_p50_ms": percentile([d.latency for d in items], 50) * 1000,
            "latency_p99_ms": percentile([d.latency for d in items], 99) * 1000,
            "tokens_after_max": max(d.after for d in items),
            "tokens_after_mean": sum(d.after for d in items) / len(items),
            "engine_failures": sum(d.finish == "error" for d in items),
        }
        for protocol, items in by_protocol.items()
    }


LONG_PROMPT = " ".join(f"line {n}: the pump in hall {n % 7} is serviced every {n % 9 + 2} weeks." for n in range(110))


@dataclass
class Phase:
    """What the soak's disconnect-to-abort phase found."""

    results: list[Dropped]
    unlogged: int
    prefill_seconds: float
    still_answers: bool = False

    def values(self) -> dict[str, object]:
        return {
            "prefill_seconds": self.prefill_seconds,
            "unlogged": self.unlogged,
            "by_protocol": summary(self.results),
        }

    def rows(self) -> list[tuple[str, str, str, str, bool]]:
        """(check, load, result, target, met) per protocol, and one for the disconnects never logged."""
        rows = []
        for protocol, row in summary(self.results).items():
            failures = int(row["engine_failures"])
            ok = (
                row["latency_p99_ms"] <= LATENCY_TARGET_S * 1000
                and row["tokens_after_max"] <= TOKENS_AFTER_TARGET
                and failures == 0
            )
            load = f"{int(row['count'])} disconnects"
            if protocol == "during prefill":
                load += f" ({self.prefill_seconds:.2f} s prefill)"
            result = (
                f"p50 {row['latency_p50_ms']:.1f} ms, p99 {row['latency_p99_ms']:.1f} ms; tokens after: max "
                f"{row['tokens_after_max']:.0f}, mean {row['tokens_after_mean']:.2f}; {failures} engine failures"
            )
            rows.append(
                (f"disconnect -> abort: {protocol}", load, result, "p99 <= 100 ms, <= 2 tokens, 0 failures", ok)
            )
        answers = "yes" if self.still_answers else "no"
        rows.append(
            (
                "disconnects the server logged",
                f"{len(self.results) + self.unlogged} disconnects",
                f"{self.unlogged} not logged as aborted; answers afterwards: {answers}",
                "0 unlogged, still answers",
                self.unlogged == 0 and self.still_answers,
            )
        )
        return rows


async def phase(
    session: aiohttp.ClientSession, url: str, client: AsyncChatClient, log: Path, rounds: int, prefill_disconnects: int
) -> Phase:
    """Every protocol `rounds` times, then `prefill_disconnects` disconnects during a long prefill."""
    kinds: dict[str, Measure] = {
        "HTTP JSON": lambda: http_json(session, url, client),
        "NUL stream": lambda: legacy_stream(session, url, "*/*"),
        "SSE": lambda: legacy_stream(session, url, "text/event-stream"),
        "OpenAI SSE": lambda: openai_stream(session, url),
        "WebSocket": lambda: websocket(session, url),
        "gRPC": lambda: grpc(client),
    }
    results, unlogged = await measure_all(kinds, rounds, log)
    started = time.monotonic()
    await client.chat(LONG_PROMPT, max_new_tokens=1, raw_prompt=True)
    prefill = time.monotonic() - started
    rng = random.Random(20261207)
    prefill_kind: dict[str, Measure] = {
        "during prefill": lambda: during_prefill(client, LONG_PROMPT, rng.uniform(0.1, 0.8) * prefill)
    }
    during, unlogged_prefill = await measure_all(prefill_kind, prefill_disconnects, log)
    return Phase(results + during, unlogged + unlogged_prefill, prefill)
