"""`chatllm server` as a subprocess: start-up errors, a .gguf model path converted while the server says
it is loading (the run's real `chatllm serve`), drain on SIGTERM (over the fake engine)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.clients import ChatClient
from chatllm.proto import SERVICE_NAME, pb
from chatllm.server.model_source import BUILTIN_NAME
from tests.conftest import FAKE_CHATLLM
from tests.e2e.conftest import ServeProcess
from tests.fake_chatllm import STALL_ENV

BASE = [
    "server",
    "--grpc-host",
    "127.0.0.1",
    "--grpc-port",
    "0",
    "--metrics-port",
    "0",
    "--backend",
    "hf",
    "--no-knowledge-base",
]


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatllm.clients.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("model_path", "expected"),
    [
        ("/nonexistent/model-dir", "no such file or directory"),
        ("./missing.gguf", "no such .gguf file"),
        ("nonexistent-org/nonexistent-model", "hub is unreachable"),
    ],
)
def test_unknown_model_path_is_a_clean_startup_error(tmp_path: Path, model_path: str, expected: str) -> None:
    result = run_cli([*BASE, "--data-dir", str(tmp_path), "--model-path", model_path])
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("chatllm: error:")]
    assert len(error_lines) == 1 and model_path in error_lines[0]


def health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return (
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        )


def test_a_gguf_path_is_converted_once_while_the_server_says_it_is_loading(real_serve: ServeProcess) -> None:
    """The run's real `chatllm serve` was given the built-in model as a .gguf path in a fresh data dir: alive
    but not ready while it converted and loaded, then it answers (here through `chatllm chat`)."""
    assert real_serve.while_loading["liveness"] == health_pb2.HealthCheckResponse.SERVING
    assert real_serve.while_loading[SERVICE_NAME] == health_pb2.HealthCheckResponse.NOT_SERVING
    code, details = real_serve.while_loading["generate"]  # type: ignore[misc]
    assert code == grpc.StatusCode.UNAVAILABLE and "loading" in details
    assert [p.name.startswith(f"{BUILTIN_NAME}-") for p in (real_serve.data_dir / "models").iterdir()] == [True]
    answer = run_cli(
        [
            "chat",
            "--target",
            real_serve.grpc,
            "--temperature",
            "0",
            "--max-new-tokens",
            "16",
            "What is the capital of France?",
        ]
    )
    assert answer.returncode == 0 and "Paris" in answer.stdout


def test_sigterm_drains_the_stream_in_flight_then_exits_0(tmp_path: Path, chatllm_process) -> None:
    """`chatllm server` (over the fake engine): readiness flips, new work is refused, the stream completes."""
    proc = chatllm_process([*BASE, "--data-dir", str(tmp_path / "data")], env={STALL_ENV: "0.05"}, program=FAKE_CHATLLM)
    port = proc.grpc_port()
    proc.wait_for_log(r"ready: ", timeout=120)
    assert health(port, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    client = ChatClient(f"127.0.0.1:{port}")
    call = client.stream("Count slowly to one hundred.", max_new_tokens=40, ignore_eos=True, temperature=0.0)
    first = next(call)
    assert first.text
    results: list[pb.GenerateResponse] = []
    reader = threading.Thread(target=lambda: results.extend(call))
    reader.start()
    proc.proc.send_signal(15)
    proc.wait_for_log(r"shutdown requested: draining", timeout=10)
    assert health(port, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as err:
        client.chat("another question")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    reader.join(60)
    client.close()
    assert results and results[-1].final.finish_reason == pb.FINISH_REASON_LENGTH
    assert results[-1].final.usage.completion_tokens == 40
    assert proc.proc.wait(60) == 0
    assert "drained: all requests finished" in proc.log()
