"""Bridge benchmark: the same streams sent (a) as gRPC straight to `chatllm server`, (b) as
the legacy NUL-delimited HTTP stream and (c) as the legacy WebSocket through a separate
`chatllm bridge` process in front of it, all in one run.

Workload per level: N concurrent streams (N = 1, 8, 32) of 64 new tokens, and (N = 1, 8) of
1024 new tokens (the legacy stream re-sends the whole answer with every message, so long answers
show what that costs), greedy, EOS ignored so every answer has the same length; with N below
--min-requests (8) each stream sends requests back to back until 8 were sent, so every level
has enough tokens for the CPU measurement. The three protocols take turns at each level, best of --repeats runs.
Reports output tokens/s, time to first token p50/p99 (client side: request sent -> first
text received) and the bridge process's CPU seconds per 1,000 tokens (user + system time
of its PID from /proc, read by psutil, around each run; for the gRPC leg the bridge is
idle, which shows the measurement's floor). A last leg reads one 1024-token NUL stream slowly
(20 ms per 4 KiB read) and counts the objects that arrive: fewer than tokens means the bridge
coalesced what piled up. The kernel's socket buffers come first (on Linux the send buffer grows
to net.ipv4.tcp_wmem's maximum, 4 MiB by default), so the bridge's writes only wait, and it only
coalesces, once a client has fallen megabytes behind.

    .venv/bin/python bench/bridge.py [--backend vllm|hf] [--concurrency 1 8 32] [--tokens 64]
        [--long-tokens 1024] [--long-concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    ChatllmSubprocess,
    grpc_timed_stream,
    legacy_body,
    markdown_table,
    percentile,
    write_results,
)

ENGINE_FLAGS = {
    "vllm": ["--backend", "vllm", "--precision", "fp32", "--kv-cache-space", "1", "--max-num-seqs", "256"],
    "hf": ["--backend", "hf"],
}
OneStream = Callable[[int], Awaitable[tuple[int, float]]]  # stream i -> (tokens, seconds to first text)
GRPC, NUL, WEBSOCKET = "gRPC direct", "NUL stream via bridge", "WebSocket via bridge"
SLOW_READ_PAUSE_S = 0.02


@dataclass
class Run:
    protocol: str
    answer_tokens: int
    concurrency: int
    seconds: float
    tokens: int
    ttfts: list[float]
    bridge_cpu_seconds: float
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def bridge_cpu_per_1k_tokens(self) -> float:
        return self.bridge_cpu_seconds / self.tokens * 1000 if self.tokens else 0.0


# ------------------------------------------------------------------ clients, one stream each
@contextlib.asynccontextmanager
async def grpc_streams(target: str, tokens: int) -> AsyncIterator[OneStream]:
    from chatllm.clients import AsyncChatClient

    async with AsyncChatClient(target) as client:
        yield lambda i: grpc_timed_stream(client, i, tokens)


@contextlib.asynccontextmanager
async def nul_streams(url: str, tokens: int) -> AsyncIterator[OneStream]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:

        async def one(i: int) -> tuple[int, float]:
            started, first, last = time.perf_counter(), 0.0, {}
            buffer = b""
            async with session.post(url, json=legacy_body(i, tokens)) as response:
                response.raise_for_status()
                async for chunk in response.content.iter_any():
                    *objects, buffer = (buffer + chunk).split(b"\0")
                    for raw in objects:
                        last = json.loads(raw)
                        if last.get("response") and not first:
                            first = time.perf_counter() - started
            return int(last["usage"]["completion_tokens"]), first

        yield one


@contextlib.asynccontextmanager
async def ws_streams(url: str, tokens: int) -> AsyncIterator[OneStream]:
    """WebSocket frames carry text only, so tokens come from the bridge's own counter (see measure())."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:

        async def one(i: int) -> tuple[int, float]:
            started, first = time.perf_counter(), 0.0
            async with session.ws_connect(url) as ws:
                await ws.send_str(json.dumps(legacy_body(i, tokens)))
                while (frame := await ws.receive_str()) != "<EOS>":
                    if frame.startswith('{"error"'):
                        raise RuntimeError(frame)
                    if not first:
                        first = time.perf_counter() - started
            return 0, first

        yield one


@dataclass
class SlowRead:
    tokens: int
    objects: int
    received_bytes: int
    seconds: float


async def slow_nul_read(url: str, tokens: int, pause: float) -> SlowRead:
    """One NUL stream read slowly (`pause` seconds between reads): how many objects and bytes arrive."""
    objects, received, buffer, last = 0, 0, b"", {}
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        async with session.post(url, json=legacy_body(0, tokens), read_bufsize=4096) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(4096):
                received += len(chunk)
                *complete, buffer = (buffer + chunk).split(b"\0")
                objects += len(complete)
                last = json.loads(complete[-1]) if complete else last
                await asyncio.sleep(pause)
    return SlowRead(int(last["usage"]["completion_tokens"]), objects, received, time.perf_counter() - started)


# ------------------------------------------------------------------ measurement
class Bridge:
    """The `chatllm bridge` process: its CPU time and its token counter."""

    def __init__(self, proc: ChatllmSubprocess, url: str) -> None:
        self.process = psutil.Process(proc.proc.pid)
        self.url = url

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    async def ws_tokens(self) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        async with aiohttp.ClientSession() as session, session.get(self.url + "/metrics") as response:
            text = await response.text()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "chatllm_bridge_generation_tokens_total" and s.labels.get("protocol") == "ws"
        )


async def measure(protocol: str, answer: int, n: int, per_stream: int, one: OneStream, bridge: Bridge) -> Run:
    """N concurrent streams, each sending `per_stream` requests back to back."""

    async def stream(i: int) -> list[tuple[int, float]]:
        return [await one(i + k * n) for k in range(per_stream)]

    ws_before = await bridge.ws_tokens() if protocol == WEBSOCKET else 0.0
    cpu_before = bridge.cpu_seconds()
    started = time.perf_counter()
    outcomes = [o for per in await asyncio.gather(*(stream(i) for i in range(n))) for o in per]
    seconds = time.perf_counter() - started
    cpu = bridge.cpu_seconds() - cpu_before
    tokens = sum(t for t, _ in outcomes)
    if protocol == WEBSOCKET:
        tokens = int(await bridge.ws_tokens() - ws_before)
    return Run(protocol, answer, n, seconds, tokens, [f for _, f in outcomes], cpu)


async def run_all(args: argparse.Namespace, grpc_target: str, bridge: Bridge) -> list[Run]:
    results = await run_levels(args, grpc_target, bridge, args.tokens, args.concurrency)
    return results + await run_levels(args, grpc_target, bridge, args.long_tokens, args.long_concurrency)


async def run_levels(
    args: argparse.Namespace, grpc_target: str, bridge: Bridge, answer: int, levels: list[int]
) -> list[Run]:
    http = bridge.url
    async with (
        grpc_streams(grpc_target, answer) as grpc_one,
        nul_streams(http + "/", answer) as nul_one,
        ws_streams(http.replace("http://", "ws://") + "/", answer) as ws_one,
    ):
        legs = {GRPC: grpc_one, NUL: nul_one, WEBSOCKET: ws_one}
        for one in legs.values():  # warm-up: first requests pay for lazy initialisation
            await one(0)
        results: list[Run] = []
        for n in levels:
            best: dict[str, Run] = {}
            per_stream = -(-args.min_requests // n)  # enough requests that CPU ticks (10 ms) resolve
            for _ in range(args.repeats):
                for protocol, one in legs.items():
                    run = await measure(protocol, answer, n, per_stream, one, bridge)
                    if protocol not in best or run.tokens_per_second > best[protocol].tokens_per_second:
                        best[protocol] = run
            for run in best.values():
                print(
                    f"  {answer:>4} tokens N={n:>2} {run.protocol:<22} {run.tokens_per_second:7.1f} tok/s  "
                    f"TTFT p50 {percentile(run.ttfts, 50):.3f}s  bridge CPU {run.bridge_cpu_per_1k_tokens:.3f}"
                    " s/1k tok",
                    flush=True,
                )
            results += best.values()
        return results


RESULT_COLUMNS = (
    "protocol",
    "answer tokens",
    "N",
    "tokens",
    "seconds",
    "tokens/s",
    "TTFT p50 s",
    "TTFT p99 s",
    "bridge CPU s / 1k tokens",
    "load avg",
)


def results_table(results: list[Run]) -> str:
    rows = [
        (
            r.protocol,
            r.answer_tokens,
            r.concurrency,
            r.tokens,
            r.seconds,
            r.tokens_per_second,
            percentile(r.ttfts, 50),
            percentile(r.ttfts, 99),
            r.bridge_cpu_per_1k_tokens,
            r.load_average,
        )
        for r in results
    ]
    return markdown_table(RESULT_COLUMNS, rows)


def comparison(results: list[Run]) -> str:
    """Bridge legs against gRPC direct at the same N, the bridge's busiest share of a core, a load caveat."""
    direct = {(r.answer_tokens, r.concurrency): r for r in results if r.protocol == GRPC}
    ratios = []
    for r in results:
        same = direct.get((r.answer_tokens, r.concurrency))
        if r.protocol != GRPC and same is not None and same.tokens_per_second:
            delta_ttft = percentile(r.ttfts, 50) - percentile(same.ttfts, 50)
            ratios.append(
                (r.protocol, r.answer_tokens, r.concurrency, r.tokens_per_second / same.tokens_per_second, delta_ttft)
            )
    text = "Through the bridge relative to gRPC direct at the same answer length and N:\n\n"
    text += markdown_table(("protocol", "answer tokens", "N", "x throughput", "TTFT p50 difference s"), ratios)
    busiest = max((r.bridge_cpu_seconds / r.seconds for r in results if r.protocol != GRPC and r.seconds), default=0)
    text += (
        f"\n\nThe bridge process used at most {busiest:.1%} of one core during a run (CPU seconds / wall seconds).\n"
    )
    load = max(r.load_average for r in results)
    if load > (os.cpu_count() or 1):
        text += (
            f"\nCaution: the 1-minute load average reached {load:.1f} on {os.cpu_count()} cores during this run "
            "(the benchmark's own engine, server, bridge and client, plus any other jobs on the machine), so "
            "small differences between rows are within noise; the CPU-per-token figures are per process and "
            "less affected.\n"
        )
    return text


def report(args: argparse.Namespace, results: list[Run]) -> tuple[str, dict[str, Any]]:
    body = (
        f"Workload: N concurrent streams x {args.tokens} new tokens (N = {args.concurrency}) and x {args.long_tokens} "
        f"(N = {args.long_concurrency}), greedy, EOS ignored; with N < "
        f"{args.min_requests} each stream sends requests back to back until {args.min_requests} were sent; best of "
        f"{args.repeats} runs per level, the three protocols taking turns. Engine: `--backend {args.backend}` "
        "(built-in SmolLM2-135M-Instruct, fp32, CPU). `chatllm server` and `chatllm bridge` run as separate "
        "processes on this machine, with the benchmark client as a third.\n\n"
    )
    body += results_table(results) + "\n\n" + comparison(results)
    runs = [
        r.__dict__ | {"tokens_per_second": r.tokens_per_second, "bridge_cpu_per_1k_tokens": r.bridge_cpu_per_1k_tokens}
        for r in results
    ]
    data = {"backend": args.backend, "tokens": args.tokens, "long_tokens": args.long_tokens, "repeats": args.repeats}
    return body, data | {"runs": runs}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(ENGINE_FLAGS), default="vllm")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--long-tokens", type=int, default=1024)
    parser.add_argument("--long-concurrency", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--min-requests", type=int, default=8, help="per level: streams send more than one if N is less"
    )
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        server = ChatllmSubprocess(
            [
                "server",
                *ENGINE_FLAGS[args.backend],
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                "0",
                "--metrics-port",
                "0",
                "--no-knowledge-base",
                "--data-dir",
                args.data_dir,
                "--max-concurrent",
                "64",
            ],
            Path(logs) / "server.log",
        )
        bridge_proc: ChatllmSubprocess | None = None
        try:
            grpc_port = server.wait_for(r"gRPC listening on [^:\s]+:(\d+)").group(1)
            grpc_target = f"127.0.0.1:{grpc_port}"
            server.wait_for(r"ready: ", timeout=600)
            bridge_proc = ChatllmSubprocess(
                ["bridge", "--upstream", grpc_target, "--host", "127.0.0.1", "--port", "0"], Path(logs) / "bridge.log"
            )
            http_port = bridge_proc.wait_for(r"HTTP listening on [^:\s]+:(\d+)").group(1)
            url = f"http://127.0.0.1:{http_port}"
            results = await run_all(args, grpc_target, Bridge(bridge_proc, url))
            slow = await slow_nul_read(url + "/", args.long_tokens, SLOW_READ_PAUSE_S)
        finally:
            if bridge_proc is not None:
                bridge_proc.stop()
            server.stop()
    body, data = report(args, results)
    body += (
        f"\nSlow reader ({SLOW_READ_PAUSE_S * 1000:.0f} ms between 4 KiB reads of one {slow.tokens}-token NUL stream): "
        f"{slow.objects} objects ({slow.objects / slow.tokens:.2f} per token), {slow.received_bytes / 1024:.0f} KiB in "
        f"{slow.seconds:.1f} s.\n"
    )
    data["slow_reader"] = slow.__dict__
    path = write_results(
        "bridge", "Bridge benchmark: gRPC direct vs NUL-stream HTTP and WebSocket via the bridge", body, data
    )
    print(body)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
