"""`chatllm serve` and `chatllm bridge` as subprocesses: answers of the real model over HTTP, WebSocket,
OpenAI and gRPC, and /metrics of both processes after that traffic (the run's real `chatllm serve`);
drain on SIGTERM and tokens kept out of logs and metrics (a `chatllm serve` over the fake engine)."""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from chatllm.clients import ChatClient
from tests.conftest import FAKE_CHATLLM, ChatllmProcess
from tests.e2e.conftest import ServeProcess
from tests.fake_chatllm import STALL_ENV
from tests.fake_engine import FAKE_MODEL

MODEL = "SmolLM2-135M-Instruct"
QUESTION = "What is the capital of France?"
HTTP_LISTENING = r"HTTP listening on [^:\s]+:(\d+)"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]  # (name, labels) -> value


def start_fake_serve(
    chatllm_process: Callable[..., ChatllmProcess], data_dir: Path, *extra: str
) -> tuple[ChatllmProcess, int, int]:
    """A `chatllm serve` over the fake engine (tests/fake_chatllm.py), a word every 50 ms."""
    proc = chatllm_process(
        [
            "serve",
            *("--host", "127.0.0.1", "--port", "0", "--grpc-host", "127.0.0.1", "--grpc-port", "0"),
            *("--no-knowledge-base", "--data-dir", str(data_dir), "--temperature", "0", "--max-new-tokens", "32"),
            *("--served-model-name", FAKE_MODEL),
            *extra,
        ],
        env={STALL_ENV: "0.05"},
        name="serve",
        program=FAKE_CHATLLM,
    )
    http_port = int(proc.wait_for_log(HTTP_LISTENING, timeout=180).group(1))
    grpc_port = proc.grpc_port()
    wait_ready(f"http://127.0.0.1:{http_port}", proc)
    return proc, http_port, grpc_port


def wait_ready(url: str, proc: ChatllmProcess, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log()[-4000:]
        if requests.get(url + "/readyz", timeout=10).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"not ready within {timeout}s:\n{proc.log()[-4000:]}")


def metric_samples(url: str) -> Samples:
    text = requests.get(url + "/metrics", timeout=30).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a series over the label sets that include `labels`; -1 when the series is absent."""
    values = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    return sum(values) if values else -1.0


def nul_stream(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with requests.post(url, json=body, stream=True, timeout=300) as response:
        return [json.loads(c) for c in response.iter_lines(delimiter=b"\0") if c]


def ws_answer(url: str, prompt: str) -> str:
    ws = websocket.create_connection(url, timeout=300)
    try:
        ws.send(json.dumps({"prompt": prompt, "max_new_tokens": 12}))
        frames = []
        while (frame := ws.recv()) != "<EOS>":
            frames.append(frame)
        return "".join(frames)
    finally:
        ws.close()


def assert_bridge_series(samples: Samples) -> None:
    """A bridge process after one legacy JSON, one NUL stream, one WebSocket and one OpenAI answer."""
    assert total(samples, "chatllm_http_requests_total", route="legacy", method="POST", status="200") >= 2
    assert total(samples, "chatllm_http_requests_total", route="websocket", status="101") >= 1
    assert total(samples, "chatllm_http_requests_total", route="openai_chat", status="200") >= 1
    assert total(samples, "chatllm_http_requests_in_flight", route="metrics") == 1  # this scrape
    assert total(samples, "chatllm_http_request_duration_seconds_count", route="legacy") >= 2
    for protocol in ("http", "ws", "openai"):
        assert total(samples, "chatllm_bridge_time_to_first_token_seconds_count", protocol=protocol) >= 1
        assert total(samples, "chatllm_bridge_inter_token_latency_seconds_count", protocol=protocol) >= 1
        assert total(samples, "chatllm_bridge_generation_duration_seconds_count", protocol=protocol) >= 1
        assert total(samples, "chatllm_bridge_prompt_tokens_total", protocol=protocol) > 0
        assert total(samples, "chatllm_bridge_generation_tokens_total", protocol=protocol) > 0
        assert total(samples, "chatllm_bridge_generations_total", protocol=protocol, code="OK") >= 1
        assert total(samples, "chatllm_bridge_finish_reason_total", protocol=protocol) >= 1
    assert total(samples, "chatllm_bridge_websocket_messages_total", outcome="ok") == 1
    assert total(samples, "chatllm_bridge_websocket_connections") == 0
    assert total(samples, "chatllm_requests_total") == -1, "a bridge process has no server series"


def assert_server_series(samples: Samples) -> None:
    """The serve process behind that bridge: the gRPC server's series, and its own bridge's beside them."""
    assert total(samples, "chatllm_requests_total", method="Generate", code="OK") >= 4
    for channel in ("http", "ws", "openai"):
        assert total(samples, "chatllm_request_duration_seconds_count", channel=channel) >= 1
    assert total(samples, "chatllm_time_to_first_token_seconds_count") >= 4
    assert total(samples, "chatllm_inter_token_latency_seconds_count") > 4
    assert total(samples, "chatllm_prompt_tokens_total") > 0
    assert total(samples, "chatllm_generation_tokens_total") > 0
    assert total(samples, "chatllm_finish_reason_total", reason="stop") >= 1
    for gauge in (
        "chatllm_requests_in_flight",
        "chatllm_queue_depth",
        "chatllm_engine_running_requests",
        "chatllm_engine_waiting_requests",
    ):
        assert total(samples, gauge) >= 0, gauge
    # In serve the bridge's /metrics is the whole process: both families side by side.
    assert total(samples, "chatllm_http_requests_total", route="readyz") >= 1


def test_bridge_process_and_serve_process_export_their_metrics(
    chatllm_process: Callable[..., ChatllmProcess], real_serve: ServeProcess
) -> None:
    """Traffic through a separate `chatllm bridge`; the serve process behind it is the gRPC server."""
    bridge = chatllm_process(
        ["bridge", "--upstream", real_serve.grpc, "--host", "127.0.0.1", "--port", "0"], name="bridge"
    )
    url = f"http://127.0.0.1:{int(bridge.wait_for_log(HTTP_LISTENING, timeout=60).group(1))}"
    wait_ready(url, bridge)

    assert "Paris" in requests.post(url + "/", json={"prompt": QUESTION}, timeout=300).json()["response"]
    assert nul_stream(url + "/", {"prompt": QUESTION, "use_stream_chat": True})[-1]["response"]
    assert "Paris" in ws_answer(url.replace("http", "ws") + "/", QUESTION)
    with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
        assert "Paris" in (reply.choices[0].message.content or "")

    assert_bridge_series(metric_samples(url))
    assert_server_series(metric_samples(real_serve.http))
    assert bridge.terminate() == 0


def test_serve_answers_then_drains_on_sigterm(chatllm_process: Callable[..., ChatllmProcess], data_dir: Path) -> None:
    # A grace far beyond what the stream needs, so a slow machine cannot turn this into a cancel.
    proc, http_port, grpc_port = start_fake_serve(chatllm_process, data_dir, "--shutdown-grace", "300")
    url = f"http://127.0.0.1:{http_port}"
    assert "Paris" in requests.post(url + "/", data=QUESTION.encode(), timeout=300).json()["response"]
    with ChatClient(f"127.0.0.1:{grpc_port}") as client:
        assert "Paris" in client.chat(QUESTION, max_new_tokens=12).text

    # SIGTERM with a stream in flight: the stream completes, new work is refused, exit code 0.
    objects: list[dict[str, Any]] = []
    first = threading.Event()

    def read() -> None:
        body = {
            "prompt": "Count slowly to one hundred.",
            "use_stream_chat": True,
            "max_new_tokens": 24,
            "ignore_eos": True,
        }
        with requests.post(url + "/", json=body, stream=True, timeout=300) as response:
            for chunk in response.iter_lines(chunk_size=1, delimiter=b"\0"):
                if chunk:
                    objects.append(json.loads(chunk))
                    first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(120)
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait_for_log(r"shutdown requested: draining", timeout=30)
    refused = False
    deadline = time.monotonic() + 30
    while not refused and time.monotonic() < deadline:
        try:
            refused = requests.post(url + "/", data=b"hello", timeout=60).status_code == 503
        except requests.ConnectionError:
            refused = True
    assert refused, "new requests are refused while draining"
    reader.join(300)
    assert objects[-1]["usage"]["completion_tokens"] == 24, "the in-flight stream finished"
    assert proc.proc.wait(120) == 0
    log = proc.log()
    assert "drained: all requests finished" in log and "bridge drained: all streams finished" in log
    assert "Traceback" not in log


def test_the_token_never_reaches_logs_or_metrics(
    chatllm_process: Callable[..., ChatllmProcess], data_dir: Path, tmp_path: Path
) -> None:
    """Right and wrong tokens on every door (HTTP, SSE, WebSocket, OpenAI, upload, gRPC), DEBUG logging:
    neither appears in the log or in /metrics (values or labels)."""
    token, wrong = f"tok-{secrets.token_hex(8)}", f"wrong-{secrets.token_hex(8)}"
    proc, http_port, grpc_port = start_fake_serve(
        chatllm_process, data_dir, "--token", token, "--log-level", "DEBUG",
        "--knowledge-base", "--milvus-uri", str(tmp_path / "kb.db"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    for key, expected in ((token, 200), (f"Bearer {token}", 200), (wrong, 401), (f"Bearer {wrong}", 401)):
        headers = {"Authorization": key}
        assert (
            requests.post(url + "/", json={"prompt": "Hi", "max_new_tokens": 2}, headers=headers).status_code
            == expected
        )
        sse = requests.post(url + "/", data=b"Hi", headers=headers | {"Accept": "text/event-stream"})
        assert sse.status_code == expected
        upload = requests.post(url + "/api/kb/t/documents", files={"file": ("n.md", b"# Note\nBlue.")}, headers=headers)
        assert upload.status_code == expected, upload.text
    ws = websocket.create_connection(url.replace("http", "ws") + "/", header=[f"Authorization: {token}"], timeout=300)
    ws.send(json.dumps({"prompt": "Hi", "max_new_tokens": 2}))
    while ws.recv() != "<EOS>":
        pass
    ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(url.replace("http", "ws") + "/", header=[f"Authorization: {wrong}"], timeout=60)
    with openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0) as client:
        client.completions.create(model=FAKE_MODEL, prompt="Hi", max_tokens=2)
    with openai.OpenAI(base_url=url + "/v1", api_key=wrong, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.completions.create(model=FAKE_MODEL, prompt="Hi", max_tokens=2)
    with ChatClient(f"127.0.0.1:{grpc_port}", token=token) as client:
        assert client.chat("Hi", max_new_tokens=2).usage.completion_tokens == 2
    with ChatClient(f"127.0.0.1:{grpc_port}", token=wrong) as client:
        with pytest.raises(grpc.RpcError):
            client.server_info()

    metrics = requests.get(url + "/metrics", timeout=30).text
    assert "chatllm_http_requests_total" in metrics and 'status="401"' in metrics
    assert proc.terminate() == 0
    log = proc.log()
    assert "DEBUG" in log and "401" in log  # the log did record the traffic
    for secret in (token, wrong):
        assert secret not in metrics
        assert secret not in log


def test_bridge_on_a_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "chatllm.clients.cli",
                "bridge",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--upstream",
                "127.0.0.1:1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatllm: error:")]
    assert len(errors) == 1 and str(port) in errors[0]
