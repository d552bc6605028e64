"""Which CPU settings should the vLLM engine default to? Measures, side by side in one run,
vLLM's CPU build with the engine in process under each combination of:

- VLLM_CPU_NUM_OF_RESERVED_CPU 0 (the model uses every core) vs 1 (vLLM's default on x86:
  one core kept for its scheduler process);
- the OpenMP runtime the engine processes preload: Intel's libiomp5 (from the
  intel-openmp wheel in the venv) vs torch's libgomp (what vLLM preloads otherwise).

Workload: N concurrent requests (1, 8, 32) x 64 new tokens, greedy, EOS ignored, fp32,
SmolLM2-135M. Each variant runs in its own process (the variables must be set before
vLLM spawns its engine) and prints one JSON line.

    .venv/bin/python bench/vllm_cpu_options.py [--concurrency 1 8 32] [--tokens 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROMPTS, REPO, markdown_table, write_results


def torch_libgomp() -> str:
    import torch

    found = glob.glob(str(Path(torch.__file__).parent / "lib" / "libgomp*.so*"))
    return found[0] if found else ""


def variants() -> dict[str, dict[str, str]]:
    iomp = str(Path(sys.prefix) / "lib" / "libiomp5.so")
    gomp = torch_libgomp()
    return {
        "reserved 0, iomp": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "LD_PRELOAD": iomp},
        "reserved 0, gomp": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "LD_PRELOAD": gomp},
        "reserved 1, iomp": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "LD_PRELOAD": iomp},
        "reserved 1, gomp": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "LD_PRELOAD": gomp},
    }


async def measure(levels: list[int], tokens: int, repeats: int, data_dir: Path) -> dict[str, Any]:
    """In the child: start the engine (our adapter, so our env handling is what is measured)."""
    from chatllm.kernel.config import Config
    from chatllm.server.chat import Chat, ChatInput
    from chatllm.server.engines.vllm import VLLMEngine
    from chatllm.server.model_source import resolve
    from chatllm.server.sampling import SamplingOptions

    config = Config.build(backend="vllm", data_dir=str(data_dir), knowledge_base=False, log_level="WARNING")
    source = resolve(None, config.common.models_dir)
    options = SamplingOptions.resolved(
        greedy=True, max_new_tokens=tokens, temperature=0.0, top_k=0, top_p=1.0, ignore_eos=True
    )
    started = time.perf_counter()
    async with VLLMEngine.running(config, source) as engine:
        start_seconds = time.perf_counter() - started
        chat = Chat(engine.tokenizer, engine.info.context_length, max_round=5)
        prompts = [chat.build(ChatInput(p), tokens).ids for p in PROMPTS]

        async def one(i: int, tag: str) -> int:
            count = 0
            async for out in engine.generate(prompts[i % len(prompts)], options, f"{tag}-{i}"):
                count = out.completion_tokens
            return count

        await one(0, "warmup")
        rates: dict[str, float] = {}
        for n in levels:
            best = 0.0
            for r in range(repeats):
                t0 = time.perf_counter()
                counts = await asyncio.gather(*(one(i, f"{n}-{r}") for i in range(n)))
                best = max(best, sum(counts) / (time.perf_counter() - t0))
            rates[str(n)] = best
    return {"start_seconds": start_seconds, "tokens_per_second": rates}


def run_variant(name: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--tokens",
        str(args.tokens),
        "--repeats",
        str(args.repeats),
        "--data-dir",
        args.data_dir,
        "--concurrency",
        *map(str, args.concurrency),
    ]
    proc = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=900, cwd=REPO, start_new_session=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant {name!r} failed:\n{proc.stderr[-3000:]}")
    # The machine may be shared: the 1-minute load average says how quiet it was.
    return {**json.loads(lines[-1]), "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="runs per level; the best counts")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.concurrency, args.tokens, args.repeats, Path(args.data_dir)))))
        return
    results = {name: run_variant(name, env, args) for name, env in variants().items()}
    header = ("variant", "start s", *(f"N={n} tok/s" for n in args.concurrency), "load avg after")
    rows = [
        (name, r["start_seconds"], *(r["tokens_per_second"][str(n)] for n in args.concurrency), r["load_after"])
        for name, r in results.items()
    ]
    body = (
        f"vLLM CPU engine in process, fp32, eager, {args.tokens} new tokens per request, greedy, EOS ignored; "
        f"best of {args.repeats} runs per level.\n\n" + markdown_table(header, rows)
    )
    path = write_results("vllm-cpu-options", "vLLM CPU options", body, {"variants": results, "tokens": args.tokens})
    print(body)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
