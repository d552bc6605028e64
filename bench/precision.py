"""fp32 against bf16 on this CPU, through the gRPC server, with the built-in model: the check
behind `--precision auto` choosing bf16 on CPUs that compute it natively (AVX512-BF16 or AMX).

Two servers, `chatllm server --precision fp32` and `--precision bf16`, each with a knowledge base
holding tests/data/kb_en. Only one runs at a time: the other is frozen (SIGSTOP, its engine
processes included), so they can take turns every few seconds and whatever else loads the machine
meanwhile falls on both alike. Per server:

- agreement: the 50 prompts of bench/prompts.py, greedy, up to --agreement-tokens new tokens each,
  all in flight at once, answered at the start and again at the end (the control: how far a
  server agrees with itself); the bf16 answers are compared with the fp32 ones;
- quality: the 26 labelled questions of tests/data/kb_en answered from the knowledge base, greedy:
  how much of the labelled passage each answer holds (a different answer need not be a worse one);
- throughput, --rounds turns (the order alternating): N concurrent streams (--concurrency) of
  --tokens new tokens, greedy, EOS ignored; tokens/s, and CPU time of the server and its engine
  processes per 1k tokens.

    .venv/bin/python bench/precision.py [--backend vllm] [--rounds 6] [--concurrency 1 32] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    Served,
    evidence_recall,
    grpc_timed_stream,
    kb_questions,
    knowledge_server,
    markdown_table,
    write_results,
)
from bench.prompts import VARIED_PROMPTS

PRECISIONS = ("fp32", "bf16")


@dataclass
class Answers:
    first: list[str]
    again: list[str]
    kb_recall: float  # mean share of the labelled passage's words in the knowledge-base answers


@dataclass
class Turn:
    precision: str
    round: int
    concurrency: int
    tokens_per_second: float
    cpu_ms_per_1k: float  # the server and its engine processes
    load_average: float  # 1-minute load average after the turn: how busy the machine was


async def greedy_answers(client: Any, tokens: int) -> list[str]:
    replies = await asyncio.gather(*(client.chat(p, max_new_tokens=tokens, temperature=0.0) for p in VARIED_PROMPTS))
    return [r.text for r in replies]


async def kb_recall(client: Any, tokens: int) -> float:
    questions = kb_questions()
    replies = await asyncio.gather(
        *(client.chat(q, max_new_tokens=tokens, temperature=0.0, knowledge_base="default") for q, _ in questions)
    )
    return statistics.mean(evidence_recall(r.text, e) for r, (_, e) in zip(replies, questions, strict=True))


async def take_turn(precision: str, round_: int, client: Any, served: Served, args: argparse.Namespace) -> list[Turn]:
    served.resume()
    turns = []
    try:
        for n in args.concurrency:
            started, cpu_before = time.perf_counter(), served.cpu_seconds()
            outcomes = await asyncio.gather(*(grpc_timed_stream(client, i, args.tokens) for i in range(n)))
            produced = sum(t for t, _ in outcomes)
            seconds, cpu = time.perf_counter() - started, served.cpu_seconds() - cpu_before
            turn = Turn(precision, round_, n, produced / seconds, 1e6 * cpu / produced, os.getloadavg()[0])
            turns.append(turn)
            print(f"  {precision} round {round_} N={n}: {turn.tokens_per_second:.1f} tok/s, "
                  f"{turn.cpu_ms_per_1k:.0f} CPU ms/1k (load {turn.load_average:.1f})", flush=True)  # fmt: skip
    finally:
        served.pause()
    return turns


async def measure(args: argparse.Namespace, logs: Path) -> tuple[dict[str, Answers], list[Turn]]:
    models = Path(args.data_dir) / "models"
    servers: dict[str, tuple[Any, Served]] = {}
    first: dict[str, list[str]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for precision in PRECISIONS:
            flags = ["--backend", args.backend, "--precision", precision]
            client, served = await stack.enter_async_context(knowledge_server(flags, models, logs / f"{precision}.log"))
            await client.chat(VARIED_PROMPTS[0], max_new_tokens=8, temperature=0.0)  # warm-up
            first[precision] = await greedy_answers(client, args.agreement_tokens)
            served.pause()
            servers[precision] = client, served
        turns = []
        for round_ in range(1, args.rounds + 1):
            for precision in PRECISIONS if round_ % 2 else PRECISIONS[::-1]:
                turns += await take_turn(precision, round_, *servers[precision], args)
        answers = {}
        for precision, (client, served) in servers.items():
            served.resume()
            again = await greedy_answers(client, args.agreement_tokens)
            answers[precision] = Answers(first[precision], again, await kb_recall(client, args.agreement_tokens))
            served.pause()
    return answers, turns


def common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def agreement(reference: list[str], other: list[str]) -> tuple[int, float]:
    """(identical answers, median share of the reference answer reproduced before the first difference)."""
    same = sum(a == b for a, b in zip(reference, other, strict=True))
    shares = [common_prefix(a, b) / max(1, len(a)) for a, b in zip(reference, other, strict=True)]
    return same, statistics.median(shares)


def throughput_rows(turns: list[Turn], levels: list[int]) -> list[tuple[Any, ...]]:
    rows = []
    for n in levels:
        at_n = [t for t in turns if t.concurrency == n]
        speed = {p: [t.tokens_per_second for t in at_n if t.precision == p] for p in PRECISIONS}
        cpu = {p: statistics.median(t.cpu_ms_per_1k for t in at_n if t.precision == p) for p in PRECISIONS}
        by_round = {(t.precision, t.round): t.tokens_per_second for t in at_n}
        paired = [by_round["bf16", r] / by_round["fp32", r] for p, r in by_round if p == "fp32"]
        fp32, bf16 = statistics.median(speed["fp32"]), statistics.median(speed["bf16"])
        rows.append(
            (n, fp32, bf16, bf16 / fp32, statistics.median(paired), cpu["fp32"], cpu["bf16"], cpu["fp32"] / cpu["bf16"])
        )
    return rows


def report(answers: dict[str, Answers], turns: list[Turn], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    body = (
        f"Backend {args.backend}, built-in model, through `chatllm server` (gRPC), knowledge base on. Both servers "
        f"up, one frozen while the other runs; {args.rounds} turns each, the order alternating.\n\n"
        f"Throughput: N streams x {args.tokens} new tokens, greedy, EOS ignored. Medians over the turns; "
        "`paired` is the median of each round's bf16/fp32 ratio (two turns seconds apart); CPU is the server's "
        "and its engine processes' CPU time per 1k tokens.\n\n"
    )
    header = (
        "N",
        "fp32 tok/s",
        "bf16 tok/s",
        "bf16/fp32",
        "paired",
        "fp32 CPU ms/1k",
        "bf16 CPU ms/1k",
        "fp32/bf16 CPU",
    )
    body += markdown_table(header, throughput_rows(turns, args.concurrency))
    pairs = {
        "bf16 vs fp32": (answers["fp32"].first, answers["bf16"].first),
        "fp32 vs itself (control)": (answers["fp32"].first, answers["fp32"].again),
        "bf16 vs itself (control)": (answers["bf16"].first, answers["bf16"].again),
    }
    rows = [(name, f"{agreement(a, b)[0]}/{len(a)}", agreement(a, b)[1]) for name, (a, b) in pairs.items()]
    body += (
        f"\n\nGreedy agreement on the {len(VARIED_PROMPTS)} prompts of bench/prompts.py, up to {args.agreement_tokens} "
        "new tokens, all in flight at once: identical answers, and the median share of the first answer reproduced "
        "before the first difference.\n\n"
    )
    body += markdown_table(("compared", "identical", "median prefix share"), rows)
    body += (
        "\n\nKnowledge-base answers (26 labelled questions on tests/data/kb_en, greedy): mean share of the labelled "
        "passage's words in the answer.\n\n"
    )
    body += markdown_table(("precision", "passage recall"), [(p, answers[p].kb_recall) for p in PRECISIONS])
    loads = [t.load_average for t in turns]
    body += (
        f"\n\n1-minute load average after each turn: {min(loads):.1f} to {max(loads):.1f} (every turn in the JSON).\n"
    )
    data = {"backend": args.backend, "tokens": args.tokens, "agreement_tokens": args.agreement_tokens}
    return body, data | {"answers": {p: a.__dict__ for p, a in answers.items()}, "turns": [t.__dict__ for t in turns]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="vllm", choices=("vllm", "hf"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--agreement-tokens", type=int, default=64)
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        answers, turns = await measure(args, Path(logs))
    body, data = report(answers, turns, args)
    if args.note:
        body += f"\nNote: {args.note}\n"
    path = write_results(f"precision-{args.backend}", f"fp32 vs bf16 ({args.backend})", body, data)
    print(body)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
