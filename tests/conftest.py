"""Shared fixtures: a session data dir (with the converted built-in model), in-process
servers on port 0, and subprocesses of `chatllm` that are always cleaned up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "tests" / "output"
pytest_plugins = ["tests.redis_server"]  # redis_server, redis_url: a real Redis for the state-store tests

# Tests never reach the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """One data dir per machine for the converted model (conversion takes ~20 s once);
    knowledge bases and history go to per-test folders instead."""
    path = Path(os.environ.get("CHATLLM_TEST_DATA_DIR", REPO / ".cache" / "test-data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model_dir(data_dir: Path) -> Path:
    """The built-in model converted to a safetensors directory."""
    from chatllm.server.model_source import resolve

    return resolve(None, data_dir / "models").path


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder under tests/output/ for files a test leaves for humans (screenshots, logs)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    path = OUTPUT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class ChatllmProcess:
    """A `chatllm ...` subprocess in its own process group, with its log in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatllm.clients.cli", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """Poll the log until `pattern` appears (fails early if the process exits)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.log())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"chatllm exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.log()[-4000:]}")

    def grpc_port(self, timeout: float = 180) -> int:
        return int(self.wait_for_log(r"gRPC listening on [^:\s]+:(\d+)", timeout).group(1))

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Make sure nothing of this process group survives (it and its engine children)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started; catches orphaned children
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def chatllm_process(output_dir: Path) -> Iterator[type]:
    """Factory: `proc = chatllm_process(["server", ...])`; all are stopped at teardown."""
    started: list[ChatllmProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None, name: str = "chatllm") -> ChatllmProcess:
        proc = ChatllmProcess(args, output_dir / f"{name}-{len(started)}.log", env)
        started.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session", autouse=True)
def no_engine_process_survives_the_session() -> Iterator[None]:
    """Fail the run if any vLLM engine process the tests started is still alive at the end."""
    yield
    import psutil

    from chatllm.server.engines.process_owner import vllm_processes

    left = vllm_processes()
    described = []
    for proc in left:
        try:
            described.append(f"{proc.pid} {proc.name()}")
            proc.kill()  # children of this test process: ours to stop
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=10)
    assert not described, f"vLLM engine processes left running after the tests: {described}"
