"""Two `chatllm server` replicas behind one `chatllm bridge --upstream A,B` under a steady
load of NUL streams; replica A is killed with SIGKILL while it holds answering and queued
requests (bench/failover.py --quick, run as a program, with replicas over the fake engine: the promise
is the bridge's and gRPC's; the recorded runs use real engines).

What the bridge's routing (bridge/routing/) promises, counted request by request:
requests A had accepted but not started are retried on B and complete; streams A was
answering end with a readable error; nothing hangs or is cut without an error; /readyz
stays ready because B is serving. Figures of a full run: bench/results/failover-*.md."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.bench_programs import run_bench_program
from tests.conftest import FAKE_CHATLLM
from tests.fake_chatllm import STALL_ENV


async def test_killing_a_replica_under_load_retries_what_it_had_not_started(data_dir: Path, output_dir: Path) -> None:
    # Run as a program, as test_soak.py runs the soak (tests do not import bench/).
    args = ["--backend", "hf", "--quick", "--no-record", "--data-dir", str(data_dir), "--logs", str(output_dir)]
    args += ["--chatllm-module", FAKE_CHATLLM]
    stall = {STALL_ENV: "0.05"}  # a word every 50 ms: each replica holds answering and queued requests
    result = await asyncio.to_thread(run_bench_program, "failover.py", args, output_dir / "failover.json", env=stall)
    plan = result["plan"]
    summary = str(result)
    at_kill = result["victim_at_kill"]
    assert at_kill["waiting"] >= 1 and at_kill["active"] >= 1, summary

    # Every request ended one way or the other, within its time limit.
    assert result["hung"] == 0 and result["failed_without_error"] == 0, summary
    assert result["completed"] + result["failed_with_error"] == result["sent"], summary

    # Only streams that A was already answering failed, each with an error object the client can read.
    assert 1 <= result["failed_with_error"] <= plan["max_concurrent"], summary
    assert {int(status) for status in result["failure_statuses"]} <= {502, 503}, summary  # JSON keys are strings

    # A's queued requests (no answer yet) went to B: the bridge retried them there (before their first response).
    assert result["retried"] >= 1, summary
    assert result["completed_after_kill"] >= plan["after_kill"], summary

    # The bridge stayed ready throughout: B was serving.
    assert result["readiness_probes"] > 0 and result["readiness_not_ready"] == 0, summary
