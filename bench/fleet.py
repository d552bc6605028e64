"""A fleet's shared limits, priorities and fair share, measured: two `chatllm server` replicas (vLLM, one
core each) and two `chatllm bridge`s in front of both, all on one Redis (`--state-store`).

Legs, in one run on the same fleet and the same prompts (bench/common.py's):
1. limits: for `--duration` s, three tokens offered 3x their limits (rpm=60 open-loop; tpm=3000
   open-loop; streams=4 from 12 closed-loop clients) through both bridges, one replica killed with
   SIGKILL half-way  -> most admitted in any 60 s (target <= 1.05x), most streams at once (<= the
   limit), the state store's p99 share of admission (chatllm_limit_check_seconds, target <= 2 ms);
2. priority, alternating with FCFS (twice each): a bulk flood (closed-loop clients, twice the fleet's
   slots) and one interactive request at a time; `priority` sends them from a bulk-ceiling token and
   an interactive one, `fcfs` the same requests from one token with no class  -> interactive TTFT p95
   against its idle TTFT (target <= 1.5x), bulk tokens/s against FCFS (target >= 0.9x);
3. fairness: two tokens backlogged with 30 and 8 closed-loop clients  -> Jain's index of served
   tokens per 60 s window (target >= 0.95), then the same with --no-fair-share for comparison.

    flock /tmp/chatllm-heavy.lock .venv/bin/python bench/fleet.py [--quick] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fleet_load as load
from bench.common import REPO, ChatllmSubprocess, markdown_table, percentile, write_results
from tests.redis_server import RedisServer, free_loopback_port

TOKENS = {
    "rpm": "rpm=60",
    "tpm": "tpm=3000",
    "streams": "streams=4",
    "page": "priority=interactive",
    "batch": "priority=bulk",
    "shared": "",
    "fair-a": "",
    "fair-b": "",
}
REPLICA_FLAGS = [
    "--backend", "vllm", "--num-threads", "1", "--kv-cache-space", "0.5", "--max-model-len", "2048",
    "--no-knowledge-base", "--max-concurrent", "6", "--max-queue", "128", "--shutdown-grace", "5",
]  # fmt: skip
SLOTS = 12  # --max-concurrent x replicas


def secret(name: str) -> str:
    return f"{name}-bench-token-0001"


class Fleet:
    """Redis, two replicas pinned to a core each, two bridges; replicas can be killed and restarted."""

    def __init__(self, workdir: Path, data_dir: str) -> None:
        self.workdir = workdir
        self.data_dir = data_dir
        self.redis = RedisServer(workdir)
        self.tokens = workdir / "tokens"
        lines = [f"{name}:{secret(name)}" + (f":{options}" if options else "") for name, options in TOKENS.items()]
        self.tokens.write_text("\n".join(lines) + "\n")
        self.replicas: list[ChatllmSubprocess | None] = [None, None]
        self.ports = [free_loopback_port() for _ in range(4)]  # grpc 0, grpc 1, metrics 0, metrics 1
        self.bridges: list[ChatllmSubprocess] = []
        self.urls: list[str] = []
        self.starts = 0

    def common(self) -> list[str]:
        return ["--state-store", self.redis.url(0), "--token-file", str(self.tokens)]

    def start_replica(self, index: int, *extra: str) -> None:
        self.starts += 1
        args = ["server", "--grpc-host", "127.0.0.1", "--grpc-port", str(self.ports[index])]
        args += ["--metrics-port", str(self.ports[2 + index]), "--data-dir", self.data_dir, *REPLICA_FLAGS]
        env = {"VLLM_CPU_OMP_THREADS_BIND": str(sorted(os.sched_getaffinity(0))[index % os.cpu_count()])}  # type: ignore[operator]
        log = self.workdir / f"replica-{index}-{self.starts}.log"
        self.replicas[index] = ChatllmSubprocess([*args, *self.common(), *extra], log, env)

    def wait_ready(self) -> None:
        for replica in self.replicas:
            assert replica is not None
            replica.wait_for(r"ready: ", 900)

    def start(self) -> None:
        self.redis.start()
        for index in range(2):
            self.start_replica(index)
        self.wait_ready()
        upstream = ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])
        for index in range(2):
            args = ["bridge", "--host", "127.0.0.1", "--port", "0", "--upstream", upstream, *self.common()]
            bridge = ChatllmSubprocess(args, self.workdir / f"bridge-{index}.log")
            self.bridges.append(bridge)
            port = bridge.wait_for(r"HTTP listening on [^:\s]+:(\d+)", 120).group(1)
            self.urls.append(f"http://127.0.0.1:{port}")

    def kill(self, index: int) -> None:
        replica = self.replicas[index]
        assert replica is not None
        os.killpg(replica.proc.pid, signal.SIGKILL)
        replica.proc.wait(30)
        replica.stop()

    def restart_all(self, *extra: str) -> None:
        for index, replica in enumerate(self.replicas):
            if replica is not None:
                replica.stop()
            self.start_replica(index, *extra)
        self.wait_ready()

    def limit_check_p99(self, index: int) -> dict[str, float]:
        """p99 of chatllm_limit_check_seconds per step, from a replica's histogram (bucket upper bounds)."""
        text = requests.get(f"http://127.0.0.1:{self.ports[2 + index]}/metrics", timeout=10).text
        found: dict[str, list[tuple[float, float]]] = {}
        for labels, count in re.findall(r"^chatllm_limit_check_seconds_bucket\{([^}]*)\} (\S+)$", text, re.MULTILINE):
            le, step_label = re.search(r'le="([^"]+)"', labels), re.search(r'step="(\w+)"', labels)
            assert le is not None and step_label is not None
            found.setdefault(step_label.group(1), []).append((float(le.group(1)), float(count)))
        p99 = {}
        for step, buckets in found.items():
            buckets.sort()
            total = buckets[-1][1]
            p99[step] = next(bound for bound, count in buckets if count >= 0.99 * total) if total else 0.0
        return p99

    def stop(self) -> None:
        for process in [*self.bridges, *(r for r in self.replicas if r is not None)]:
            process.stop()
        self.redis.stop()


def sender(session: aiohttp.ClientSession, fleet: Fleet, token: str, tokens: int, priority: str | None = None) -> Any:
    async def send(index: int) -> load.Call:
        url = fleet.urls[index % len(fleet.urls)]
        return await load.chat(session, url, token, secret(token), tokens, index, priority)

    return send


async def limits_leg(fleet: Fleet, session: aiohttp.ClientSession, duration: float) -> dict[str, Any]:
    start = time.time()
    until = start + duration
    calls: dict[str, list[load.Call]] = {"rpm": [], "tpm": [], "streams": []}

    async def kill_half_way() -> None:
        await asyncio.sleep(duration / 2)
        fleet.kill(0)

    await asyncio.gather(
        load.open_loop(sender(session, fleet, "rpm", 16), 3.0, until, calls["rpm"]),  # 3x 60 per minute
        load.open_loop(sender(session, fleet, "tpm", 32), 2.5, until, calls["tpm"]),  # ~3x 3000 tokens a minute
        load.closed_loop(sender(session, fleet, "streams", 64), 12, until, calls["streams"]),  # 3x 4 streams
        kill_half_way(),
    )
    admitted = [c for c in calls["rpm"] if not c.limited]
    tpm_points = [(c.sent, float(c.tokens)) for c in calls["tpm"] if not c.limited]
    streams = [(c.first, c.ended) for c in calls["streams"] if c.status == 200 and c.first is not None]
    return {
        "offered": {name: len(items) for name, items in calls.items()},
        "rpm_most_in_60s": load.most_in_window([(c.sent, 1.0) for c in admitted]),
        "tpm_most_in_60s": load.most_in_window(tpm_points),
        "streams_most_at_once": load.most_at_once(streams),
        "failed": {name: sum(1 for c in items if c.status not in (200, 429)) for name, items in calls.items()},
        "limit_check_p99_s": fleet.limit_check_p99(1),
    }


async def priority_leg(fleet: Fleet, session: aiohttp.ClientSession, mode: str, duration: float) -> dict[str, Any]:
    """A bulk flood and interactive requests one at a time; `fcfs`: the same from one token, no class."""
    bulk_token, chat_token = ("batch", "page") if mode == "priority" else ("shared", "shared")
    bulk_class, chat_class = ("bulk", "interactive") if mode == "priority" else (None, None)
    until = time.time() + duration
    bulk: list[load.Call] = []
    chats: list[load.Call] = []

    async def interactive() -> None:
        send = sender(session, fleet, chat_token, 8, chat_class)
        index = 0
        await asyncio.sleep(5)  # the flood fills the fleet first
        while time.time() < until:
            chats.append(await send(index))
            index += 1
            await asyncio.sleep(0.5)

    started = time.time()
    await asyncio.gather(
        load.closed_loop(sender(session, fleet, bulk_token, 48, bulk_class), 2 * SLOTS, until, bulk), interactive()
    )
    elapsed = time.time() - started
    return {
        "interactive_ttft_p95_s": percentile([c.ttft for c in chats if c.ttft is not None], 95),
        "interactive_count": len(chats),
        "bulk_tokens_per_s": sum(c.completion_tokens for c in bulk if c.status == 200) / elapsed,
        "failed": sum(1 for c in [*bulk, *chats] if c.status != 200),
    }


async def idle_ttft(fleet: Fleet, session: aiohttp.ClientSession, count: int) -> float:
    send = sender(session, fleet, "page", 8, "interactive")
    calls = [await send(index) for index in range(count)]
    return percentile([c.ttft for c in calls if c.ttft is not None], 95)


async def fairness_leg(fleet: Fleet, session: aiohttp.ClientSession, duration: float, window: float) -> dict[str, Any]:
    until = time.time() + duration
    calls: dict[str, list[load.Call]] = {"fair-a": [], "fair-b": []}
    started = time.time()
    await asyncio.gather(
        load.closed_loop(sender(session, fleet, "fair-a", 32), 30, until, calls["fair-a"]),
        load.closed_loop(sender(session, fleet, "fair-b", 32), 8, until, calls["fair-b"]),
    )
    indexes: list[dict[str, Any]] = []
    edge = started + 10  # the backlog forms first
    while edge + window <= until:
        served = [
            sum(c.tokens for c in items if c.status == 200 and edge <= c.ended < edge + window)
            for items in calls.values()
        ]
        indexes.append({"window_start_s": round(edge - started), "tokens": served, "jain": load.jain(served)})
        edge += window
    return {"windows": indexes, "worst_jain": min((w["jain"] for w in indexes), default=0.0)}


async def run(fleet: Fleet, quick: bool) -> dict[str, Any]:
    duration = 60.0 if quick else 180.0
    leg = 40.0 if quick else 75.0
    values: dict[str, Any] = {}
    progress = fleet.workdir / "values.json"  # each leg's numbers as soon as it ends

    def keep(name: str, value: Any) -> None:
        values[name] = value
        progress.write_text(json.dumps(values, indent=2))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        keep("limits", await limits_leg(fleet, session, duration))
        await asyncio.to_thread(fleet.restart_all)  # the killed replica back, the counters fresh
        keep("idle_ttft_p95_s", await idle_ttft(fleet, session, 10 if quick else 30))
        legs: dict[str, list[dict[str, Any]]] = {"priority": [], "fcfs": []}
        for mode in ("priority", "fcfs") * (1 if quick else 2):  # alternating
            legs[mode].append(await priority_leg(fleet, session, mode, leg))
            keep("priority", legs)
        window = 30.0 if quick else 60.0
        keep("fairness", await fairness_leg(fleet, session, 2 * window + 15, window))
        await asyncio.to_thread(fleet.restart_all, "--no-fair-share")
        keep("fairness_without_vtc", await fairness_leg(fleet, session, 2 * window + 15, window))
    return values


def rows(values: dict[str, Any]) -> list[list[Any]]:
    limits = values["limits"]
    checks = limits["limit_check_p99_s"]
    check_ms = sum(checks.values()) * 1000
    priority, fcfs = values["priority"]["priority"], values["priority"]["fcfs"]
    ttft = max(leg["interactive_ttft_p95_s"] for leg in priority)
    fcfs_ttft = max(leg["interactive_ttft_p95_s"] for leg in fcfs)
    bulk = sum(leg["bulk_tokens_per_s"] for leg in priority) / sum(leg["bulk_tokens_per_s"] for leg in fcfs)
    idle = values["idle_ttft_p95_s"]
    fair, unfair = values["fairness"]["worst_jain"], values["fairness_without_vtc"]["worst_jain"]

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    rpm, tpm = limits["rpm_most_in_60s"] / 60, limits["tpm_most_in_60s"] / 3000
    return [
        [
            "rpm=60, offered 3x",
            f"{limits['rpm_most_in_60s']:.0f} admitted in the busiest 60 s ({rpm:.2f}x)",
            "<= 1.05x",
            met(rpm <= 1.05),
        ],
        [
            "tpm=3000, offered ~3x",
            f"{limits['tpm_most_in_60s']:.0f} tokens in the busiest 60 s ({tpm:.2f}x)",
            "<= 1.05x",
            met(tpm <= 1.05),
        ],
        [
            "streams=4, 12 clients",
            f"{limits['streams_most_at_once']} at once",
            "<= 4",
            met(limits["streams_most_at_once"] <= 4),
        ],
        [
            "limit check (admit + reserve), p99",
            f"{check_ms:.2f} ms ({', '.join(f'{k} {v * 1000:.2f}' for k, v in checks.items())})",
            "<= 2 ms",
            met(check_ms <= 2),
        ],
        [
            "interactive TTFT p95 under a bulk flood",
            f"{ttft * 1000:.0f} ms vs {idle * 1000:.0f} ms idle ({ttft / idle:.2f}x); FCFS: {fcfs_ttft * 1000:.0f} ms",
            "<= 1.5x idle",
            met(ttft <= 1.5 * idle),
        ],
        ["bulk tokens/s, priority vs FCFS", f"{bulk:.2f}x", ">= 0.9x", met(bulk >= 0.9)],
        [
            "fairness (30 vs 8 clients), worst window",
            f"Jain {fair:.3f}; without VTC {unfair:.3f}",
            ">= 0.95",
            met(fair >= 0.95),
        ],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter legs (a smoke run)")
    parser.add_argument("--no-record", action="store_true", help="print the table, write no result files")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"))
    parser.add_argument("--workdir", help="folder for logs (default: a temp dir)")
    parser.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    args = parser.parse_args()
    # `timeout` stops a run with SIGTERM: unwind, so the fleet's processes and Redis stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        fleet = Fleet(workdir, args.data_dir)
        try:
            fleet.start()
            values = asyncio.run(run(fleet, args.quick))
        finally:
            fleet.stop()
    table = markdown_table(["check", "result", "target", "met"], rows(values))
    print(table)
    if not args.no_record:
        run_kind = "quick" if args.quick else "full"
        body = f"2 replicas (vLLM, one core each, --max-concurrent 6) + 2 bridges + Redis; {run_kind} run.\n\n{table}"
        body += f"\n\nNote: {args.note}\n" if args.note else ""
        print(f"written: {write_results('fleet', 'Fleet: shared limits, priorities, fair share', body, values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
