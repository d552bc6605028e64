"""`chatllm serve` with TLS and a token file as a subprocess (over the fake engine): HTTPS and gRPC over
TLS answer, and SIGHUP swaps the certificates of both listeners while open streams run to their end."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import requests

from chatllm.clients import ChatClient
from tests.certificates import CertificateAuthority, Issued
from tests.conftest import FAKE_CHATLLM, ChatllmProcess
from tests.fake_chatllm import STALL_ENV

QUESTION = "What is the capital of France?"
TOKEN = "process-token-51d2"
HTTP_LISTENING = r"HTTP listening on [^:\s]+:(\d+), HTTPS"
LONG = "Count from one to one hundred in words."


def wait_ready(url: str, ca: Path, proc: ChatllmProcess, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log()[-4000:]
        if requests.get(url + "/readyz", verify=str(ca), timeout=10).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"not ready within {timeout}s:\n{proc.log()[-4000:]}")


def ask(url: str, ca: Path) -> requests.Response:
    body = {"prompt": QUESTION, "max_new_tokens": 12}
    return requests.post(url + "/", json=body, headers={"Authorization": TOKEN}, verify=str(ca), timeout=120)


def grpc_client(port: int, ca: Path) -> ChatClient:
    return ChatClient(f"localhost:{port}", token=TOKEN, tls_ca=ca, timeout=120)


def test_serve_over_tls_reloads_its_certificates_on_sighup(
    chatllm_process: Callable[..., ChatllmProcess], data_dir: Path, tmp_path: Path
) -> None:
    ca, other = CertificateAuthority(tmp_path, "main"), CertificateAuthority(tmp_path, "other")
    issued = ca.issue("server")
    live = Issued(tmp_path / "tls.crt", tmp_path / "tls.key")
    shutil.copy(issued.cert, live.cert)
    shutil.copy(issued.key, live.key)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ops:{TOKEN}\n")
    proc = chatllm_process(
        [
            "serve",
            *("--host", "127.0.0.1", "--port", "0", "--grpc-host", "127.0.0.1", "--grpc-port", "0"),
            *("--no-knowledge-base", "--data-dir", str(data_dir), "--temperature", "0"),
            *("--tls-cert", str(live.cert), "--tls-key", str(live.key), "--token-file", str(tokens)),
        ],
        env={STALL_ENV: "0.05"},  # the two long answers below stream for 4 s
        name="serve-tls",
        program=FAKE_CHATLLM,
    )
    http_port = int(proc.wait_for_log(HTTP_LISTENING, timeout=180).group(1))
    grpc_port = proc.grpc_port()
    url = f"https://localhost:{http_port}"
    wait_ready(url, ca.cert, proc)

    reply = ask(url, ca.cert)
    assert reply.status_code == 200 and "Paris" in reply.json()["response"]
    with grpc_client(grpc_port, ca.cert) as client:
        assert "Paris" in client.chat(QUESTION, max_new_tokens=12).text
    proc.wait_for_log(r"generate .* token=ops channel=http", timeout=10)
    assert TOKEN not in proc.log()

    # Two answers are streaming, over gRPC and over HTTPS, when the certificates change.
    finished: dict[str, object] = {}
    old_grpc = grpc_client(grpc_port, ca.cert)
    grpc_stream = old_grpc.stream(LONG, max_new_tokens=80, ignore_eos=True)
    assert next(grpc_stream).text is not None
    https_stream = requests.post(
        url + "/",
        json={"prompt": LONG, "max_new_tokens": 80, "use_stream_chat": True, "ignore_eos": True},
        headers={"Authorization": TOKEN},
        verify=str(ca.cert),
        stream=True,
        timeout=120,
    )
    pieces = https_stream.iter_lines(delimiter=b"\0")
    assert json.loads(next(pieces))["response"] is not None

    def drain() -> None:
        finished["grpc"] = list(grpc_stream)[-1].final.usage.completion_tokens
        finished["https"] = [json.loads(p) for p in pieces if p][-1]["usage"]["completion_tokens"]

    reader = threading.Thread(target=drain)
    reader.start()

    renewed = other.issue("server-2")
    shutil.copy(renewed.cert, live.cert)
    shutil.copy(renewed.key, live.key)
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_for_log(r"gRPC TLS: certificates re-read", timeout=10)
    proc.wait_for_log(r"HTTPS: certificates re-read", timeout=10)

    assert ask(url, other.cert).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        ask(url, ca.cert)
    with grpc_client(grpc_port, other.cert) as client:
        assert "Paris" in client.chat(QUESTION, max_new_tokens=12).text
    with grpc_client(grpc_port, ca.cert) as stale, pytest.raises(grpc.RpcError) as err:
        stale.server_info()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    reader.join(120)
    assert finished == {"grpc": 80, "https": 80}, "the streams that were open finished on their old sessions"
    old_grpc.close()
    assert proc.proc.poll() is None
    assert proc.terminate() == 0
