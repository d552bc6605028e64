"""Replica fail-over: two `chatllm server` replicas behind one `chatllm bridge`, a steady
load of NUL-delimited streams, and one replica killed with SIGKILL in the middle of it.

The bridge (bridge/routing/) routes over both replicas, health-checks them, and moves a
call that failed with UNAVAILABLE to the other replica until its first response. Each replica admits
`max_concurrent` streams and queues the rest, so at the kill the victim holds streams
that are answering (they must end with a readable error) and requests that are
accepted but not started (they must be retried on the other replica and complete).
Every request is counted: sent, completed, failed with an error object or status,
failed without one (a cut stream), hung; the retried ones are counted from the bridge's own
`chatllm_bridge_routing_retries_total` (calls moved off a replica before it answered); /readyz is
polled throughout.

    flock /tmp/chatllm-engine.lock .venv/bin/python bench/failover.py [--backend hf|vllm] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ChatllmSubprocess, add_chatllm_module_argument, markdown_table, write_results
from bench.soak_load import Outcome, http_stream
from chatllm.clients import AsyncChatClient

ENGINE_FLAGS = {
    "hf": ["--backend", "hf", "--kv-cache-space", "0.5"],
    "vllm": ["--backend", "vllm", "--kv-cache-space", "0.5", "--max-model-len", "2048"],
}
CALL_LIMIT_S = 120.0  # a request unanswered after this is hung
RETRIES = re.compile(r"^chatllm_bridge_routing_retries_total\{[^}]*\} (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Plan:
    clients: int = 8  # concurrent clients, each sending its next request as soon as one ends
    tokens: int = 24  # new tokens per request (EOS ignored)
    max_concurrent: int = 2  # per replica; the rest of its share waits in its queue
    max_queue: int = 16
    before_kill: int = 16  # requests completed before the kill
    after_kill: int = 24  # requests completed after it, then the load stops


QUICK = Plan(before_kill=6, after_kill=10)


@dataclass
class Tally:
    outcomes: list[tuple[float, Outcome]] = field(default_factory=list)  # (sent at, outcome)
    readiness: list[tuple[float, int]] = field(default_factory=list)  # (at, /readyz status)
    killed_at: float = 0.0
    streaming: int = 0  # requests that received their first object and have not ended
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def completed(self, after: float = 0.0) -> int:
        return sum(1 for sent, o in self.outcomes if o.status == 200 and sent >= after)


async def client_loop(session: aiohttp.ClientSession, url: str, plan: Plan, tally: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        sent, first_object = time.monotonic(), asyncio.Event()
        request = asyncio.create_task(http_stream(session, url, plan.tokens, CALL_LIMIT_S, first_object))
        started = asyncio.create_task(first_object.wait())
        await asyncio.wait({request, started}, return_when=asyncio.FIRST_COMPLETED)
        counted = started.done()
        tally.streaming += counted
        try:
            tally.outcomes.append((sent, await request))
        finally:
            started.cancel()
            tally.streaming -= counted


async def readiness_loop(session: aiohttp.ClientSession, url: str, tally: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=10)) as response:
                tally.readiness.append((time.monotonic(), response.status))
        except (aiohttp.ClientError, TimeoutError):
            tally.readiness.append((time.monotonic(), 0))
        await asyncio.sleep(0.1)  # a probe's period, not synchronisation


async def wait_until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def kill_when_queued(victim: ChatllmSubprocess, port: int, plan: Plan, tally: Tally) -> dict[str, int]:
    """SIGKILL the victim once `before_kill` requests completed and it holds answering streams (every
    slot of both replicas is streaming) and queued requests; returns the victim's load then."""
    async with AsyncChatClient(f"127.0.0.1:{port}") as client:
        seen: dict[str, int] = {}

        async def ready_to_kill() -> bool:
            if tally.completed() < plan.before_kill:
                return False
            info = await client.server_info()
            seen.update(active=info.active_requests, waiting=info.waiting_requests)
            all_slots_streaming = tally.streaming >= 2 * plan.max_concurrent
            return info.active_requests == plan.max_concurrent and info.waiting_requests > 0 and all_slots_streaming

        await wait_until(ready_to_kill, 600, "the replica never held answering and queued requests")
        victim.proc.kill()
        tally.killed_at = time.monotonic()
    return seen


async def retries(session: aiohttp.ClientSession, url: str) -> int:
    """Calls the bridge moved to another replica because theirs failed before answering."""
    async with session.get(url + "/metrics") as response:
        return round(sum(float(m) for m in RETRIES.findall(await response.text())))


def replica_threads(backend: str, index: int, cpus: list[int]) -> dict[str, str]:
    """Half the CPUs for each replica: two engines that both spin OpenMP threads on every core
    slow each other down many times over (a real deployment gives each pod its own cores)."""
    half = cpus[index * len(cpus) // 2 : (index + 1) * len(cpus) // 2] or cpus[:1]
    if backend == "vllm":
        return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, half))}
    return {"OMP_NUM_THREADS": str(len(half)), "CHATLLM_NUM_THREADS": str(len(half))}


def start_stack(
    plan: Plan, backend: str, data_dir: str, workdir: Path, program: str
) -> tuple[list[ChatllmSubprocess], list[int], ChatllmSubprocess]:
    """Replicas A and B (ready), their gRPC ports, and the bridge in front of both."""
    replicas = []
    cpus = sorted(os.sched_getaffinity(0))
    for index, name in enumerate(("a", "b")):
        args = ["server", *ENGINE_FLAGS[backend], "--grpc-host", "127.0.0.1", "--grpc-port", "0"]
        args += ["--metrics-port", "0", "--no-knowledge-base", "--data-dir", data_dir, "--shutdown-grace", "5"]
        args += ["--max-concurrent", str(plan.max_concurrent), "--max-queue", str(plan.max_queue)]
        replicas.append(
            ChatllmSubprocess(
                args, workdir / f"replica-{name}.log", env=replica_threads(backend, index, cpus), program=program
            )
        )
    ports = [int(r.wait_for(r"gRPC listening on [^:\s]+:(\d+)", 120).group(1)) for r in replicas]
    for replica in replicas:
        replica.wait_for(r"ready: ", 600)
    upstream = ",".join(f"127.0.0.1:{port}" for port in ports)
    bridge_args = ["bridge", "--host", "127.0.0.1", "--port", "0", "--upstream", upstream, "--shutdown-grace", "5"]
    bridge = ChatllmSubprocess(bridge_args, workdir / "bridge.log")
    return replicas, ports, bridge


async def failover(plan: Plan, backend: str, data_dir: str, workdir: Path, program: str) -> dict[str, Any]:
    replicas, ports, bridge = start_stack(plan, backend, data_dir, workdir, program)
    try:
        url = "http://127.0.0.1:" + bridge.wait_for(r"HTTP listening on [^:\s]+:(\d+)", 60).group(1)
        tally, stop = Tally(), asyncio.Event()
        async with aiohttp.ClientSession() as session:

            async def bridge_ready() -> bool:
                async with session.get(url + "/readyz") as response:
                    return response.status == 200

            await wait_until(bridge_ready, 30, "the bridge never became ready")
            load = [asyncio.create_task(client_loop(session, url, plan, tally, stop)) for _ in range(plan.clients)]
            probe = asyncio.create_task(readiness_loop(session, url, tally, stop))
            try:
                at_kill = await kill_when_queued(replicas[0], ports[0], plan, tally)

                async def enough_after_kill() -> bool:
                    return tally.completed(after=tally.killed_at) >= plan.after_kill

                await wait_until(enough_after_kill, 600, "the surviving replica stopped answering")
            finally:
                stop.set()  # each client finishes the request it is in, within CALL_LIMIT_S
                await asyncio.gather(*load, probe)
            retried = await retries(session, url)
    finally:
        for process in (*replicas, bridge):
            process.stop()
    return summarise(plan, backend, tally, at_kill, retried)


def summarise(plan: Plan, backend: str, tally: Tally, at_kill: dict[str, int], retried: int) -> dict[str, Any]:
    outcomes = [o for _, o in tally.outcomes]
    failed = [o for o in outcomes if o.status >= 400]
    not_ready = [status for at, status in tally.readiness if status != 200]
    return {
        "plan": asdict(plan),
        "backend": backend,
        "victim_at_kill": at_kill,  # its running (answering) and queued (not started) requests
        "sent": len(outcomes),
        "completed": sum(1 for o in outcomes if o.status == 200),
        "completed_after_kill": tally.completed(after=tally.killed_at),
        "failed_with_error": len(failed),
        "failure_statuses": dict(Counter(o.status for o in failed)),
        "failed_without_error": sum(1 for o in outcomes if o.status == 0),
        "hung": sum(1 for o in outcomes if o.hung),
        "retried": retried,
        "slowest_completed_seconds": round(max((o.seconds for o in outcomes if o.status == 200), default=0.0), 1),
        # Each request that did not complete: when it was sent relative to the kill, and how it ended.
        "not_completed": [
            {"sent_after_kill_s": round(sent - tally.killed_at, 2), "status": o.status, "seconds": round(o.seconds, 1)}
            for sent, o in tally.outcomes
            if o.status != 200
        ],
        "readiness_probes": len(tally.readiness),
        "readiness_not_ready": len(not_ready),
        "load": f"{tally.load[0]:.1f} / {os.getloadavg()[0]:.1f}",
    }


def report(result: dict[str, Any]) -> str:
    at_kill = result["victim_at_kill"]
    rows = [
        ["requests sent", result["sent"]],
        ["completed", f"{result['completed']} ({result['completed_after_kill']} sent after the kill)"],
        ["retried on the surviving replica", result["retried"]],
        ["failed with a readable error", f"{result['failed_with_error']} (statuses {result['failure_statuses']})"],
        ["failed without one (cut stream)", result["failed_without_error"]],
        ["hung (no end within the time limit)", f"{result['hung']} (limit {CALL_LIMIT_S:g} s)"],
        ["slowest completed request", f"{result['slowest_completed_seconds']} s"],
        ["victim at the kill: answering / queued", f"{at_kill.get('active', 0)} / {at_kill.get('waiting', 0)}"],
        ["bridge /readyz not ready", f"{result['readiness_not_ready']} of {result['readiness_probes']} probes"],
        ["machine load (1-minute average) at start / end", result["load"]],
    ]
    plan = result["plan"]
    return (
        f"Two `chatllm server --backend {result['backend']}` replicas (`--max-concurrent {plan['max_concurrent']}` "
        f"each) behind one `chatllm bridge --upstream A,B`; {plan['clients']} clients send NUL streams of "
        f"{plan['tokens']} tokens back to back; replica A gets SIGKILL once it has queued requests.\n\n"
        + markdown_table(["", "count"], rows)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(ENGINE_FLAGS), default="hf")
    parser.add_argument("--quick", action="store_true", help="the short plan the test suite runs")
    parser.add_argument("--no-record", action="store_true", help="print only; write nothing to bench/results/")
    parser.add_argument("--logs", type=Path, help="keep the replicas' and the bridge's logs in this folder")
    parser.add_argument("--data-dir", default=str(REPO / ".cache" / "test-data"), help="where the model is")
    parser.add_argument("--report", type=Path, help="also write the result as JSON to this file")
    add_chatllm_module_argument(parser)
    args = parser.parse_args()
    plan = QUICK if args.quick else Plan()
    data_dir = args.data_dir
    with tempfile.TemporaryDirectory(prefix="chatllm-failover-") as workdir:
        logs = args.logs or Path(workdir)
        logs.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(failover(plan, args.backend, data_dir, logs, args.chatllm_module))
    if args.report:
        args.report.write_text(json.dumps(result, indent=2))
    body = report(result)
    print(body)
    if not args.no_record:
        print(write_results("failover", "Replica fail-over under load", body, result))
    ok = result["hung"] == 0 and result["failed_without_error"] == 0 and result["readiness_not_ready"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
