"""Engine benchmark: the same requests through the gRPC server, the engine in process,
and sequential `model.generate`, side by side in one run.

Workload: N concurrent requests (N = 1, 8, 32) of 64 new tokens each, greedy,
EOS ignored so every answer has the same length. Reports output tokens/s and
time to first token (p50/p99) per leg, and the ratios between legs.

    .venv/bin/python bench/engine.py [--backends hf,vllm] [--concurrency 1 8 32] [--tokens 64]

Both engines run by default when vLLM is installed (one at a time, each with its own server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROMPTS, REPO, ChatllmSubprocess, grpc_timed_stream, markdown_table, percentile, write_results


@dataclass
class LegResult:
    leg: str
    concurrency: int
    seconds: float
    tokens: int
    ttfts: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


async def timed(n: int, one: Callable[[int], Awaitable[tuple[int, float]]], leg: str) -> LegResult:
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.perf_counter() - started
    return LegResult(leg, n, seconds, sum(t for t, _ in results), [f for _, f in results])


async def grpc_leg(target: str, n: int, tokens: int, leg: str) -> LegResult:
    from chatllm.clients import AsyncChatClient

    async with AsyncChatClient(target) as client:

        def one(i: int) -> Awaitable[tuple[int, float]]:
            return grpc_timed_stream(client, i, tokens)

        await one(0)  # warm-up
        return await timed(n, one, leg)


async def engine_leg(engine: Any, chat: Any, n: int, tokens: int, leg: str) -> LegResult:
    from chatllm.server.chat import ChatInput
    from chatllm.server.sampling import SamplingOptions

    options = SamplingOptions.resolved(
        greedy=True, max_new_tokens=tokens, temperature=0.0, top_k=0, top_p=1.0, ignore_eos=True
    )

    async def one(i: int) -> tuple[int, float]:
        ids = chat.build(ChatInput(PROMPTS[i % len(PROMPTS)]), tokens).ids
        start = time.perf_counter()
        first = None
        count = 0
        async for out in engine.generate(ids, options, f"bench-{leg}-{n}-{i}-{time.monotonic_ns()}"):
            if out.text and first is None:
                first = time.perf_counter() - start
            count = out.completion_tokens
        return count, first or 0.0

    await one(0)
    return await timed(n, one, leg)


def generate_leg(model_dir: Path, n: int, tokens: int) -> LegResult:
    """Sequential model.generate: one request at a time, as a naive server would."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ttfts = []
    produced = 0
    started = time.perf_counter()
    for i in range(n):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        # No streaming: the first token reaches the caller with the last one.
        ttfts.append(time.perf_counter() - t0)
        produced += out.shape[1] - ids["input_ids"].shape[1]
    return LegResult("model.generate (sequential)", n, time.perf_counter() - started, produced, ttfts)


async def run_backend(backend: str, data_dir: Path, levels: list[int], tokens: int, log_dir: Path) -> list[LegResult]:
    from chatllm.kernel.config import Config
    from chatllm.server.chat import Chat
    from chatllm.server.engines import running_engine
    from chatllm.server.model_source import resolve

    results: list[LegResult] = []
    server = ChatllmSubprocess(
        [
            "server",
            "--backend",
            backend,
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
        ],
        log_dir / f"server-{backend}.log",
    )
    try:
        port = int(server.wait_for(r"gRPC listening on [^:\s]+:(\d+)").group(1))
        server.wait_for(r"ready: ")
        for n in levels:
            results.append(await grpc_leg(f"127.0.0.1:{port}", n, tokens, f"{backend} via gRPC server"))
    finally:
        server.stop()

    config = Config.build(backend=backend, data_dir=str(data_dir), knowledge_base=False)
    source = resolve(None, config.common.models_dir)
    async with running_engine(config, source) as engine:
        chat = Chat(engine.tokenizer, engine.info.context_length, max_round=5)
        for n in levels:
            results.append(await engine_leg(engine, chat, n, tokens, f"{backend} engine in process"))
    return results


def report(results: list[LegResult], levels: list[int], tokens: int) -> tuple[str, dict[str, Any]]:
    rows = [
        (
            r.leg,
            r.concurrency,
            r.tokens,
            r.seconds,
            r.tokens_per_second,
            percentile(r.ttfts, 50),
            percentile(r.ttfts, 99),
        )
        for r in results
    ]
    body = f"Workload: N concurrent requests x {tokens} new tokens, greedy, EOS ignored.\n\n"
    body += markdown_table(("leg", "N", "tokens", "seconds", "tokens/s", "TTFT p50 s", "TTFT p99 s"), rows)
    baseline = {r.concurrency: r.tokens_per_second for r in results if r.leg.startswith("model.generate")}
    ratio_rows = [
        (r.leg, r.concurrency, r.tokens_per_second / baseline[r.concurrency] if baseline.get(r.concurrency) else 0.0)
        for r in results
        if not r.leg.startswith("model.generate")
    ]
    body += "\n\nThroughput relative to sequential model.generate at the same N:\n\n"
    body += markdown_table(("leg", "N", "x model.generate"), ratio_rows)
    return body, {
        "tokens": tokens,
        "levels": levels,
        "rows": [r.__dict__ | {"tokens_per_second": r.tokens_per_second} for r in results],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from chatllm.server.engines.vllm_setup import vllm_build

    default_backends = "hf,vllm" if vllm_build() else "hf"
    parser.add_argument("--backends", default=default_backends, help=f"comma-separated (default {default_backends})")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    results: list[LegResult] = []
    from chatllm.server.model_source import resolve

    # model.generate first, in a process no engine has touched yet: vLLM's CPU set-up changes
    # process-wide thread settings that would slow a later torch run in this process.
    model_dir = resolve(None, data_dir / "models").path
    baseline = [generate_leg(model_dir, n, args.tokens) for n in args.concurrency]
    with tempfile.TemporaryDirectory() as logs:
        for backend in args.backends.split(","):
            results += await run_backend(backend.strip(), data_dir, args.concurrency, args.tokens, Path(logs))
    results += baseline
    body, data = report(results, args.concurrency, args.tokens)
    path = write_results("engine", "Engine benchmark", body, data)
    print(body)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
