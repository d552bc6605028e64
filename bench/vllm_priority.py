"""Does vLLM's own priority scheduling work on its CPU build? The engine in process (our adapter), with
room for only two sequences (`--max-num-seqs 2`), so vLLM's waiting queue fills: six bulk requests
(priority 2) are sent, and once two generate, one interactive request (priority 0). Under
`--scheduling-policy priority` vLLM's waiting queue is a heap on (priority, arrival): the interactive
request should take the next free sequence, ahead of the four bulk ones queued before it; under `fcfs`
it should wait for all four. Each policy runs in its own process (the policy is an engine argument).

    flock /tmp/chatllm-heavy.lock .venv/bin/python bench/vllm_priority.py [--rounds 3] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROMPTS, REPO, markdown_table, write_results

BULK, BULK_TOKENS, CHAT_TOKENS = 6, 48, 8


async def measure(policy: str, rounds: int, data_dir: Path) -> dict[str, Any]:
    """In the child: (interactive request's place among the queued bulk ones, its TTFT) per round."""
    from chatllm.kernel.config import Config
    from chatllm.server.chat import Chat, ChatInput
    from chatllm.server.engines.vllm import VLLMEngine
    from chatllm.server.model_source import resolve
    from chatllm.server.sampling import SamplingOptions

    config = Config.build(
        backend="vllm", data_dir=str(data_dir), knowledge_base=False, log_level="WARNING", max_num_seqs=2,
        scheduling_policy=policy, num_threads=1,
    )  # fmt: skip
    source = resolve(None, config.common.models_dir)
    results = []
    async with VLLMEngine.running(config, source) as engine:
        chat = Chat(engine.tokenizer, engine.info.context_length, max_round=5)
        prompts = [chat.build(ChatInput(p), BULK_TOKENS).ids for p in PROMPTS]

        async def first_token(tag: str, index: int, tokens: int, priority: int, started: asyncio.Event) -> float:
            options = SamplingOptions(
                max_new_tokens=tokens, temperature=0.0, top_k=0, top_p=1.0, greedy=True, ignore_eos=True
            )
            first = 0.0
            async for out in engine.generate(prompts[index % len(prompts)], options, tag, priority=priority):
                if not first and out.completion_tokens:
                    first = time.perf_counter()
                    started.set()
            return first  # the moment of the first token

        for round_ in range(rounds + 1):  # round 0 warms the engine up
            print(f"round {round_}: sending {BULK} bulk requests", file=sys.stderr, flush=True)
            running = [asyncio.Event() for _ in range(BULK)]
            bulk = [
                asyncio.create_task(first_token(f"b{round_}-{i}", i, BULK_TOKENS, 2, running[i])) for i in range(BULK)
            ]
            await asyncio.wait([asyncio.create_task(e.wait()) for e in running], return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.2)  # two generate, four wait in vLLM's queue
            print(f"round {round_}: bulk generating; sending the interactive one", file=sys.stderr, flush=True)
            sent = time.perf_counter()
            chat_first = await first_token(f"c{round_}", 0, CHAT_TOKENS, 0, asyncio.Event())
            print(f"round {round_}: interactive answered", file=sys.stderr, flush=True)
            bulk_first = sorted(await asyncio.gather(*bulk))
            queued = bulk_first[2:]  # the four bulk requests that waited when the interactive one came
            if round_:
                results.append({"overtook": sum(chat_first < t for t in queued), "ttft_s": chat_first - sent})
    return {"policy": policy, "rounds": results}


def run_child(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", policy, "--rounds", str(args.rounds), "--data-dir", args.data_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, start_new_session=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{policy} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, args.rounds, Path(args.data_dir)))))
        return
    results = [run_child(policy, args) for policy in ("priority", "fcfs")]
    rows = [
        [
            r["policy"],
            " ".join(str(x["overtook"]) for x in r["rounds"]) + f" of {BULK - 2}",
            " ".join(f"{x['ttft_s'] * 1000:.0f}" for x in r["rounds"]),
        ]
        for r in results
    ]
    body = (
        f"vLLM CPU build in process, one thread, --max-num-seqs 2; {BULK} bulk requests (priority 2, {BULK_TOKENS} "
        f"tokens) then one interactive (priority 0, {CHAT_TOKENS} tokens) once two bulk ones generate.\n\n"
        + markdown_table(["policy", "queued bulk requests it overtook, per round", "its TTFT ms, per round"], rows)
    )
    print(body)
    if not args.no_record:
        print(f"written: {write_results('vllm-priority', 'vLLM priority scheduling on CPU', body, {'runs': results})}")


if __name__ == "__main__":
    main()
