"""Soak test: faults, overload and hostile input against a real `chatllm serve`, one table.

Phases, in one run against the same stack (`chatllm serve` with the knowledge base):
1. N mid-stream disconnects (NUL stream, SSE, WebSocket close 1000, gRPC cancel, gRPC
   deadline), then the engine's running + waiting requests  -> leaked engine requests;
   then, one at a time, disconnects per protocol (HTTP JSON, NUL stream, SSE, OpenAI SSE,
   WebSocket, gRPC) and during a long prefill (bench/disconnect.py)  -> disconnect-to-abort
   latency p99, tokens decoded after the disconnect, engine failures;
2. 5x overload: the server filled to --max-concurrent + --max-queue with long streams, then
   4x that many more requests (HTTP and gRPC) in waves  -> refused count, refusal latency
   p99 (client side), hung requests, accepted ones all answered;
3. F fuzzed inputs (hostile JSON bodies, bytes, cut-short JSON over HTTP routes, WebSocket
   frames, random bytes as gRPC Generate requests)  -> 5xx count, hung, still answering;
4. kill -9 during an ingest, restart on the same database (K times)  -> partial documents;
5. SIGTERM under 32 streams (NUL, WebSocket, gRPC)  -> completed vs dropped, exit code.

Targets: 0 leaked, disconnect-to-abort p99 <= 100 ms with <= 2 tokens decoded after it and 0 engine
failures, 0 hung, refusal p99 < 50 ms, 0 5xx, 0 partial, 0 dropped, exit 0.
Exits 1 when one is missed. `--quick` is the short version the test suite runs.

    .venv/bin/python bench/soak.py [--backend vllm|hf] [--quick] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import disconnect
from bench import soak_load as load
from bench.common import REPO, ChatllmSubprocess, add_chatllm_module_argument, markdown_table, percentile, write_results
from chatllm.clients import AsyncChatClient

ENGINE_FLAGS = {
    "vllm": ["--backend", "vllm", "--precision", "fp32", "--kv-cache-space", "1"],
    "hf": ["--backend", "hf"],
}
REFUSAL_P99_TARGET_MS = 50.0
CALL_LIMIT_S = 240.0  # a client call still unanswered after this is hung


@dataclass(frozen=True)
class Plan:
    disconnects: int
    fuzzed: int
    kills: int
    long_tokens: int  # streams that hold the server full during the overload
    drain_tokens: int
    max_concurrent: int = 8
    max_queue: int = 24  # capacity 32: the SIGTERM phase's 32 streams are all admitted
    drain_streams: int = 32
    overload_factor: int = 5
    abort_rounds: int = 2  # disconnects per protocol, measured one at a time
    prefill_disconnects: int = 10

    @property
    def capacity(self) -> int:
        return self.max_concurrent + self.max_queue


QUICK = Plan(disconnects=10, fuzzed=60, kills=1, long_tokens=16, drain_tokens=12)
FULL = Plan(
    disconnects=100, fuzzed=600, kills=3, long_tokens=48, drain_tokens=64, abort_rounds=20, prefill_disconnects=200
)


@dataclass
class Report:
    rows: list[list[Any]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)

    def add(self, check: str, load_text: str, result: str, target: str, ok: bool) -> None:
        self.rows.append([check, load_text, result, target, "yes" if ok else "**no**"])
        if not ok:
            self.missed.append(check)


class Stack:
    """One `chatllm serve` process on a given knowledge-base database, with clients."""

    def __init__(self, backend: str, plan: Plan, data_dir: str, db: Path, log: Path, program: str) -> None:
        args = [
            "serve", *ENGINE_FLAGS[backend], "--host", "127.0.0.1", "--port", "0", "--grpc-host", "127.0.0.1",
            "--grpc-port", "0", "--data-dir", data_dir, "--knowledge-base", "--milvus-uri", str(db),
            "--chunk-size", "100", "--chunk-overlap", "10", "--max-model-len", "2048", "--temperature", "0",
            "--max-concurrent", str(plan.max_concurrent), "--max-queue", str(plan.max_queue),
            "--request-timeout", "180", "--shutdown-grace", "300",
        ]  # fmt: skip
        self.process = ChatllmSubprocess(args, log, program=program)
        self.url = ""
        self.client: AsyncChatClient | None = None

    async def start(self) -> Stack:
        grpc_port = (await asyncio.to_thread(self.process.wait_for, r"gRPC listening on [^:\s]+:(\d+)")).group(1)
        http = await asyncio.to_thread(self.process.wait_for, r"HTTP listening on [^:\s]+:(\d+)")
        await asyncio.to_thread(self.process.wait_for, r"ready: ", 600)
        self.url = f"http://127.0.0.1:{http.group(1)}"
        self.client = AsyncChatClient(f"127.0.0.1:{grpc_port}", timeout=120)
        return self

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        await asyncio.to_thread(self.process.stop)

    async def engine_load(self) -> int:
        assert self.client is not None
        info = await self.client.server_info()
        return info.active_requests + info.waiting_requests

    async def wait_load(self, condition: Callable[[int], bool], within: float) -> int:
        deadline = time.monotonic() + within
        while not condition(current := await self.engine_load()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling another process's state: there is no event to wait on
        return current

    async def answers(self, session: aiohttp.ClientSession) -> bool:
        outcome = await load.http_generate(session, self.url, 4, CALL_LIMIT_S)
        return outcome.status == 200 and outcome.completion_tokens == 4


# ------------------------------------------------------------------ phases
async def disconnects(stack: Stack, session: aiohttp.ClientSession, plan: Plan, report: Report) -> None:
    assert stack.client is not None
    client = stack.client
    kinds: dict[str, Callable[[], Awaitable[None]]] = {
        "NUL stream": lambda: load.disconnect_http(session, stack.url, 200, "*/*"),
        "SSE": lambda: load.disconnect_http(session, stack.url, 200, "text/event-stream"),
        "WebSocket": lambda: load.disconnect_websocket(session, stack.url, 200),
        "gRPC cancel": lambda: load.disconnect_grpc(client, 200, None),
        "gRPC deadline": lambda: load.disconnect_grpc(client, 200, 1.5),
    }
    names = list(kinds)
    for first in range(0, plan.disconnects, plan.max_concurrent):
        batch = range(first, min(first + plan.max_concurrent, plan.disconnects))
        await asyncio.gather(*(kinds[names[i % len(names)]]() for i in batch))
    leaked = await stack.wait_load(lambda n: n == 0, within=30)
    report.values["disconnects"] = {"count": plan.disconnects, "leaked": leaked}
    report.add(
        "mid-stream disconnects", f"{plan.disconnects} ({', '.join(names)})", f"{leaked} leaked engine requests",
        "0 leaked", leaked == 0,
    )  # fmt: skip


async def disconnect_to_abort(stack: Stack, session: aiohttp.ClientSession, plan: Plan, report: Report) -> None:
    """Per protocol: client gone -> engine request dropped, and the tokens decoded in between."""
    assert stack.client is not None
    phase = await disconnect.phase(
        session, stack.url, stack.client, stack.process.log_path, plan.abort_rounds, plan.prefill_disconnects
    )
    phase.still_answers = await stack.answers(session)
    report.values["disconnect_to_abort"] = phase.values()
    for row in phase.rows():
        report.add(*row)


async def overload(stack: Stack, session: aiohttp.ClientSession, plan: Plan, report: Report) -> None:
    assert stack.client is not None
    holders = [
        asyncio.create_task(
            load.grpc_stream(stack.client, plan.long_tokens, CALL_LIMIT_S)
            if i % 2
            else load.http_stream(session, stack.url, plan.long_tokens, CALL_LIMIT_S)
        )
        for i in range(plan.capacity)
    ]
    full = await stack.wait_load(lambda n: n >= plan.capacity, within=120)
    extra: list[asyncio.Task[load.Outcome]] = []
    for i in range((plan.overload_factor - 1) * plan.capacity):
        call = (
            load.grpc_stream(stack.client, 8, CALL_LIMIT_S)
            if i % 2
            else load.http_generate(session, stack.url, 8, CALL_LIMIT_S)
        )
        extra.append(asyncio.create_task(call))
        if i % 8 == 7:
            await asyncio.sleep(0.02)  # waves of 8
    outcomes = await asyncio.gather(*holders, *extra)
    refused = [o for o in outcomes if o.refused]
    hung = sum(o.hung for o in outcomes)
    unanswered = [o for o in outcomes if not o.refused and not (o.status == 200 and o.completion_tokens > 0)]
    p99_ms = percentile([o.seconds for o in refused], 99) * 1000
    report.values["overload"] = {
        "capacity": plan.capacity, "offered": len(outcomes), "load_when_full": full, "refused": len(refused),
        "refusal_p99_ms": p99_ms, "hung": hung, "accepted_unanswered": len(unanswered),
        "refused_statuses": sorted({o.status for o in refused}),
    }  # fmt: skip
    report.add(
        f"{plan.overload_factor}x overload",
        f"capacity {plan.capacity}, {len(outcomes)} requests (HTTP 503/429, gRPC RESOURCE_EXHAUSTED)",
        f"{len(refused)} refused, refusal p99 {p99_ms:.1f} ms, {hung} hung, {len(unanswered)} accepted but unanswered",
        f"0 hung, p99 < {REFUSAL_P99_TARGET_MS:.0f} ms",
        hung == 0 and not unanswered and bool(refused) and p99_ms < REFUSAL_P99_TARGET_MS,
    )


async def fuzz(stack: Stack, session: aiohttp.ClientSession, plan: Plan, report: Report) -> None:
    assert stack.client is not None
    rng = random.Random(20261125)
    channel = stack.client.channel
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> load.Outcome:
        async with gate:
            if i % 4 < 2:
                return await load.fuzz_http(session, stack.url, rng, CALL_LIMIT_S)
            if i % 4 == 2:
                return await load.fuzz_websocket(session, stack.url, rng, CALL_LIMIT_S)
            return await load.fuzz_grpc(channel, rng, CALL_LIMIT_S)

    outcomes = await asyncio.gather(*(one(i) for i in range(plan.fuzzed)))
    server_errors = [o for o in outcomes if o.status >= 500 or o.status == 0]
    hung = sum(o.hung for o in outcomes)
    still_answers = await stack.answers(session)
    report.values["fuzz"] = {
        "inputs": plan.fuzzed, "server_errors": len(server_errors), "hung": hung, "still_answers": still_answers,
        "examples": [f"{o.protocol}: {o.status} {o.detail}" for o in server_errors[:5]],
    }  # fmt: skip
    report.add(
        "fuzzed inputs", f"{plan.fuzzed} (HTTP bodies, WebSocket frames, gRPC bytes)",
        f"{len(server_errors)} 5xx/dropped, {hung} hung, answers afterwards: {'yes' if still_answers else 'no'}",
        "0 5xx, 0 hung", not server_errors and hung == 0 and still_answers,
    )  # fmt: skip


def pumps_document(round_: int) -> bytes:
    lines = [
        f"Pump {i} sits in hall {i % 7} and is serviced every {i % 9 + 2} weeks by crew {round_}." for i in range(700)
    ]
    return "\n".join(lines).encode()


async def kill_during_ingest(stack: Stack, round_: int, restart: Callable[[], Awaitable[Stack]]) -> tuple[Stack, bool]:
    """Start an ingest, kill -9 the server while it writes chunks, restart on the same database.
    Also says whether the kill interrupted the ingest (it may finish writing first)."""
    assert stack.client is not None
    filename = f"pumps-{round_}.txt"
    ingest = asyncio.create_task(
        stack.client.ingest(data=pumps_document(round_), filename=filename, knowledge_base="soak")
    )
    await asyncio.to_thread(stack.process.wait_for, rf"writing \d+ chunks of {filename}", 600)
    await asyncio.sleep(random.Random(round_).uniform(0.0, 0.3))
    os.kill(stack.process.proc.pid, signal.SIGKILL)
    try:
        await ingest
        interrupted = False
    except grpc.aio.AioRpcError:
        interrupted = True
    await stack.close()
    return await restart(), interrupted


async def kills(stack: Stack, plan: Plan, report: Report, start: Callable[[], Awaitable[Stack]]) -> Stack:
    partial = orphans = interrupted = 0
    for round_ in range(plan.kills):
        stack, cut = await kill_during_ingest(stack, round_, start)
        found = await partial_documents(stack)
        partial, orphans, interrupted = partial + found[0], orphans + found[1], interrupted + cut
    report.values["kill_during_ingest"] = {
        "kills": plan.kills, "interrupted": interrupted, "partial": partial, "orphan_chunks": orphans,
    }  # fmt: skip
    report.add(
        "kill -9 during ingest",
        f"{plan.kills} kill(s) while chunks are written ({interrupted} cut an ingest short), restart",
        f"{partial} partial documents, {orphans} orphaned chunks", "0 partial", partial == 0 and orphans == 0,
    )  # fmt: skip
    return stack


async def partial_documents(stack: Stack) -> tuple[int, int]:
    """(documents whose chunk count is not the whole file's, chunks belonging to no document)."""
    assert stack.client is not None
    bases = {kb.name: kb for kb in await stack.client.list_knowledge_bases()}
    if "soak" not in bases:
        return 0, 0
    documents = await stack.client.list_documents("soak")
    partial = 0
    for document in documents:  # a stored document must be the whole file: re-ingesting it is a no-op
        round_ = int(re.fullmatch(r"pumps-(\d+)\.txt", document.filename).group(1))  # type: ignore[union-attr]
        again = pumps_document(round_)
        fresh = await stack.client.ingest(data=again, filename=document.filename, knowledge_base="soak")
        partial += int(not fresh.unchanged or fresh.chunks != document.chunks)
    orphans = bases["soak"].chunks - sum(d.chunks for d in documents)
    return partial, orphans


async def drain(stack: Stack, session: aiohttp.ClientSession, plan: Plan, report: Report) -> None:
    assert stack.client is not None
    tokens = plan.drain_tokens
    streams = []
    for i in range(plan.drain_streams):
        if i % 4 < 2:
            call = load.http_stream(session, stack.url, tokens, CALL_LIMIT_S)
        elif i % 4 == 2:
            call = load.websocket_stream(session, stack.url, tokens, CALL_LIMIT_S)
        else:
            call = load.grpc_stream(stack.client, tokens, CALL_LIMIT_S)
        streams.append(asyncio.create_task(call))
    admitted = await stack.wait_load(lambda n: n >= plan.drain_streams, within=120)
    stack.process.proc.send_signal(signal.SIGTERM)
    outcomes = await asyncio.gather(*streams)
    exit_code = await asyncio.to_thread(stack.process.proc.wait, 120)
    completed = sum(1 for o in outcomes if o.status == 200 and o.completion_tokens == tokens)
    dropped = len(outcomes) - completed
    failures = [f"{o.protocol}: {o.status} {o.detail}" for o in outcomes if o.status != 200]
    report.values["drain"] = {
        "streams": len(outcomes), "admitted_at_sigterm": admitted, "completed": completed, "dropped": dropped,
        "exit_code": exit_code, "failures": failures[:5],
    }  # fmt: skip
    report.add(
        f"SIGTERM under {plan.drain_streams} streams",
        f"{admitted} admitted, {tokens} tokens each (NUL, WebSocket, gRPC)",
        f"{completed} completed, {dropped} dropped, exit code {exit_code}", "0 dropped, exit 0",
        dropped == 0 and exit_code == 0,
    )  # fmt: skip


PHASES = ("disconnects", "overload", "fuzz", "kill", "drain")


async def soak(
    backend: str, plan: Plan, data_dir: str, workdir: Path, program: str, phases: tuple[str, ...] = PHASES
) -> Report:
    report = Report()
    db = workdir / "kb.db"
    starts = 0

    async def start() -> Stack:
        nonlocal starts
        starts += 1
        return await Stack(backend, plan, data_dir, db, workdir / f"serve-{starts}.log", program).start()

    stack = await start()
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
            if "disconnects" in phases:
                await disconnects(stack, session, plan, report)
                await disconnect_to_abort(stack, session, plan, report)
            if "overload" in phases:
                await overload(stack, session, plan, report)
            if "fuzz" in phases:
                await fuzz(stack, session, plan, report)
            if "kill" in phases:
                stack = await kills(stack, plan, report, start)
            if "drain" in phases:
                await drain(stack, session, plan, report)
    finally:
        await stack.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(ENGINE_FLAGS), default="vllm")
    parser.add_argument("--quick", action="store_true", help="the short version (the test suite runs it)")
    parser.add_argument("--no-record", action="store_true", help="print the table, write no result files")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument("--workdir", help="folder for logs and the knowledge-base database (default: a temp dir)")
    parser.add_argument("--report", help="also write the plan, rows and values as JSON here (the test suite reads it)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="run only these phases")
    add_chatllm_module_argument(parser)
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        phases = tuple(args.phases)
        report = asyncio.run(soak(args.backend, plan, args.data_dir, workdir, args.chatllm_module, phases))
    body = markdown_table(["check", "load", "result", "target", "met"], report.rows)
    print(body)
    if args.report:
        document = {"plan": dataclasses.asdict(plan), "rows": report.rows, "values": report.values}
        Path(args.report).write_text(json.dumps(document, indent=2, default=str))
    if not args.no_record:
        kind = "quick" if args.quick else "full"
        header = f"Backend `{args.backend}`, {kind} plan: {plan}; phases: {', '.join(phases)}.\n\n"
        path = write_results(
            "soak", "Soak: disconnects, overload, fuzz, kill -9, SIGTERM", header + body, report.values
        )
        print(f"\nwritten: {path}")
    if report.missed:
        print(f"\nmissed: {', '.join(report.missed)}")
    return 1 if report.missed else 0


if __name__ == "__main__":
    sys.exit(main())
