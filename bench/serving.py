"""Serving benchmark: our full stack against vLLM's own OpenAI server, in one run.

Legs, one server at a time, all on the vLLM engine with the same model, dtype and flags
(fp32, eager, prefix caching, 1 GiB KV cache, both cores, Intel OpenMP preloaded on CPU):

- `chatllm server` over gRPC (the Generate stream);
- `chatllm serve` over the bridge's legacy NUL-delimited HTTP stream (and gRPC again,
  through the same process, to show what the bridge adds);
- `python -m vllm.entrypoints.openai.api_server`, streaming /v1/chat/completions (SSE).

Workload: N concurrent streams (1, 8, 32) of 64 new tokens, greedy, EOS ignored, the same
chat prompts (both sides apply the model's chat template). Reports output tokens/s and
time to first token p50/p99 per leg, and the serving process's own CPU time per 1k tokens
(the engine processes excluded): the cost of the code path itself, which the machine's
load does not change much.

    .venv/bin/python bench/serving.py [--concurrency 1 8 32] [--tokens 64] [--legs grpc,bridge,vllm] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ChatllmSubprocess, markdown_table, percentile, write_results

PROMPTS = [
    "Explain how a bicycle works.",
    "Write a short poem about the sea.",
    "What is photosynthesis?",
    "Describe the water cycle.",
    "Give three tips for learning a language.",
    "What is a neural network?",
    "Summarise the plot of a detective story.",
    "Why is the sky blue?",
]
# One place for the engine settings both sides get.
ENGINE_FLAGS = ["--backend", "vllm", "--precision", "fp32", "--kv-cache-space", "1", "--max-num-seqs", "256"]
REPEATS = 3  # per level and round; the best run counts (the machine may be shared)

OneStream = Callable[[int], Awaitable[tuple[int, float]]]


@dataclass
class LegResult:
    leg: str
    concurrency: int
    seconds: float
    tokens: int
    ttfts: list[float]
    frontend_cpu_seconds: float  # CPU time of the serving process itself (not the engine processes)
    load_average: float = 0.0  # 1-minute load average when the run ended: how busy the machine was

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def frontend_cpu_ms_per_1k_tokens(self) -> float:
        return 1e6 * self.frontend_cpu_seconds / self.tokens if self.tokens else 0.0


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def run_levels(leg: str, levels: list[int], one: OneStream, frontend: psutil.Process) -> list[LegResult]:
    """Each level REPEATS times; the fastest run counts. `frontend` is the serving process: its
    CPU per token is what our code path (or vLLM's server) costs, independent of machine load."""
    await one(0)  # warm-up
    results = []
    for n in levels:
        best: LegResult | None = None
        for _ in range(REPEATS):
            started, cpu_before = time.perf_counter(), cpu_seconds(frontend)
            outcomes = await asyncio.gather(*(one(i) for i in range(n)))
            result = LegResult(
                leg,
                n,
                time.perf_counter() - started,
                sum(t for t, _ in outcomes),
                [f for _, f in outcomes],
                cpu_seconds(frontend) - cpu_before,
                os.getloadavg()[0],
            )
            if best is None or result.tokens_per_second > best.tokens_per_second:
                best = result
        assert best is not None
        results.append(best)
        print(
            f"  {leg} N={n}: {best.tokens_per_second:.1f} tok/s, TTFT p50 {percentile(best.ttfts, 50):.3f}s", flush=True
        )
    return results


# ------------------------------------------------------------------------ clients
@contextlib.asynccontextmanager
async def grpc_streams(target: str, tokens: int) -> AsyncIterator[OneStream]:
    from chatllm.clients import AsyncChatClient

    async with AsyncChatClient(target) as client:

        async def one(i: int) -> tuple[int, float]:
            start = time.perf_counter()
            first = None
            count = 0
            async for r in client.stream(
                PROMPTS[i % len(PROMPTS)], max_new_tokens=tokens, temperature=0.0, ignore_eos=True
            ):
                if r.text and first is None:
                    first = time.perf_counter() - start
                count = r.completion_tokens
            return count, first or 0.0

        yield one


@contextlib.asynccontextmanager
async def nul_streams(url: str, tokens: int) -> AsyncIterator[OneStream]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def one(i: int) -> tuple[int, float]:
            body = {
                "prompt": PROMPTS[i % len(PROMPTS)],
                "use_stream_chat": True,
                "max_new_tokens": tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            start = time.perf_counter()
            first = None
            last: dict[str, Any] = {}
            buffer = b""
            async with session.post(url, json=body) as response:
                response.raise_for_status()
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *objects, buffer = buffer.split(b"\0")
                    for raw in objects:
                        last = json.loads(raw)
                        if last.get("response") and first is None:
                            first = time.perf_counter() - start
            return int(last.get("usage", {}).get("completion_tokens", 0)), first or 0.0

        yield one


@contextlib.asynccontextmanager
async def openai_streams(url: str, model: str, tokens: int) -> AsyncIterator[OneStream]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def one(i: int) -> tuple[int, float]:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": tokens,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            start = time.perf_counter()
            first = None
            completion = 0
            async with session.post(url, json=body) as response:
                response.raise_for_status()
                async for line in response.content:
                    if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    choices = event.get("choices") or []
                    if choices and choices[0].get("delta", {}).get("content") and first is None:
                        first = time.perf_counter() - start
                    if event.get("usage"):
                        completion = int(event["usage"]["completion_tokens"])
            return completion, first or 0.0

        yield one


# ------------------------------------------------------------------------ legs
def free_port() -> int:
    """For vLLM's server, which cannot report a port it picked itself."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(server: ChatllmSubprocess, pattern: str) -> None:
    try:
        server.wait_for(pattern, timeout=600)
    except TimeoutError:
        tail = server.log_path.read_text(errors="replace")[-4000:]
        raise TimeoutError(f"no {pattern!r} in {server.log_path} within 600 s; its log ends:\n{tail}") from None


def cpu_env() -> dict[str, str]:
    """What our engine sets for its processes on CPU, given to vLLM's server too."""
    from chatllm.server.config import Config
    from chatllm.server.engines.vllm_setup import engine_environment, vllm_build

    return engine_environment(Config(), vllm_build() == "cpu", {})


async def grpc_leg(args: argparse.Namespace, data_dir: Path, logs: Path) -> list[LegResult]:
    server = ChatllmSubprocess(
        [
            "server",
            *ENGINE_FLAGS,
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--no-knowledge-base",
            "--data-dir",
            str(data_dir),
            "--max-concurrent",
            "64",
            "--log-level",
            "INFO",
        ],
        logs / "chatllm-server.log",
    )
    try:
        port = int(server.wait_for(r"gRPC listening on [^:\s]+:(\d+)").group(1))
        wait_ready(server, r"ready: ")
        async with grpc_streams(f"127.0.0.1:{port}", args.tokens) as one:
            return await run_levels("chatllm server, gRPC", args.concurrency, one, psutil.Process(server.proc.pid))
    finally:
        server.stop()


async def bridge_leg(args: argparse.Namespace, data_dir: Path, logs: Path) -> list[LegResult]:
    server = ChatllmSubprocess(
        [
            "serve",
            *ENGINE_FLAGS,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--no-knowledge-base",
            "--data-dir",
            str(data_dir),
            "--max-concurrent",
            "64",
            "--log-level",
            "INFO",
        ],
        logs / "chatllm-serve.log",
    )
    try:
        grpc_port = int(server.wait_for(r"gRPC listening on [^:\s]+:(\d+)").group(1))
        http_port = int(server.wait_for(r"(?:bridge|HTTP)[^\n]*listening on [^:\s]+:(\d+)").group(1))
        wait_ready(server, r"ready: ")
        frontend = psutil.Process(server.proc.pid)
        results = []
        async with nul_streams(f"http://127.0.0.1:{http_port}/", args.tokens) as one:
            results += await run_levels("chatllm serve, bridge NUL stream", args.concurrency, one, frontend)
        async with grpc_streams(f"127.0.0.1:{grpc_port}", args.tokens) as one:
            results += await run_levels("chatllm serve, gRPC", args.concurrency, one, frontend)
        return results
    finally:
        server.stop()


async def vllm_leg(args: argparse.Namespace, data_dir: Path, logs: Path) -> list[LegResult]:
    from chatllm.server.model_source import resolve

    model_dir = resolve(None, data_dir / "models").path
    port = free_port()
    cmd = [
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "smol",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--enable-prefix-caching",
        "--kv-cache-memory-bytes",
        str(1024**3),
        "--max-num-seqs",
        "256",
    ]
    server = PythonSubprocess(cmd, logs / "vllm-openai.log", env=cpu_env())
    try:
        wait_ready(server, r"Application startup complete|Uvicorn running")
        async with openai_streams(f"http://127.0.0.1:{port}/v1/chat/completions", "smol", args.tokens) as one:
            return await run_levels("vLLM OpenAI server, SSE", args.concurrency, one, psutil.Process(server.proc.pid))
    finally:
        server.stop()


class PythonSubprocess(ChatllmSubprocess):
    """`python <args>` (not `chatllm`), in its own process group, same log/stop handling."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        import subprocess

        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
            cwd=REPO,
        )


LEGS = {"grpc": grpc_leg, "bridge": bridge_leg, "vllm": vllm_leg}


def best_per_leg_and_level(results: list[LegResult]) -> list[LegResult]:
    best: dict[tuple[str, int], LegResult] = {}
    for r in results:
        key = (r.leg, r.concurrency)
        if key not in best or r.tokens_per_second > best[key].tokens_per_second:
            best[key] = r
    return list(best.values())


def report(results: list[LegResult], tokens: int) -> tuple[str, dict[str, Any]]:
    rows = [
        (
            r.leg,
            r.concurrency,
            r.tokens,
            r.seconds,
            r.tokens_per_second,
            percentile(r.ttfts, 50),
            percentile(r.ttfts, 99),
            r.frontend_cpu_ms_per_1k_tokens,
            r.load_average,
        )
        for r in results
    ]
    body = (
        f"Workload: N concurrent streams x {tokens} new tokens, greedy, EOS ignored; best of {REPEATS} runs "
        "per level and round, over the rounds (legs in alternating order). Engine: vLLM, fp32, eager, prefix "
        "caching, 1 GiB KV cache. `load` is the machine's 1-minute load average after that run.\n\n"
    )
    header = ("leg", "N", "tokens", "seconds", "tokens/s", "TTFT p50 s", "TTFT p99 s", "server CPU ms / 1k tok", "load")
    body += markdown_table(header, rows)
    baseline = {r.concurrency: r.tokens_per_second for r in results if r.leg.startswith("vLLM OpenAI")}
    if baseline:
        ratio_rows = [
            (r.leg, r.concurrency, r.tokens_per_second / baseline[r.concurrency])
            for r in results
            if r.concurrency in baseline and not r.leg.startswith("vLLM OpenAI")
        ]
        body += "\n\nThroughput relative to vLLM's own OpenAI server at the same N:\n\n"
        body += markdown_table(("leg", "N", "x vLLM server"), ratio_rows)
    data = {
        "tokens": tokens,
        "rows": [
            r.__dict__
            | {
                "tokens_per_second": r.tokens_per_second,
                "frontend_cpu_ms_per_1k_tokens": r.frontend_cpu_ms_per_1k_tokens,
            }
            for r in results
        ],
    }
    return body, data


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--legs", default="grpc,bridge,vllm", help="comma-separated: grpc, bridge, vllm")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the legs, in alternating order")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    legs = [name.strip() for name in args.legs.split(",")]
    results: list[LegResult] = []
    logs = Path(tempfile.mkdtemp(prefix="chatllm-serving-bench-"))
    print(f"server logs: {logs}", flush=True)
    for round_no in range(args.rounds):
        # Alternate the order, so no leg always runs first (or last) on a machine whose load drifts.
        for name in legs if round_no % 2 == 0 else legs[::-1]:
            print(f"round {round_no + 1}, leg {name} ...", flush=True)
            results += await LEGS[name](args, data_dir, logs)
    results = best_per_leg_and_level(results)
    body, data = report(results, args.tokens)
    path = write_results("serving", "Serving benchmark: our stack vs vLLM's OpenAI server", body, data)
    print(body)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
