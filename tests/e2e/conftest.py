"""One `chatllm serve` process with the real model for the e2e modules that check what it serves (the
Grafana dashboard against its metrics, every protocol through a separate bridge): started once per run,
on the hf engine, with the knowledge base and the history export. Process tests that kill, drain or
reload a server start their own, over the fake engine (tests/fake_chatllm.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import OUTPUT, ChatllmProcess


@dataclass
class ServeProcess:
    proc: ChatllmProcess
    http: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    history_dir: Path


@pytest.fixture(scope="session")
def real_serve(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """Greedy, short answers by default (--temperature 0 --max-new-tokens 32); one torch thread, so
    the Prometheus and clients beside it get the other core."""
    tmp = tmp_path_factory.mktemp("serve")
    log_dir = OUTPUT / "real_serve"
    log_dir.mkdir(parents=True, exist_ok=True)
    args = "serve --backend hf --host 127.0.0.1 --port 0 --grpc-host 127.0.0.1 --grpc-port 0 --num-threads 1".split()
    args += ["--temperature", "0", "--max-new-tokens", "32"]
    args += ["--model-path", str(model_dir), "--data-dir", str(tmp / "data")]
    args += ["--export-history-path", str(tmp / "history")]
    proc = ChatllmProcess(args, log_dir / "chatllm-serve.log")
    try:
        grpc_port = proc.grpc_port()
        http_port = int(proc.wait_for_log(r"HTTP listening on [^:\s]+:(\d+)", timeout=180).group(1))
        proc.wait_for_log(r"ready: ", timeout=300)
        yield ServeProcess(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", tmp / "history")
    finally:
        proc.stop()
