"""`chatllm server` owns vLLM's engine processes: none survives the server, whether it
is stopped with SIGTERM while the engine loads or killed outright with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from chatllm.server.engines.vllm_setup import vllm_build

pytestmark = pytest.mark.skipif(vllm_build() is None, reason="vLLM is not installed (make install puts it in .venv)")

ARGS = [
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
]


def wait_for_engine_processes(server_pid: int, timeout: float = 180) -> list[psutil.Process]:
    """Poll until the server has spawned vLLM's engine core; returns its engine processes."""
    server = psutil.Process(server_pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine = [p for p in server.children(recursive=True) if _is_engine(p)]
        if any(p.name().startswith("VLLM::EngineCor") for p in engine):
            return engine
        time.sleep(0.1)
    raise AssertionError("the server never started vLLM's engine core")


def _is_engine(proc: psutil.Process) -> bool:
    try:
        return proc.name().startswith("VLLM::")
    except psutil.Error:
        return False


def assert_all_gone(procs: list[psutil.Process], within: float) -> None:
    _, alive = psutil.wait_procs(procs, timeout=within)
    assert not alive, f"engine processes survived the server: {[(p.pid, p.name()) for p in alive]}"


def test_sigterm_while_the_engine_loads_stops_every_engine_process(
    data_dir: Path, model_dir: Path, chatllm_process
) -> None:
    proc = chatllm_process([*ARGS, "--data-dir", str(data_dir)])
    engine = wait_for_engine_processes(proc.proc.pid)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(60) == 0, proc.log()[-3000:]
    assert "stop requested while loading" in proc.log()
    assert_all_gone(engine, within=10)


def test_sigkill_of_the_server_leaves_no_engine_process(data_dir: Path, model_dir: Path, chatllm_process) -> None:
    proc = chatllm_process([*ARGS, "--data-dir", str(data_dir)])
    engine = wait_for_engine_processes(proc.proc.pid)
    group = proc.proc.pid  # the fixture starts it in its own session: it leads its process group
    proc.proc.kill()  # only the server: its engine processes are now orphans
    proc.proc.wait(10)
    assert_all_gone(engine, within=20)
    deadline = time.monotonic() + 10
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_members(group), "processes of the dead server's group are still running"


def group_members(pgid: int) -> list[str]:
    """Live processes of a process group (a spawned worker included), reaper and all."""
    found = []
    for p in psutil.process_iter(["name", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{p.pid} {p.info['name']}")
        except (ProcessLookupError, PermissionError):
            continue
    return found


def test_a_setting_vllm_rejects_is_a_one_line_startup_error(data_dir: Path, model_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatllm.clients.cli", *ARGS, "--data-dir", str(data_dir), "--max-model-len", "100000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatllm: error:")]
    assert len(errors) == 1 and "vLLM could not start" in errors[0] and "max_model_len" in errors[0], errors
