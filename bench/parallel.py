"""vLLM parallelism through `chatllm server`, one configuration at a time: one engine
process (the default), tensor parallel over 3 ranks, 2 pipeline stages.

For each: seconds from start to SERVING, the worker processes, then N concurrent gRPC
streams of T new tokens (greedy, EOS ignored), best and median tokens/s of several runs
and the time to first token. The model is the built-in SmolLM2-135M (9 heads, 3 KV
heads, 30 layers). On a machine with fewer cores than ranks this measures what the
parallel paths cost, not what they gain: they exist to fit a model that one device
cannot hold.

    flock /tmp/chatllm-engine.lock .venv/bin/python bench/parallel.py [--concurrency 8] [--tokens 64] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ChatllmSubprocess, grpc_timed_stream, markdown_table, percentile, write_results
from chatllm.clients import AsyncChatClient

CONFIGS = {
    "1 engine process": [],
    "tensor parallel 3": ["--tensor-parallel-size", "3"],
    "pipeline parallel 2": ["--pipeline-parallel-size", "2"],
}
SERVER = ["server", "--backend", "vllm", "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0"]
SERVER += ["--no-knowledge-base", "--kv-cache-space", "0.5", "--max-model-len", "2048"]


async def streams(port: int, n: int, tokens: int) -> tuple[float, list[float]]:
    """(tokens/s, times to first token) of n concurrent streams."""
    async with AsyncChatClient(f"127.0.0.1:{port}") as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(grpc_timed_stream(client, i, tokens) for i in range(n)))
        seconds = time.perf_counter() - started
    return sum(count for count, _ in results) / seconds, [first for _, first in results]


def workers(server_pid: int) -> int:
    found = 0
    for proc in psutil.Process(server_pid).children(recursive=True):
        try:
            found += proc.cmdline()[0].startswith("VLLM::Worker")
        except (psutil.Error, IndexError):
            continue
    return found


async def measure(name: str, flags: list[str], args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    started = time.monotonic()
    server = ChatllmSubprocess([*SERVER, "--data-dir", args.data_dir, *flags], logs / f"{name.replace(' ', '-')}.log")
    try:
        port = int(server.wait_for(r"gRPC listening on [^:\s]+:(\d+)", 120).group(1))
        server.wait_for(r"ready: ", 600)
        load_seconds = time.monotonic() - started
        ranks = workers(server.proc.pid)
        await streams(port, 1, 8)  # warm-up
        loads = [os.getloadavg()[0]]
        runs = []
        for _ in range(args.repeats):
            runs.append(await streams(port, args.concurrency, args.tokens))
            loads.append(os.getloadavg()[0])
    finally:
        server.stop()
    rates = [rate for rate, _ in runs]
    ttfts = [t for _, firsts in runs for t in firsts]
    return {
        "config": name,
        "flags": " ".join(flags) or "(none)",
        "worker_processes": ranks,
        "start_to_ready_seconds": round(load_seconds, 1),
        "best_tokens_per_second": max(rates),
        "median_tokens_per_second": statistics.median(rates),
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "load": f"{min(loads):.1f}-{max(loads):.1f}",
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    header = [
        "configuration",
        "flags",
        "workers",
        "start to ready s",
        "best tok/s",
        "median tok/s",
        "TTFT p50 s",
        "load",
    ]
    table = [
        [
            r["config"],
            f"`{r['flags']}`",
            r["worker_processes"],
            r["start_to_ready_seconds"],
            r["best_tokens_per_second"],
            r["median_tokens_per_second"],
            r["ttft_p50"],
            r["load"],
        ]
        for r in rows
    ]
    return (
        f"`chatllm server --backend vllm` (fp32, 0.5 GiB KV cache per worker), {args.concurrency} concurrent gRPC "
        f"streams x {args.tokens} new tokens, greedy, EOS ignored; best and median of {args.repeats} runs; "
        "one configuration up at a time. Workers: vLLM's worker processes (one rank per process). `load`: the "
        "machine's 1-minute load average during the runs (the machine may be shared).\n\n"
        + markdown_table(header, table)
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chatllm-parallel-") as logs:
        rows = [await measure(name, flags, args, Path(logs)) for name, flags in CONFIGS.items()]
    body = report(rows, args)
    print(body)
    if not args.no_record:
        print(write_results("parallel", "vLLM tensor and pipeline parallel on CPU", body, {"rows": rows}))


if __name__ == "__main__":
    asyncio.run(main())
