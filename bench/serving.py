"""Serving benchmark: our full stack against vLLM's own OpenAI server, in one run.

Two servers on the vLLM engine with the same model, dtype and flags (fp32, eager, prefix caching,
1 GiB KV cache, both cores, Intel OpenMP in the engine processes on CPU), never up at the same time
(an idle vLLM CPU engine keeps OpenMP threads spinning and slows the other):

- `chatllm serve` (one process: the gRPC server and the bridge), on every protocol it speaks:
  OpenAI /v1/chat/completions SSE, gRPC Generate, the legacy NUL-delimited stream, the legacy SSE
  stream and the legacy WebSocket (bench/serving_clients.py asks each as its users do);
- `python -m vllm.entrypoints.openai.api_server`, streaming /v1/chat/completions (SSE).

Workload: N concurrent streams (default 32 and 128) of 64 new tokens, greedy, EOS ignored, the same
chat prompts (both sides apply the model's chat template). The servers take turns round by round
(--repeats rounds; in each, one server is started, warmed up, measured at every N and stopped, then
the other, the order alternating between rounds), so a machine whose load drifts treats them alike.
Reported per leg and N: output tokens/s (best and median round), time to first token p50/p99 (of the
best run), and the serving process's own CPU time per 1k tokens (the engine processes excluded): the
cost of the code path itself, which the machine's load barely changes.

    .venv/bin/python bench/serving.py [--concurrency 32 128] [--tokens 64] [--repeats 3] [--legs openai grpc]

An A/B of our code: `--code-before DIR --no-vllm`, where DIR/chatllm/ holds symlinks to an older
tree's server/, bridge/, clients/, kernel/, retrieval/ and proto/ (that `chatllm serve` runs with
PYTHONPATH=DIR and takes turns with this tree's, round by round).

Where the CPU goes: `--profile DIR` records `py-spy record --native` of the serving process during
each measured run (DIR/<leg>-N<n>-r<round>.txt, collapsed stacks). `--chatllm-module
tests.fake_chatllm --no-vllm` serves tests/fake_engine.py's scripted engine instead of the model
(CHATLLM_FAKE_STALL seconds between its steps): the front end alone, for profiling without a model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    ChatllmSubprocess,
    add_chatllm_module_argument,
    markdown_table,
    percentile,
    write_results,
)
from bench.serving_clients import (
    OneStream,
    grpc_streams,
    http_session,
    legacy_stream,
    openai_stream,
    websocket_stream,
)

# The engine settings both servers get.
WARM_UP_S = 10.0  # how long a leg's first answer may be retried after a 502 (see warm_up)
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
SERVED_NAME = "smol"  # the model's name on both servers
# `chatllm serve`'s legs: --legs name -> the leg's label.
CHATLLM_LEGS = {
    "openai": "chatllm serve, OpenAI SSE",
    "grpc": "chatllm serve, gRPC",
    "nul": "chatllm serve, legacy NUL stream",
    "sse": "chatllm serve, legacy SSE",
    "websocket": "chatllm serve, WebSocket",
}


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


async def run_once(leg: Leg, n: int, profile: Path | None = None, native: bool = True) -> Run:
    with py_spy(leg.frontend.pid, profile, native):
        started, cpu_before = time.perf_counter(), cpu_seconds(leg.frontend)
        outcomes = await asyncio.gather(*(leg.one(i) for i in range(n)))
        run = Run(
            leg.name,
            n,
            time.perf_counter() - started,
            sum(t for t, _ in outcomes),
            [f for _, f in outcomes],
            cpu_seconds(leg.frontend) - cpu_before,
            os.getloadavg()[0],
        )
    return run


@contextlib.contextmanager
def py_spy(pid: int, output: Path | None, native: bool = True) -> Iterator[None]:
    """`py-spy record [--native]` of `pid` while the block runs (nothing when `output` is None). Native
    unwinding pauses a process with torch and vLLM loaded for long: its runs are several times slower,
    so their tokens/s and CPU figures describe the profiler, not the server."""
    if output is None:
        yield
        return
    command = [
        shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}") or "py-spy",
        "record",
        *(["--native"] if native else []),
        "--rate",
        "200" if native else "100",
        "--format",
        "raw",
        "-p",
        str(pid),
        "-o",
        str(output),
    ]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(5.0)  # attached (it reads every loaded library's symbols first) before the streams start
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        spy.wait(60)


async def warm_up(leg: Leg, within: float = WARM_UP_S) -> None:
    """One answer on the leg. `chatllm serve` may answer 502 for a moment after it logs `ready:` (its
    bridge sees the in-process replica serving a little later), so a 502 is retried for `within` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            await leg.one(0)
            return
        except aiohttp.ClientResponseError as exc:
            if exc.status != 502 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def measure(
    legs: list[Leg], levels: list[int], profile: Path | None = None, round_: int = 0, native: bool = True
) -> list[Run]:
    """Every leg of one server once per level, after a warm-up."""
    for leg in legs:
        await warm_up(leg)
    runs = []
    for n in levels:
        for leg in legs:
            slug = re.sub(r"\W+", "-", leg.name).strip("-")
            run = await run_once(leg, n, profile / f"{slug}-N{n}-r{round_}.txt" if profile else None, native)
            runs.append(run)
            print(
                f"  N={n} {leg.name}: {run.tokens_per_second:.1f} tok/s, {run.cpu_ms_per_1k_tokens:.0f} ms CPU / 1k "
                f"(load {run.load_average:.1f})",
                flush=True,
            )
    return runs


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
    """`chatllm serve` of this tree, or (`before`) of --code-before's: a leg per protocol in --legs."""
    env = {"PYTHONPATH": args.code_before} if before else None
    server = ChatllmSubprocess(
        [
            "serve",
            *CHATLLM_ENGINE_FLAGS,
            *("--host", "127.0.0.1", "--port", "0", "--grpc-host", "127.0.0.1", "--grpc-port", "0"),
            *("--served-model-name", SERVED_NAME, "--no-knowledge-base", "--data-dir", args.data_dir),
            *("--max-concurrent", str(max(256, *args.concurrency))),
        ],
        logs / f"chatllm-serve{'-before' if before else ''}.log",
        env=env,
        program=args.chatllm_module,
    )
    stack.callback(server.stop)
    grpc_port = int(server.wait_for(r"gRPC listening on [^:\s]+:(\d+)").group(1))
    http_port = int(server.wait_for(r"HTTP listening on [^:\s]+:(\d+)").group(1))
    wait_ready(server, r"ready: ")
    frontend = psutil.Process(server.proc.pid)
    http = f"http://127.0.0.1:{http_port}"
    session = await stack.enter_async_context(http_session())
    streams = {
        "openai": openai_stream(session, f"{http}/v1/chat/completions", SERVED_NAME, args.tokens),
        "grpc": await stack.enter_async_context(grpc_streams(f"127.0.0.1:{grpc_port}", args.tokens)),
        "nul": legacy_stream(session, f"{http}/", args.tokens),
        "sse": legacy_stream(session, f"{http}/", args.tokens, sse=True),
        "websocket": websocket_stream(session, f"ws://127.0.0.1:{http_port}/", args.tokens),
    }
    suffix = CODE_BEFORE if before else ""
    return [Leg(CHATLLM_LEGS[name] + suffix, streams[name], frontend) for name in args.legs]


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
            SERVED_NAME,
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
    session = await stack.enter_async_context(http_session())
    one = openai_stream(session, f"http://127.0.0.1:{port}/v1/chat/completions", SERVED_NAME, args.tokens)
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
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--legs", nargs="+", choices=list(CHATLLM_LEGS), default=list(CHATLLM_LEGS))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="rounds: each server measured once per N per round")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument(
        "--code-before",
        help="a folder holding a `chatllm` package of other code (symlinks to an older tree's server/, bridge/, ...): "
        "its `chatllm serve` takes turns with this tree's, for an A/B of the code",
    )
    parser.add_argument("--no-vllm", action="store_true", help="leave vLLM's own server out (an A/B of our code only)")
    parser.add_argument("--no-record", action="store_true", help="print the report only (no bench/results files)")
    parser.add_argument("--results-name", default="serving", help="bench/results/<name>-<date>.md and .json")
    parser.add_argument("--profile", type=Path, help="a folder for py-spy's native profile of each measured run")
    parser.add_argument("--profile-python", action="store_true", help="profile Python frames only (far less intrusive)")
    add_chatllm_module_argument(parser)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="chatllm-serving-bench-"))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(f"server logs: {logs}", flush=True)
    servers = [chatllm_serve, *([chatllm_serve_before] if args.code_before else [])]
    servers += [] if args.no_vllm else [vllm_openai_server]
    runs: list[Run] = []
    for round_ in range(args.repeats):
        for start in servers[round_ % len(servers) :] + servers[: round_ % len(servers)]:
            async with contextlib.AsyncExitStack() as stack:  # stops the server before the next starts
                legs = await start(stack, args, logs)
                runs += await measure(legs, args.concurrency, args.profile, round_, not args.profile_python)
    rows = summarize(runs)
    body = report(rows, args)
    data = {"tokens": args.tokens, "repeats": args.repeats, "rows": rows, "runs": [r.__dict__ for r in runs]}
    print(body)
    if not args.no_record:
        path = write_results(args.results_name, "Serving benchmark: our stack vs vLLM's OpenAI server", body, data)
        print(f"\nwritten: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
