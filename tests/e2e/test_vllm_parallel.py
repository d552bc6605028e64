"""Tensor and pipeline parallel through `chatllm server` on this CPU machine: vLLM's
worker processes (3 tensor-parallel ranks, or 2 pipeline stages) answer over gRPC,
cancel and drain like one engine, and none of them outlives a SIGTERM or a dead engine.

The built-in model has 9 attention heads and 3 KV heads: 3 divides both (2 does not),
so tensor parallel runs with 3 ranks; its 30 layers split into 2 pipeline stages.
Run under the engine lock: `flock /tmp/chatllm-engine.lock .venv/bin/python -m pytest
tests/e2e/test_vllm_parallel.py` (about 4-5 minutes on 2 cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest

from chatllm.clients import ChatClient
from chatllm.kernel.config import Config
from chatllm.proto import pb
from chatllm.server.engines.vllm_setup import numa_node_of_cpu, omp_threads_bind, vllm_build

pytestmark = pytest.mark.skipif(vllm_build() != "cpu", reason="needs vLLM's CPU build (make install puts it in .venv)")

SERVER = [
    "server",
    "--backend",
    "vllm",
    "--grpc-host",
    "127.0.0.1",
    "--grpc-port",
    "0",
    "--metrics-port",
    "0",
    "--no-knowledge-base",
    "--kv-cache-space",
    "0.25",
    "--max-model-len",
    "2048",
    "--shutdown-grace",
    "60",
    "--precision",
    "fp32",  # the answers below are checked for their words: bf16 (the default on this CPU) words them differently
]
QUESTION = "What is the capital of France?"


def start_parallel_server(chatllm_process, data_dir: Path, parallel: list[str]):
    proc = chatllm_process([*SERVER, "--data-dir", str(data_dir), *parallel], name="parallel")
    port = proc.grpc_port()
    proc.wait_for_log(r"ready: \S+ via vllm", timeout=400)
    return proc, port


def workers_of(server_pid: int) -> list[psutil.Process]:
    """vLLM's worker processes under the server (titles VLLM::Worker_TP0, VLLM::Worker_PP1, ...)."""
    found = []
    for proc in psutil.Process(server_pid).children(recursive=True):
        try:
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("VLLM::Worker"):
                found.append(proc)
        except psutil.Error:
            continue
    return sorted(found, key=lambda p: p.cmdline()[0])


def engine_processes_of(server_pid: int) -> list[psutil.Process]:
    """The engine core and its workers under the server."""
    found = []
    for proc in psutil.Process(server_pid).children(recursive=True):
        try:
            if proc.name().startswith("VLLM::"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def worker_cpus(worker: psutil.Process) -> str:
    """The CPUs vLLM pinned a worker to, in VLLM_CPU_OMP_THREADS_BIND's notation."""
    return ",".join(map(str, sorted(worker.cpu_affinity())))


def assert_gone(procs: list[psutil.Process], within: float, what: str) -> None:
    _, alive = psutil.wait_procs(procs, timeout=within)
    assert not alive, f"{what}: {[(p.pid, p.name()) for p in alive]}"


def start_checked(chatllm_process, data_dir: Path, parallel: list[str], ranks: int):  # type: ignore[no-untyped-def]
    """A parallel server, ready, whose workers are the ranks asked for, each on its own CPU share."""
    proc, port = start_parallel_server(chatllm_process, data_dir, parallel)
    workers = workers_of(proc.proc.pid)
    assert len(workers) == ranks, [w.cmdline()[0] for w in workers]
    # The server derived one CPU share per rank (vLLM alone refuses more ranks than NUMA nodes).
    config = Config.build(**{parallel[0].removeprefix("--").replace("-", "_"): ranks})
    expected = omp_threads_bind(config, sorted(os.sched_getaffinity(0)), numa_node_of_cpu())
    if expected is not None:
        assert f"VLLM_CPU_OMP_THREADS_BIND={expected} " in proc.log()
        assert [worker_cpus(w) for w in workers] == expected.split("|")
    with ChatClient(f"127.0.0.1:{port}", timeout=120) as client:
        model = client.server_info().model
        tensor = "--tensor-parallel-size" in parallel
        assert (model.tensor_parallel_size, model.pipeline_parallel_size) == ((ranks, 1) if tensor else (1, ranks))
    return proc, port, workers


def answers_and_cancels(client: ChatClient) -> None:
    # A correct answer, streamed, with its usage.
    deltas = list(client.stream(QUESTION, temperature=0.0, max_new_tokens=12))
    text = "".join(d.text for d in deltas)
    assert "Paris" in text, text
    assert sum(1 for d in deltas if d.text) > 1  # streamed in pieces, not one block
    usage = deltas[-1].final.usage
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    exact = client.chat("Count to fifty.", temperature=0.0, max_new_tokens=20, ignore_eos=True)
    assert exact.finish_reason == "length" and exact.usage.completion_tokens == 20
    # Cancel: a long answer stops in the engine as soon as its call is cancelled.
    call = client.stream("Tell me a long story.", max_new_tokens=1500, ignore_eos=True)
    assert next(call).request_id
    call.cancel()
    assert_engine_idle(client, within=15)


def test_pipeline_parallel_answers_cancels_and_drains(data_dir: Path, model_dir: Path, chatllm_process) -> None:
    proc, port, workers = start_checked(chatllm_process, data_dir, ["--pipeline-parallel-size", "2"], 2)
    with ChatClient(f"127.0.0.1:{port}", timeout=120) as client:
        answers_and_cancels(client)
        # Drain: SIGTERM while a stream runs: readiness goes, new work is refused, the stream completes.
        call = client.stream("Count slowly to one hundred.", temperature=0.0, max_new_tokens=40, ignore_eos=True)
        assert next(call).text
        rest: list[pb.GenerateResponse] = []
        reader = threading.Thread(target=lambda: rest.extend(call))
        reader.start()
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_for_log(r"shutdown requested: draining", timeout=10)
        assert not client.ready()
        with pytest.raises(grpc.RpcError) as refused:
            client.chat("another question", max_new_tokens=4)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        reader.join(120)
    assert rest and rest[-1].final.finish_reason == pb.FINISH_REASON_LENGTH
    assert rest[-1].final.usage.completion_tokens == 40
    assert proc.proc.wait(60) == 0, proc.log()[-3000:]
    assert "drained: all requests finished" in proc.log()
    assert_gone(workers, within=5, what="worker processes survived the server's SIGTERM")


def test_tensor_parallel_answers_cancels_and_a_dead_rank_takes_the_whole_engine_down(
    data_dir: Path, model_dir: Path, chatllm_process
) -> None:
    """Then SIGKILL one of the 3 workers: the server reports the engine dead (UNAVAILABLE, NOT_SERVING)
    and no other engine process is left running behind it."""
    proc, port, workers = start_checked(chatllm_process, data_dir, ["--tensor-parallel-size", "3"], 3)
    with ChatClient(f"127.0.0.1:{port}", timeout=120) as client:
        answers_and_cancels(client)
    engine = engine_processes_of(proc.proc.pid)
    workers[1].kill()  # a descendant of the server this test started
    assert_gone(engine, within=30, what="engine processes outlived the dead rank")
    assert proc.proc.poll() is None  # the server itself stays up to report the failure
    proc.wait_for_log(r"engine is dead", timeout=15)
    with ChatClient(f"127.0.0.1:{port}", timeout=30) as client:
        assert not client.ready()
        with pytest.raises(grpc.RpcError) as dead:
            client.chat(QUESTION, max_new_tokens=4)
        assert dead.value.code() == grpc.StatusCode.UNAVAILABLE
    assert proc.terminate(60) == 0, proc.log()[-3000:]
    # The server is gone; its helpers (the reaper, multiprocessing's resource tracker) follow it out.
    deadline = time.monotonic() + 10
    while group_members(proc.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_members(proc.proc.pid), "processes of the server's group outlived it"


def assert_engine_idle(client: ChatClient, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        info = client.server_info()
        if info.active_requests == 0 and info.waiting_requests == 0:
            return
        assert time.monotonic() < deadline, f"the cancelled request still runs: {info}"
        time.sleep(0.1)


def group_members(pgid: int) -> list[str]:
    """Live processes of the server's process group (engine processes, the reaper, ...)."""
    found = []
    for p in psutil.process_iter(["name", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{p.pid} {p.info['name']}")
        except (ProcessLookupError, PermissionError):
            continue
    return found


def test_what_vllm_cannot_do_on_cpu_is_refused_at_start_in_one_line(data_dir: Path, model_dir: Path) -> None:
    """vLLM's CPU platform declares no Ray device. The other refusals of build_engine_args (pipeline
    parallel with --enforce-eager, ...) take the same path to stderr: tests/unit/test_vllm_setup.py."""
    flags = ["--tensor-parallel-size", "3", "--distributed-executor-backend", "ray"]
    named, reason = "--distributed-executor-backend ray", "does not support ray"
    result = subprocess.run(
        [sys.executable, "-m", "chatllm.clients.cli", *SERVER, "--data-dir", str(data_dir), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatllm: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert named in errors[0] and reason in errors[0]
    assert "Traceback" not in result.stderr
