"""One `chatllm serve` process with the real model for the e2e modules that check what it serves (the
Grafana dashboard against its metrics, every protocol through a separate bridge, a .gguf model path):
started once per run, on the hf engine, with the knowledge base and the history export. Process tests
that kill, drain or reload a server start their own, over the fake engine (tests/fake_chatllm.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.clients import ChatClient
from chatllm.proto import SERVICE_NAME
from chatllm.server.model_source import BUILTIN_NAME, builtin_gguf
from tests.conftest import OUTPUT, ChatllmProcess


@dataclass
class ServeProcess:
    proc: ChatllmProcess
    http: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    history_dir: Path
    data_dir: Path
    while_loading: dict[str, object] = field(default_factory=dict)  # what it answered before it was ready


@pytest.fixture(scope="session")
def real_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """The built-in model given as a .gguf path with a fresh data dir, so the server converts it first (and
    answers meanwhile: what it said is kept in `while_loading`). Greedy, short answers by default
    (--temperature 0 --max-new-tokens 32); one torch thread, so Prometheus and the clients get the other core."""
    tmp = tmp_path_factory.mktemp("serve")
    gguf = tmp / f"{BUILTIN_NAME}.gguf"
    shutil.copy(builtin_gguf(), gguf)
    log_dir = OUTPUT / "real_serve"
    log_dir.mkdir(parents=True, exist_ok=True)
    args = "serve --backend hf --host 127.0.0.1 --port 0 --grpc-host 127.0.0.1 --grpc-port 0 --num-threads 1".split()
    args += ["--temperature", "0", "--max-new-tokens", "32"]
    args += ["--model-path", str(gguf), "--data-dir", str(tmp / "data")]
    args += ["--export-history-path", str(tmp / "history")]
    proc = ChatllmProcess(args, log_dir / "chatllm-serve.log")
    try:
        grpc_port = proc.grpc_port()
        http_port = int(proc.wait_for_log(r"HTTP listening on [^:\s]+:(\d+)", timeout=180).group(1))
        serve = ServeProcess(
            proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", tmp / "history", tmp / "data"
        )
        serve.while_loading = observe_loading(serve.grpc)
        wait_ready(serve)
        yield serve
    finally:
        proc.stop()


def wait_ready(serve: ServeProcess, timeout: float = 300) -> None:
    """Until the bridge's /readyz says ready, as an orchestrator's probe would ask."""
    deadline = time.monotonic() + timeout
    while requests.get(serve.http + "/readyz", timeout=10).status_code != 200:
        assert serve.proc.proc.poll() is None and time.monotonic() < deadline, serve.proc.log()[-4000:]
        time.sleep(0.2)


def observe_loading(target: str) -> dict[str, object]:
    """Liveness, readiness and a Generate call's status of a server that is still loading its model."""
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        seen: dict[str, object] = {
            service or "liveness": health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            for service in ("", SERVICE_NAME)
        }
    with ChatClient(target) as client:
        try:
            client.chat("hello")
        except grpc.RpcError as exc:
            seen["generate"] = (exc.code(), exc.details())
    return seen
