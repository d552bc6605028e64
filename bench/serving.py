"""Serving benchmark: our full stack against vLLM's own OpenAI server, in one run.

Two servers on the vLLM engine with the same model, dtype and flags (fp32, eager, prefix
caching, 1 GiB KV cache, both cores, Intel OpenMP in the engine processes on CPU), never up
at the same time (an idle vLLM CPU engine keeps OpenMP threads spinning and slows the other):

- `chatllm serve`: the bridge's legacy NUL-delimited HTTP stream, and its gRPC Generate
  stream (the same server process; `chatllm server` alone is this gRPC path);
- `python -m vllm.entrypoints.openai.api_server`, streaming /v1/chat/completions (SSE).

Workload: N concurrent streams (1, 8, 32) of 64 new tokens, greedy, EOS ignored, the same
chat prompts (both sides apply the model's chat template). The servers take turns round by
round (--repeats rounds; in each, one server is started, warmed up, measured at every N and
stopped, then the other, the order alternating between rounds), so a machine whose load
drifts treats them alike. Reported per leg and N: output tokens/s (best and median round),
time to first token p50/p99 (of the best run), and the serving process's own CPU time per
1k tokens (the engine processes excluded): the cost of the code path itself, which the
machine's load barely changes.

    .venv/bin/python bench/serving.py [--concurrency 1 8 32] [--tokens 64] [--repeats 3]

An A/B of our code: `--code-before DIR --no-vllm`, where DIR/chatllm/ holds symlinks to an older
tree's server/, bridge/, clients/, kernel/, retrieval/ and proto/ (that `chatllm serve` runs with
PYTHONPATH=DIR and takes turns with this tree's, round by round).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROMPTS, REPO, ChatllmSubprocess, grpc_timed_stream, markdown_table, percentile, write_results

# The engine settings both servers get.
CHATLLM_ENGINE_FLAGS = ["--backend", "vllm", "--precision", "fp32", "--kv-cache-space", "1", "--max-num-seqs", "256"]
VLLM_ENGINE_FLAGS = [
    "--dtype",
    "float32",
    "--enforce-eager",
    "--enable-prefix-caching",
    "--kv-cache-memory-bytes",
    str(1024**3),
    "--max-num-seqs",
    "256",
]
VLLM_BASELINE = "vLLM OpenAI server, SSE"
CODE_BEFORE = " (code before)"  # the legs of --code-before

OneStream = Callable[[int], Awaitable[tuple[int, float]]]


@dataclass
class Leg:
    name: str
    one: OneStream  # one stream of request i: (completion tokens, time to first token)
    frontend: psutil.Process  # the serving process (its engine processes are children)


@dataclass
class Run:
    leg: str
    concurrency: int
    seconds: float
    tokens: int
    ttfts: list[float]
    frontend_cpu_seconds: float
    load_average: float  # 1-minute load average when the run ended: how busy the machine was

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_1k_tokens(self) -> float:
        return 1e6 * self.frontend_cpu_seconds / self.tokens if self.tokens else 0.0


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def run_once(leg: Leg, n: int) -> Run:
    started, cpu_before = time.perf_counter(), cpu_seconds(leg.frontend)
    outcomes = await asyncio.gather(*(leg.one(i) for i in range(n)))
    return Run(
        leg.name,
        n,
        time.perf_counter() - started,
        sum(t for t, _ in outcomes),
        [f for _, f in outcomes],
        cpu_seconds(leg.frontend) - cpu_before,
        os.getloadavg()[0],
    )


async def measure(legs: list[Leg], levels: list[int]) -> list[Run]:
    """Every leg of one server once per level, after a warm-up."""
    for leg in legs:
        await leg.one(0)
    runs = []
    for n in levels:
        for leg in legs:
            run = await run_once(leg, n)
            runs.append(run)
            print(f"  N={n} {leg.name}: {run.tokens_per_second:.1f} tok/s (load {run.load_average:.1f})", flush=True)
    return runs


# ------------------------------------------------------------------------ clients
@contextlib.asynccontextmanager
async def grpc_streams(target: str, tokens: int) -> AsyncIterator[OneStream]:
    from chatllm.clients import AsyncChatClient

    async with AsyncChatClient(target) as client:
        yield lambda i: grpc_timed_stream(client, i, tokens)


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


# ------------------------------------------------------------------------ servers
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
    from chatllm.kernel.config import Config
    from chatllm.server.engines.vllm_setup import engine_environment, vllm_build

    return engine_environment(Config.build(), vllm_build() == "cpu", {})


class PythonSubprocess(ChatllmSubprocess):
    """`python <args>` (not `chatllm`), in its own process group, same log/stop handling."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
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


async def chatllm_serve(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, logs: Path, before: bool = False
) -> list[Leg]:
    """`chatllm serve` of this tree, or (`before`) of --code-before's."""
    env = {"PYTHONPATH": args.code_before} if before else None
    server = ChatllmSubprocess(
        [
            "serve",
            *CHATLLM_ENGINE_FLAGS,
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
            args.data_dir,
            "--max-concurrent",
            "64",
        ],
        logs / f"chatllm-serve{'-before' if before else ''}.log",
        env=env,
    )
    stack.callback(server.stop)
    grpc_port = int(server.wait_for(r"gRPC listening on [^:\s]+:(\d+)").group(1))
    http_port = int(server.wait_for(r"HTTP listening on [^:\s]+:(\d+)").group(1))
    wait_ready(server, r"ready: ")
    frontend = psutil.Process(server.proc.pid)
    nul = await stack.enter_async_context(nul_streams(f"http://127.0.0.1:{http_port}/", args.tokens))
    grpc_one = await stack.enter_async_context(grpc_streams(f"127.0.0.1:{grpc_port}", args.tokens))
    suffix = CODE_BEFORE if before else ""
    return [
        Leg(f"chatllm serve, bridge NUL stream{suffix}", nul, frontend),
        Leg(f"chatllm serve, gRPC{suffix}", grpc_one, frontend),
    ]


async def chatllm_serve_before(stack: contextlib.AsyncExitStack, args: argparse.Namespace, logs: Path) -> list[Leg]:
    return await chatllm_serve(stack, args, logs, before=True)


async def vllm_openai_server(stack: contextlib.AsyncExitStack, args: argparse.Namespace, logs: Path) -> list[Leg]:
    from chatllm.server.model_source import resolve

    model_dir = resolve(None, Path(args.data_dir) / "models").path
    port = free_port()
    server = PythonSubprocess(
        [
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
            *VLLM_ENGINE_FLAGS,
        ],
        logs / "vllm-openai.log",
        env=cpu_env(),
    )
    stack.callback(server.stop)
    wait_ready(server, r"Application startup complete|Uvicorn running")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    one = await stack.enter_async_context(openai_streams(url, "smol", args.tokens))
    return [Leg(VLLM_BASELINE, one, psutil.Process(server.proc.pid))]


# ------------------------------------------------------------------------ report
def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    by_key: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        by_key.setdefault((run.leg, run.concurrency), []).append(run)
    rows = []
    for (leg, n), group in by_key.items():
        best = max(group, key=lambda r: r.tokens_per_second)
        rows.append(
            {
                "leg": leg,
                "N": n,
                "runs": len(group),
                "best_tokens_per_second": best.tokens_per_second,
                "median_tokens_per_second": statistics.median(r.tokens_per_second for r in group),
                "ttft_p50": percentile(best.ttfts, 50),
                "ttft_p99": percentile(best.ttfts, 99),
                "cpu_ms_per_1k_tokens": statistics.median(r.cpu_ms_per_1k_tokens for r in group),
                "load_min": min(r.load_average for r in group),
                "load_max": max(r.load_average for r in group),
            }
        )
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    body = (
        f"Workload: N concurrent streams x {args.tokens} new tokens, greedy, EOS ignored; {args.repeats} rounds, "
        "the two servers taking turns and never up together. Engine: vLLM, fp32, eager, prefix caching, "
        "1 GiB KV cache. `load` is the machine's 1-minute load average over the runs (the machine may be shared).\n\n"
    )
    header = ("leg", "N", "best tok/s", "median tok/s", "TTFT p50 s", "TTFT p99 s", "server CPU ms / 1k tok", "load")
    body += markdown_table(
        header,
        [
            (
                r["leg"],
                r["N"],
                r["best_tokens_per_second"],
                r["median_tokens_per_second"],
                r["ttft_p50"],
                r["ttft_p99"],
                r["cpu_ms_per_1k_tokens"],
                f"{r['load_min']:.1f}-{r['load_max']:.1f}",
            )
            for r in rows
        ],
    )
    if args.code_before:
        before = {(r["leg"].removesuffix(CODE_BEFORE), r["N"]): r for r in rows if r["leg"].endswith(CODE_BEFORE)}
        body += "\n\nThis code relative to the code before at the same leg and N (CPU below 1 = cheaper):\n\n"
        body += ratio_table([(r, before.get((r["leg"], r["N"]))) for r in rows if not r["leg"].endswith(CODE_BEFORE)])
    if not args.no_vllm:
        baseline = {r["N"]: r for r in rows if r["leg"] == VLLM_BASELINE}
        body += "\n\nRelative to vLLM's own OpenAI server at the same N (above 1 = more tokens/s; CPU below 1 = "
        body += "cheaper):\n\n" + ratio_table([(r, baseline.get(r["N"])) for r in rows if r["leg"] != VLLM_BASELINE])
    return body


def ratio_table(pairs: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> str:
    """Each row's tokens/s and CPU per token over its reference row's (rows without one left out)."""
    ratios = [
        (
            row["leg"],
            row["N"],
            row["best_tokens_per_second"] / reference["best_tokens_per_second"],
            row["median_tokens_per_second"] / reference["median_tokens_per_second"],
            row["cpu_ms_per_1k_tokens"] / reference["cpu_ms_per_1k_tokens"],
        )
        for row, reference in pairs
        if reference is not None
    ]
    return markdown_table(("leg", "N", "best tok/s x", "median tok/s x", "server CPU x"), ratios)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="rounds: each server measured once per N per round")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument(
        "--code-before",
        help="a folder holding a `chatllm` package of other code (symlinks to an older tree's server/, bridge/, ...): "
        "its `chatllm serve` takes turns with this tree's, for an A/B of the code",
    )
    parser.add_argument("--no-vllm", action="store_true", help="leave vLLM's own server out (an A/B of our code only)")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="chatllm-serving-bench-"))
    print(f"server logs: {logs}", flush=True)
    servers = [chatllm_serve, *([chatllm_serve_before] if args.code_before else [])]
    servers += [] if args.no_vllm else [vllm_openai_server]
    runs: list[Run] = []
    for round_ in range(args.repeats):
        for start in servers[round_ % len(servers) :] + servers[: round_ % len(servers)]:
            async with contextlib.AsyncExitStack() as stack:  # stops the server before the next starts
                runs += await measure(await start(stack, args, logs), args.concurrency)
    rows = summarize(runs)
    body = report(rows, args)
    data = {"tokens": args.tokens, "repeats": args.repeats, "rows": rows, "runs": [r.__dict__ for r in runs]}
    path = write_results("serving", "Serving benchmark: our stack vs vLLM's OpenAI server", body, data)
    print(body)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
