"""The traffic of bench/fleet.py: one streamed OpenAI chat call through a bridge, timed and counted, and
the arithmetic the fleet's targets are stated in (sliding 60 s windows, overlap, Jain's index)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.common import PROMPTS

CALL_LIMIT_S = 180.0


@dataclass
class Call:
    """One request: who sent it, when (wall clock), what came back, and when its tokens arrived."""

    token: str
    sent: float
    status: int = 0  # HTTP status; 0: the connection failed
    code: str = ""  # the error object's code when refused or failed
    first: float | None = None  # wall clock of the first content
    ended: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def limited(self) -> bool:
        """Refused by one of its token's limits (not by a full server, not a failure)."""
        return self.status == 429 and self.code in (
            "rate_limit_exceeded",
            "tokens_per_minute_exceeded",
            "too_many_streams",
        )

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


async def chat(
    session: aiohttp.ClientSession, url: str, token: str, secret: str, tokens: int, index: int, priority: str | None
) -> Call:
    """A streamed /v1/chat/completions with usage; never raises (a failure is in the Call)."""
    body: dict[str, object] = {
        "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if priority is not None:
        body["priority"] = priority
    call = Call(token, time.time())
    try:
        async with asyncio.timeout(CALL_LIMIT_S):
            async with session.post(url + "/v1/chat/completions", json=body, headers={"Authorization": secret}) as r:
                call.status = r.status
                if r.status != 200:
                    call.code = (await r.json(content_type=None)).get("error", {}).get("code", "")
                else:
                    await _read_events(r, call)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        call.status, call.code = 0, type(exc).__name__
    call.ended = time.time()
    return call


async def _read_events(response: aiohttp.ClientResponse, call: Call) -> None:
    buffer = b""
    async for block in response.content.iter_any():
        buffer += block
        *events, buffer = buffer.split(b"\n\n")
        for raw in events:
            text = raw.decode().removeprefix("data: ").strip()
            if not text or text == "[DONE]":
                continue
            event = json.loads(text)
            if "error" in event:
                call.status, call.code = int(event["error"].get("status", 500)), event["error"].get("code", "")
                return
            choices = event.get("choices") or []
            if call.first is None and choices and choices[0].get("delta", {}).get("content"):
                call.first = time.time()
            usage = event.get("usage")
            if usage:
                call.prompt_tokens, call.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]


async def closed_loop(
    send: Callable[[int], object], clients: int, until: float, calls: list[Call], pause_after_refusal: float = 0.25
) -> None:
    """`clients` loops, each sending its next request as soon as the last one ended, until `until`."""

    async def loop(client: int) -> None:
        index = client
        while time.time() < until:
            call = await send(index)  # type: ignore[misc]
            calls.append(call)
            index += clients
            if call.status != 200:
                await asyncio.sleep(pause_after_refusal)

    await asyncio.gather(*(loop(c) for c in range(clients)))


async def open_loop(send: Callable[[int], object], per_second: float, until: float, calls: list[Call]) -> None:
    """Requests at a fixed rate whatever happens to them (the offered load), until `until`."""
    tasks: list[asyncio.Task[Any]] = []
    index = 0
    next_at = time.time()
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.time()))
        tasks.append(asyncio.create_task(send(index)))  # type: ignore[arg-type]
        index += 1
        next_at += 1 / per_second
    calls.extend(await asyncio.gather(*tasks))


def most_in_window(points: Sequence[tuple[float, float]], window: float = 60.0) -> float:
    """The largest sum of weights of points (time, weight) inside any `window`-second span."""
    ordered = sorted(points)
    best, total, start = 0.0, 0.0, 0
    for time_, weight in ordered:
        total += weight
        while ordered[start][0] <= time_ - window:
            total -= ordered[start][1]
            start += 1
        best = max(best, total)
    return best


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one moment."""
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1])
    )
    open_now = best = 0
    for _, change in edges:
        open_now += change
        best = max(best, open_now)
    return best


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything."""
    if not values or not any(values):
        return 0.0
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))
