"""Routing benchmark: what the bridge's replica picker gives back against round robin, a single
replica, and SMG (Shepherd Model Gateway, `--policy cache_aware`) in front of our workers.

Legs, each on fresh engines (only that leg's engines up; the same prompts for every leg):
- `round-robin`, `prefix`: two `chatllm server` replicas behind one `chatllm bridge --routing ...`;
- `single`: one replica behind a bridge (the cache a conversation would get with no fleet);
- `smg`: `smg launch --policy cache_aware` in front of two single-replica `chatllm serve`.
Every replica: vLLM, fp32, one CPU thread (its own core), `--kv-cache-space` sized so one replica
holds about 3/4 of the tenants' documents (KV_CACHE_GIB), as a fleet is sized to need both caches.

Workloads (bench/routing_load.py), 4 clients closed loop: (a) `tenants`: 8 tenants, ~768-token
document + short unique question; (b) `conversations`: 6 x 6 turns, interleaved; (c) `unique`:
prompts that share nothing (negative control). Reported per leg: cluster prefix-cache hit rate
(cached / prompt tokens, from each answer's usage), TTFT p50/p90, output tok/s, and for (c) each
replica's share of the requests. Legs alternate between rounds (ABCD, then DCBA). Also measured:
--max-round-trim exact vs stable (WebSocket conversations, --max_round 2, on the single leg's
replica) and the routing decision's own time with 100k blocks indexed.

    flock /tmp/chatllm-heavy.lock .venv/bin/python bench/routing.py [--rounds 2] [--no-record]

In pieces (each well under 20 minutes of the heavy lock), then recorded together:

    flock /tmp/chatllm-heavy.lock .venv/bin/python bench/routing.py --round 1 --legs round-robin,prefix --pieces P
    ... --round 1 --legs single,smg --pieces P; --round 2 --legs smg,single ...; --round 2 --legs prefix,round-robin ...
    flock /tmp/chatllm-heavy.lock .venv/bin/python bench/routing.py --record-pieces P
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import routing_load as load
from bench.common import ChatllmSubprocess, write_results
from bench.routing_decision import decision_times
from bench.routing_report import report

LEGS = ("round-robin", "prefix", "single", "smg")
KV_CACHE_GIB = "0.2"  # ~4,600 tokens of SmolLM2 fp32: 3/4 of the 8 tenants' documents
ENGINE = ["--backend", "vllm", "--precision", "fp32", "--num-threads", "1", "--kv-cache-space", KV_CACHE_GIB]
ENGINE += ["--max-model-len", "2048", "--no-knowledge-base", "--shutdown-grace", "5"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Leg:
    """The processes of one leg; `url` is its OpenAI front, `replica_metrics` each replica's /metrics."""

    def __init__(self, name: str, data_dir: str, logs: Path) -> None:
        self.name, self.data_dir, self.logs = name, data_dir, logs
        self.procs: list[ChatllmSubprocess] = []
        self.smg: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ws_urls: dict[str, str] = {}
        self.replica_metrics: list[str] = []

    def _start(self, args: list[str], log: str, core: int) -> ChatllmSubprocess:
        env = {"VLLM_CPU_OMP_THREADS_BIND": str(core)}
        proc = ChatllmSubprocess([*args, "--data-dir", self.data_dir], self.logs / f"{self.name}-{log}.log", env)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        cores = sorted(os.sched_getaffinity(0))
        if self.name == "smg":
            ports = [free_port() for _ in range(2)]
            for i, port in enumerate(ports):
                args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--grpc-host", "127.0.0.1"]
                self._start([*args, "--grpc-port", "0", *ENGINE], f"serve-{i}", cores[i % len(cores)])
            for proc in self.procs:
                proc.wait_for(r"ready: ", 600)
            workers = [f"http://127.0.0.1:{port}" for port in ports]
            self.replica_metrics = [w + "/metrics" for w in workers]
            self.url = self._start_smg(workers)
            return
        count = 1 if self.name == "single" else 2
        targets = []
        for i in range(count):
            metrics = free_port()
            args = ["server", "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", str(metrics)]
            proc = self._start([*args, *ENGINE], f"replica-{i}", cores[i % len(cores)])
            targets.append("127.0.0.1:" + proc.wait_for(r"gRPC listening on [^:\s]+:(\d+)", 120).group(1))
            self.replica_metrics.append(f"http://127.0.0.1:{metrics}/metrics")
        for proc in self.procs:
            proc.wait_for(r"ready: ", 600)
        routing = "prefix" if self.name == "single" else self.name
        self.url = self._bridge(",".join(targets), ["--routing", routing], "bridge")
        if self.name == "single":  # the --max-round-trim comparison runs on this replica
            for trim in ("exact", "stable"):
                url = self._bridge(targets[0], ["--max_round", "2", "--max-round-trim", trim], f"bridge-{trim}")
                self.ws_urls[trim] = url.replace("http://", "ws://") + "/"

    def _bridge(self, upstream: str, extra: list[str], log: str) -> str:
        args = ["bridge", "--host", "127.0.0.1", "--port", "0", "--upstream", upstream, *extra]
        proc = ChatllmSubprocess(args, self.logs / f"{self.name}-{log}.log")
        self.procs.append(proc)
        url = "http://127.0.0.1:" + proc.wait_for(r"HTTP listening on [^:\s]+:(\d+)", 60).group(1)
        _wait_ok(url + "/readyz", 60)
        return url

    def _start_smg(self, workers: list[str]) -> str:
        port, smg = free_port(), shutil.which("smg", path=str(Path(sys.executable).parent)) or "smg"
        argv = [smg, "launch", "--host", "127.0.0.1", "--port", str(port), "--policy", "cache_aware"]
        argv += ["--worker-urls", *workers, "--prometheus-port", str(free_port())]
        with open(self.logs / "smg.log", "w") as log:
            self.smg = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while _healthy_workers(url) < len(workers):
            if time.monotonic() > deadline or self.smg.poll() is not None:
                raise RuntimeError("smg never took the workers: see smg.log")
            time.sleep(0.5)
        return url

    def served(self) -> list[float]:
        """Generate calls each replica answered so far."""
        pattern = re.compile(r'^chatllm_requests_total\{code="OK",method="Generate"\} (\S+)$', re.MULTILINE)
        counts = []
        for url in self.replica_metrics:
            match = pattern.search(requests.get(url, timeout=10).text)
            counts.append(float(match.group(1)) if match else 0.0)
        return counts

    def stop(self) -> None:
        if self.smg is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.smg.pid, signal.SIGKILL)
            self.smg.wait(10)
        for proc in reversed(self.procs):
            proc.stop()


def _wait_ok(url: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(url)


def _healthy_workers(url: str) -> int:
    try:
        workers = requests.get(url + "/workers", timeout=5).json().get("workers", [])
    except (requests.RequestException, ValueError):
        return 0
    return sum(1 for w in workers if w.get("is_healthy"))


@contextlib.contextmanager
def running(name: str, data_dir: str, logs: Path) -> Iterator[Leg]:
    leg = Leg(name, data_dir, logs)
    try:
        leg.start()
        yield leg
    finally:
        leg.stop()


async def measure(leg: Leg, quick: bool) -> dict[str, Any]:
    scale = 2 if quick else 1
    result: dict[str, Any] = {}
    tenants = await load.closed_loop(leg.url, load.tenant_prompts(8, 48 // scale), clients=4)
    result["tenants"] = tenants.summary()
    result["conversations"] = (await load.conversations(leg.url, 6, 6 // scale)).summary()
    before = leg.served()
    result["unique"] = (await load.closed_loop(leg.url, load.unique_prompts(32 // scale), clients=4)).summary()
    shares = [after - was for after, was in zip(leg.served(), before, strict=True)]
    result["unique"]["replica_share"] = [round(s / sum(shares), 3) for s in shares] if sum(shares) else []
    for trim, url in leg.ws_urls.items():
        result[f"trim_{trim}"] = (await load.websocket_rounds(url, 3, 8 // scale, salt=700)).summary()
    return result


def round_order(n: int) -> tuple[str, ...]:
    """Round n (from 0) runs the legs in order, the next one in reverse (ABCD, DCBA, ...)."""
    return LEGS if n % 2 == 0 else tuple(reversed(LEGS))


def run(
    rounds: range, legs: tuple[str, ...], quick: bool, data_dir: str, logs: Path, pieces: Path | None
) -> dict[str, Any]:
    """Each leg's results, one per round (its number in "round"); with `pieces`, each leg is added to
    that file as soon as it ends, so a run stopped part-way keeps the legs it finished."""
    results: dict[str, list[dict[str, Any]]] = {leg: [] for leg in LEGS}
    for n in rounds:
        for name in (leg for leg in round_order(n) if leg in legs):
            print(f"round {n + 1}: {name}", flush=True)
            with running(name, data_dir, logs) as leg:
                results[name].append({"round": n + 1, **asyncio.run(measure(leg, quick))})
            if pieces:
                add_piece(pieces, {"legs": {name: results[name][-1:]}})
    return {"legs": results}


def add_piece(path: Path, piece: dict[str, Any]) -> dict[str, Any]:
    """Merge one run's legs into the pieces file at `path` (a benchmark recorded in pieces)."""
    data = json.loads(path.read_text()) if path.exists() else {"legs": {leg: [] for leg in LEGS}}
    for leg, results in piece["legs"].items():
        done = {r["round"] for r in results}
        data["legs"][leg] = sorted([r for r in data["legs"][leg] if r["round"] not in done] + results, key=_round)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def _round(result: dict[str, Any]) -> int:
    return int(result["round"])


def record(data: dict[str, Any], no_record: bool, note: str = "") -> None:
    data = {**data, "decision": decision_times()}
    body = report(data) + (f"\n\nNote: {note}\n" if note else "")
    print(body)
    if no_record:
        print(json.dumps(data, indent=2))
        return
    title = "Routing: prefix-aware picker vs round robin, a single replica and SMG cache_aware"
    print(write_results("routing", title, body, data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all legs (order alternates)")
    parser.add_argument("--round", type=int, help="run only this round (from 1), in its place in the alternation")
    parser.add_argument("--legs", default=",".join(LEGS), help="the legs to run, comma-separated (default: all)")
    parser.add_argument("--quick", action="store_true", help="half the requests (a smoke run)")
    parser.add_argument("--data-dir", default=str(Path.home() / ".local/share/chatllm"))
    parser.add_argument(
        "--pieces",
        type=Path,
        help="run a piece: add this run's legs to this JSON file instead of recording; "
        "--record-pieces FILE reports and records them once every leg has its rounds",
    )
    parser.add_argument("--record-pieces", type=Path, help="report and record the pieces file (runs no leg)")
    parser.add_argument("--no-record", action="store_true", help="print only; write nothing to bench/results")
    parser.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    args = parser.parse_args()
    if args.record_pieces:
        record(json.loads(args.record_pieces.read_text()), args.no_record, args.note)
        return 0
    legs = tuple(args.legs.split(","))
    if unknown := set(legs) - set(LEGS):
        parser.error(f"unknown legs: {', '.join(sorted(unknown))} (legs: {', '.join(LEGS)})")
    rounds = range(args.round - 1, args.round) if args.round else range(args.rounds)
    logs = Path(tempfile.mkdtemp(prefix="chatllm-routing-"))
    print(f"logs: {logs}", flush=True)
    # `timeout` and the heavy lock's callers stop a run with SIGTERM: unwind, so every leg's processes stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data = run(rounds, legs, args.quick, args.data_dir, logs, args.pieces)
    if args.pieces:
        print(json.dumps(json.loads(args.pieces.read_text())["legs"], indent=2)[:4000])
        return 0
    record(data, args.no_record, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
