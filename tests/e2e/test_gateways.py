"""Our workers behind the gateway people already run: SMG (`smg launch`, its Rust gateway from PyPI)
in front of two bridges, each with one replica of the session's fleet (tests/fleet.py), the way a
user puts `chatllm serve` instances behind it. SMG probes each worker (`/health`, `/v1/models`,
`/v1/loads`) before it routes anything to it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import OUTPUT
from tests.fleet import MODEL, Fleet, free_port

SMG = shutil.which("smg", path=str(Path(sys.executable).parent)) or shutil.which("smg")


@contextlib.contextmanager
def smg_gateway(worker_urls: list[str], log: Path) -> Iterator[str]:
    """`smg launch --policy cache_aware` in front of `worker_urls`; yields its URL once both are healthy."""
    if SMG is None:
        pytest.skip("smg is not installed (pip install smg, in the test extra)")
    port = free_port()
    argv = [SMG, "launch", "--host", "127.0.0.1", "--port", str(port), "--policy", "cache_aware"]
    argv += ["--worker-urls", *worker_urls, "--prometheus-port", str(free_port()), "--log-level", "info"]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while not healthy_workers(url, len(worker_urls)):
                assert proc.poll() is None, f"smg exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"smg never took the workers:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def healthy_workers(url: str, expected: int) -> bool:
    try:
        workers = requests.get(url + "/workers", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    listed = workers.get("workers", []) if isinstance(workers, dict) else []
    return len([w for w in listed if w.get("is_healthy", w.get("healthy"))]) == expected


def test_smg_routes_to_our_workers(fleet: Fleet) -> None:
    log = OUTPUT / "fleet" / "smg.log"
    with contextlib.ExitStack() as stack:
        bridges = [stack.enter_context(fleet.bridge(upstream=replica.target)) for replica in fleet.replicas]
        gateway = stack.enter_context(smg_gateway([bridge.http_url for bridge in bridges], log))
        system = "You are the front desk of the Lime Tree Hotel. " + "Breakfast is served from seven. " * 60
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "When is breakfast?"}]
        body = {"model": MODEL, "messages": messages, "max_tokens": 8, "temperature": 0}
        replies = [requests.post(gateway + "/v1/chat/completions", json=body, timeout=300) for _ in range(3)]
        probes = "".join(bridge.log() for bridge in bridges)
    assert [r.status_code for r in replies] == [200] * 3, replies[-1].text
    assert replies[0].json()["choices"][0]["message"]["content"]
    cached = [(r.json()["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0) for r in replies]
    assert cached[2] > 0  # cache_aware kept the same system prompt on one worker
    for path in ("/health", "/v1/models", "/v1/loads"):
        assert f'"GET {path}' in probes, path  # what SMG's discovery and load monitor asked our workers
