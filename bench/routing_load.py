"""The workloads of bench/routing.py, against any OpenAI-compatible front (our bridge, or SMG):

- `tenants`: 8 tenants, each a ~768-token document plus a short unique question, closed loop;
- `conversations`: 6 conversations x 6 turns, interleaved (turn 1 of each, then turn 2, ...);
- `unique`: prompts that share nothing (the negative control);
- `websocket_rounds`: legacy WebSocket conversations (the bridge keeps the history), for the
  --max-round-trim comparison.

Every request streams (`stream_options.include_usage`), so each gives its time to first token and
the final usage with `prompt_tokens_details.cached_tokens`."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MODEL = "SmolLM2-135M-Instruct"
OUTPUT_TOKENS = 16
SUBJECTS = ["rent", "repairs", "noise", "pets", "parking", "deposits", "guests", "rubbish", "heating", "keys"]


@dataclass
class Outcome:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft: float = 0.0
    seconds: float = 0.0
    error: str = ""


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        good = [o for o in self.outcomes if not o.error]
        prompt = sum(o.prompt_tokens for o in good)
        ttfts = sorted(o.ttft for o in good)
        return {
            "requests": len(self.outcomes),
            "errors": len(self.outcomes) - len(good),
            "hit_rate": round(sum(o.cached_tokens for o in good) / prompt, 4) if prompt else 0.0,
            "ttft_p50": round(_nearest_rank(ttfts, 50), 3),
            "ttft_p90": round(_nearest_rank(ttfts, 90), 3),
            "output_tok_s": round(sum(o.completion_tokens for o in good) / self.wall_seconds, 1)
            if self.wall_seconds
            else 0.0,
        }


def _nearest_rank(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def document(tenant: int) -> str:
    """About 768 tokens of a tenancy handbook, different for each tenant from its first words."""
    rng = random.Random(tenant)
    clauses = [
        f"Clause {i}: about {rng.choice(SUBJECTS)}, the tenant of flat {tenant}-{rng.randint(1, 99)} "
        f"must tell the warden within {rng.randint(2, 30)} days and keep a written note of it."
        for i in range(24)
    ]
    return f"Handbook of building {tenant}. " + " ".join(clauses)


async def ask(session: aiohttp.ClientSession, url: str, messages: list[dict[str, str]]) -> tuple[Outcome, str]:
    """One streamed chat completion: its outcome and its text."""
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": OUTPUT_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    outcome, text, started = Outcome(), [], time.perf_counter()
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as response:
            if response.status != 200:
                outcome.error = f"{response.status} {(await response.text())[:200]}"
                return outcome, ""
            async for line in response.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        outcome.ttft = outcome.ttft or time.perf_counter() - started
                        text.append(delta)
                usage = chunk.get("usage")
                if usage:
                    outcome.prompt_tokens = usage["prompt_tokens"]
                    outcome.completion_tokens = usage["completion_tokens"]
                    outcome.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome.error = repr(exc)
    outcome.seconds = time.perf_counter() - started
    return outcome, "".join(text)


async def closed_loop(url: str, prompts: list[list[dict[str, str]]], clients: int) -> Run:
    """`clients` workers take the next prompt as soon as their last one is answered."""
    run, queue = Run(), list(reversed(prompts))
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while queue:
                outcome, _ = await ask(session, url, queue.pop())
                run.outcomes.append(outcome)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        run.wall_seconds = time.perf_counter() - started
    return run


def tenant_prompts(tenants: int, requests: int, seed: int = 7) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    order = [rng.randrange(tenants) for _ in range(requests)]
    return [
        [
            {"role": "system", "content": document(t)},
            {"role": "user", "content": f"Question {n}: what does clause {rng.randrange(24)} say about {t}?"},
        ]
        for n, t in enumerate(order)
    ]


def unique_prompts(requests: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Request {n}. " + document(1000 + n)[:1200] + " Summarise it."}]
        for n in range(requests)
    ]


async def conversations(url: str, count: int, turns: int, seed: int = 11) -> Run:
    """Interleaved chats: turn t of every conversation (at once, in a shuffled order: conversations do not
    keep step, and a fixed order would let round robin send each one to the same replica every turn), then
    turn t + 1. Turn 1 is not counted."""
    chats = [[{"role": "system", "content": document(500 + c)[:1600]}] for c in range(count)]
    rng, run = random.Random(seed), Run()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        for turn in range(turns):
            rng.shuffle(chats)
            for chat in chats:
                chat.append({"role": "user", "content": f"Turn {turn + 1}: what should I do about {SUBJECTS[turn]}?"})
            replies = await asyncio.gather(*(ask(session, url, chat) for chat in chats))
            for chat, (outcome, text) in zip(chats, replies, strict=True):
                chat.append({"role": "assistant", "content": text})
                if turn > 0:
                    run.outcomes.append(outcome)
        run.wall_seconds = time.perf_counter() - started
    return run


def long_question(n: int) -> str:
    """About 80 tokens: a history round then fills a 128-token cache block or more with its answer."""
    subject = SUBJECTS[n % len(SUBJECTS)]
    return (
        f"Round {n + 1}. I live in flat {n}-{n * 7 % 97} and I have a question about {subject}: my neighbour says "
        f"the rules about {subject} changed last spring, the warden says they did not, and the letter I got in "
        f"March is unclear. What exactly does the handbook say about {subject}, and whom should I write to?"
    )


async def websocket_rounds(ws_url: str, count: int, rounds: int, salt: int) -> Run:
    """Legacy WebSocket conversations (the bridge keeps the history, cut by its --max-round-trim), one
    after another, each with a handbook as its system prompt; rounds 2.. are counted."""
    run = Run()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        for c in range(count):
            system = document(salt + c)[:1600]
            async with session.ws_connect(ws_url) as ws:
                for n in range(rounds):
                    frame = {"prompt": long_question(n), "system_prompt": system, "max_new_tokens": 48}
                    await ws.send_json({**frame, "temperature": 0, "stream_format": "events"})
                    outcome = await _websocket_answer(ws)
                    if n > 0:
                        run.outcomes.append(outcome)
        run.wall_seconds = time.perf_counter() - started
    return run


async def _websocket_answer(ws: aiohttp.ClientWebSocketResponse) -> Outcome:
    outcome, sent = Outcome(), time.perf_counter()
    while (message := await ws.receive_str()) != "<EOS>":
        event = json.loads(message)
        if "delta" in event:
            outcome.ttft = outcome.ttft or time.perf_counter() - sent
        if "final" in event:
            usage = event["final"]["usage"]
            outcome.prompt_tokens, outcome.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
            outcome.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        if "error" in event:
            outcome.error = str(event["error"])
    outcome.seconds = time.perf_counter() - sent
    return outcome
