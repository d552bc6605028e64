"""The short version of bench/soak.py through a real `chatllm serve` over the fake engine (the stack's
promises, not the model's; the recorded soak runs use the real engines): mid-stream disconnects,
disconnect-to-abort per protocol and during a long prompt, 5x overload, fuzzed inputs, kill -9 during
an ingest (real embedder and milvus-lite), SIGTERM under 32 streams.

Runs the benchmark script as a program (tests do not import bench/) and asserts the counts the soak
promises (0 leaked, 0 hung, 0 5xx, 0 partial, 0 dropped, exit 0), not the refusal latency: timings live
in bench/results/soak-*.md, measured on a quiet machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.bench_programs import run_bench_program
from tests.conftest import FAKE_CHATLLM
from tests.fake_chatllm import STALL_ENV


async def test_quick_soak_leaks_hangs_fails_and_drops_nothing(data_dir: Path, output_dir: Path) -> None:
    args = ["--backend", "hf", "--quick", "--no-record", "--data-dir", str(data_dir), "--workdir", str(output_dir)]
    args += ["--chatllm-module", FAKE_CHATLLM]
    stall = {STALL_ENV: "0.05"}  # a word every 50 ms: streams are still running when the soak cuts them
    report = await asyncio.to_thread(run_bench_program, "soak.py", args, output_dir / "soak.json", env=stall)
    plan, values = report["plan"], report["values"]
    table = "\n".join(" | ".join(map(str, row)) for row in report["rows"])
    assert values["disconnects"] == {"count": plan["disconnects"], "leaked": 0}, table
    aborts = values["disconnect_to_abort"]
    assert aborts["unlogged"] == 0, table  # every client that left was dropped by the server
    by_protocol = aborts["by_protocol"]
    assert set(by_protocol) == {"HTTP JSON", "NUL stream", "SSE", "OpenAI SSE", "WebSocket", "gRPC", "during prefill"}
    assert all(row["engine_failures"] == 0 for row in by_protocol.values()), table
    assert by_protocol["during prefill"]["count"] == plan["prefill_disconnects"]

    overload = values["overload"]
    capacity = plan["max_concurrent"] + plan["max_queue"]
    assert overload["offered"] == plan["overload_factor"] * capacity
    assert overload["hung"] == 0 and overload["accepted_unanswered"] == 0, table
    assert overload["refused"] >= (plan["overload_factor"] - 1) * capacity // 2, table  # at most half freed slots
    assert set(overload["refused_statuses"]) <= {429, 503}

    assert values["fuzz"]["server_errors"] == 0 and values["fuzz"]["hung"] == 0, values["fuzz"]["examples"]
    assert values["fuzz"]["still_answers"]
    killed = values["kill_during_ingest"]
    assert (killed["kills"], killed["partial"], killed["orphan_chunks"]) == (plan["kills"], 0, 0), table
    drain = values["drain"]
    assert drain["completed"] == plan["drain_streams"] and drain["exit_code"] == 0, drain["failures"]
