"""Speculative decoding on and off, through the real stack (`chatllm server` on vLLM, with its
knowledge base), on the workloads where it helps and where it must not hurt.

Each setting is a server: `off`, `ngram` (the `--speculative ngram` preset) or a JSON object given
to `--speculative-config`. All are up, each with a knowledge base holding tests/data/kb_en, but
only one runs at a time: the others are frozen (SIGSTOP, engine processes included), so they take
turns every minute or so and other work on the machine falls on all alike. Greedy, EOS honoured,
up to --tokens new tokens per answer.

- Agreement, once per server: the 50 prompts of bench/prompts.py with 4 in flight (the preset
  drafts in batches of up to 4) and the 26 questions of tests/data/kb_en/questions.jsonl one at a
  time, answered from the knowledge base; every answer is compared with the `off` server's.
- Speed, --rounds turns per server (the order reversing every round), each turn on the next slice
  of the prompts: `kb-1`, knowledge-base answers one at a time (answers that quote their retrieved
  context; --kb-per-turn questions); `chat-1`, free-form chat one at a time (--chat-per-turn
  prompts); `mixed-32`, 32 streams at once, half knowledge-base questions, half chat (the
  batch-size switch must keep a busy server as fast as without speculation). --kb-streams,
  --chat-streams and --mixed-streams choose other stream counts (N streams take N slices).

Reported: output tokens/s per workload (medians over the turns) and the ratio to `off`, paired
per round, and the identical answers.

    .venv/bin/python bench/speculative.py [--settings off ngram] [--rounds 4] [--name speculative]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, Served, kb_questions, knowledge_server, markdown_table, write_results
from bench.prompts import VARIED_PROMPTS


@dataclass(frozen=True)
class Request:
    prompt: str
    knowledge_base: bool


@dataclass
class Turn:
    setting: str
    round: int
    workload: str
    tokens_per_second: float
    load_average: float


def kb_requests() -> list[Request]:
    return [Request(question, True) for question, _ in kb_questions()]


def chat_requests() -> list[Request]:
    return [Request(p, False) for p in VARIED_PROMPTS]


def rotating_slice(items: list[Request], round_: int, size: int) -> list[Request]:
    """Round r's `size` items, continuing where round r-1 stopped (wrapping around)."""
    start = (round_ - 1) * size
    return [items[(start + i) % len(items)] for i in range(size)]


def turn_workloads(args: argparse.Namespace, round_: int) -> dict[str, tuple[list[Request], int]]:
    """name -> (requests, how many in flight); N streams take N times the one-stream slice."""
    chosen = {f"kb-{n}": (rotating_slice(kb_requests(), round_, args.kb_per_turn * n), n) for n in args.kb_streams}
    for n in args.chat_streams:
        chosen[f"chat-{n}"] = (rotating_slice(chat_requests(), round_, args.chat_per_turn * n), n)
    for n in args.mixed_streams:
        half = n // 2
        chosen[f"mixed-{n}"] = (
            rotating_slice(kb_requests(), round_, half) + rotating_slice(chat_requests(), round_, n - half),
            n,
        )
    return chosen


def setting_flags(setting: str) -> list[str]:
    if setting == "off":
        return []
    if setting.startswith("{"):
        return ["--speculative-config", setting]
    return ["--speculative", setting]


async def answer(client: Any, requests: list[Request], streams: int, tokens: int) -> tuple[float, list[str]]:
    """(output tokens/s, the answers in request order) with at most `streams` requests in flight."""
    gate = asyncio.Semaphore(streams)

    async def one(request: Request) -> Any:
        async with gate:
            kb = "default" if request.knowledge_base else None
            return await client.chat(request.prompt, max_new_tokens=tokens, temperature=0.0, knowledge_base=kb)

    started = time.perf_counter()
    replies = await asyncio.gather(*(one(r) for r in requests))
    return sum(r.usage.completion_tokens for r in replies) / (time.perf_counter() - started), [r.text for r in replies]


async def take_turn(setting: str, round_: int, client: Any, served: Served, args: argparse.Namespace) -> list[Turn]:
    served.resume()
    turns = []
    try:
        for name, (requests, streams) in turn_workloads(args, round_).items():
            speed, _ = await answer(client, requests, streams, args.tokens)
            turns.append(Turn(setting, round_, name, speed, os.getloadavg()[0]))
            print(f"  {setting} round {round_} {name}: {speed:.1f} tok/s (load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        served.pause()
    return turns


async def agreement_answers(client: Any, served: Served, tokens: int) -> list[str]:
    served.resume()
    try:
        _, chat = await answer(client, chat_requests(), 4, tokens)
        _, kb = await answer(client, kb_requests(), 1, tokens)
    finally:
        served.pause()
    return chat + kb


async def measure(args: argparse.Namespace, logs: Path) -> tuple[dict[str, list[str]], list[Turn]]:
    models = Path(args.data_dir) / "models"
    servers: dict[str, tuple[Any, Served]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for i, setting in enumerate(args.settings):
            flags = ["--backend", "vllm", *args.server_flags, *setting_flags(setting)]
            client, served = await stack.enter_async_context(knowledge_server(flags, models, logs / f"server-{i}.log"))
            await client.chat(VARIED_PROMPTS[0], max_new_tokens=8, temperature=0.0)  # warm-up
            served.pause()
            servers[setting] = client, served
        answers = {}
        if not args.skip_agreement:
            answers = {s: await agreement_answers(*servers[s], args.tokens) for s in args.settings}
        turns = []
        for round_ in range(1, args.rounds + 1):
            for setting in args.settings if round_ % 2 else args.settings[::-1]:
                turns += await take_turn(setting, round_, *servers[setting], args)
    return answers, turns


def speed_rows(turns: list[Turn], settings: list[str]) -> list[tuple[Any, ...]]:
    rows = []
    for workload in dict.fromkeys(t.workload for t in turns):
        speed = {(t.setting, t.round): t.tokens_per_second for t in turns if t.workload == workload}
        rounds = sorted({r for _, r in speed})
        medians = [statistics.median(speed[s, r] for r in rounds) for s in settings]
        paired = [statistics.median(speed[s, r] / speed["off", r] for r in rounds) for s in settings[1:]]
        rows.append((workload, *medians, *paired))
    return rows


def report(answers: dict[str, list[str]], turns: list[Turn], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    labels = [f"S{i}" for i in range(len(args.settings))]
    body = (
        f"`chatllm server` on vLLM ({shlex.join(args.server_flags) or 'default flags'}), knowledge base on; every "
        f"setting's server up, one running while the others are frozen; {args.rounds} turns each, the order "
        f"reversing every round. Greedy, EOS honoured, up to {args.tokens} new tokens per answer. Settings:\n\n"
        + "\n".join(f"- {label}: `{s}`" for label, s in zip(labels, args.settings, strict=True))
        + "\n\nOutput tokens/s (median over the turns) and the ratio to S0 (`off`; median of the per-round ratios):\n\n"
    )
    header = ("workload", *(f"{label} tok/s" for label in labels), *(f"{label} / S0" for label in labels[1:]))
    body += markdown_table(header, speed_rows(turns, args.settings))
    loads = [t.load_average for t in turns]
    body += f"\n\n1-minute load average after each workload: {min(loads):.1f} to {max(loads):.1f} (all in the JSON).\n"
    data = {"settings": args.settings, "tokens": args.tokens, "answers": answers, "turns": [t.__dict__ for t in turns]}
    if answers:
        body += agreement_report(answers, args.settings)
    return body, data


def agreement_report(answers: dict[str, list[str]], settings: list[str]) -> str:
    reference = answers["off"]
    n_chat = len(VARIED_PROMPTS)
    rows = [
        (
            f"`{s}`",
            f"{sum(a == b for a, b in zip(reference, answers[s], strict=True))}/{len(reference)}",
            f"{sum(a == b for a, b in zip(reference[:n_chat], answers[s][:n_chat], strict=True))}/{n_chat}",
        )
        for s in settings[1:]
    ]
    text = (
        f"\nAnswers identical to `off`'s: all {len(reference)} (the {n_chat} chat prompts with 4 in flight, the "
        f"{len(reference) - n_chat} knowledge-base questions one at a time), and the chat prompts alone:\n\n"
    )
    return text + markdown_table(("setting", "identical", "of the chat prompts"), rows) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["off", "ngram"], help="off, ngram or a JSON object")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--kb-streams", type=int, nargs="*", default=[1], help="kb-N workloads")
    parser.add_argument("--chat-streams", type=int, nargs="*", default=[1], help="chat-N workloads")
    parser.add_argument("--mixed-streams", type=int, nargs="*", default=[32], help="mixed-N workloads")
    parser.add_argument("--kb-per-turn", type=int, default=6, help="knowledge-base questions per kb-1 turn")
    parser.add_argument("--chat-per-turn", type=int, default=3, help="chat prompts per chat-1 turn")
    parser.add_argument("--skip-agreement", action="store_true", help="speed only (for tuning runs)")
    parser.add_argument("--server-flags", default="", help="more `chatllm server` flags for every leg, one string")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"), help="where the converted model is")
    parser.add_argument("--name", default="speculative", help="results file name")
    parser.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    args = parser.parse_args()
    args.server_flags = shlex.split(args.server_flags)
    if args.settings[0] != "off":
        parser.error("the first setting must be off (the reference)")
    with tempfile.TemporaryDirectory() as logs:
        answers, turns = await measure(args, Path(logs))
    body, data = report(answers, turns, args)
    if args.note:
        body += f"\nNote: {args.note}\n"
    path = write_results(args.name, "Speculative decoding on and off", body, data)
    print(body)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
