"""Proof that the Grafana dashboard works: a real `chatllm serve` gets real traffic (HTTP chat, NUL
stream, WebSocket, OpenAI, gRPC, ingest, retrieve, errors), Debian's Prometheus scrapes it, and
EVERY panel query of ops/grafana/chatllm.json, template variables filled in as Grafana would,
must be valid PromQL and return data (rates and latencies: non-zero data) for the traffic window.
A panel naming a series that does not exist returns nothing, so it fails here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
import websocket
import yaml

from chatllm.clients import ChatClient
from tests.dashboard_queries import PanelQuery, label_values_query, load, panel_queries, query_variables, substitute
from tests.e2e.conftest import ServeProcess
from tests.prometheus_server import PrometheusServer, finite_values

REPO = Path(__file__).resolve().parents[2]
JOB = "chatllm-bridge"  # `chatllm serve`: the bridge's /metrics carries the server's series too
# Grafana's $__rate_interval for a 1 s scrape interval is 4 s. 30 s: a rate needs two samples in the window, and
# on a loaded 2-core machine scrapes of the busy bridge stall for several seconds (a full-suite run once saw the
# single 400 of the second round with no earlier sample within 10 s, and reported "only zeros").
RATE_INTERVAL = "30s"
# The prefix cache's hit rates divide vLLM's per-request count of cached prompt tokens; this run's server is on
# the hf engine, which reports none (and its 256-token pages share nothing of these short prompts): those queries
# must return data, and may be zero. tests/e2e/test_fleet_routing.py reads the counts from vLLM replicas.
# The state store's failure rate is zero while it answers (its series exist from start-up);
# tests/unit/test_state_connection.py counts failures.
# Speculative decoding is vLLM's, off by default: its counters exist and stay 0 here;
# tests/component/test_speculative.py counts drafted and accepted tokens.
MAY_BE_ZERO = {
    "Prefix-cache hit rate",
    "Hit rate by replica, as the bridges route",
    "State store",
    "Speculative decoding",
}
DOCUMENT = b"Paris is the capital of France. The Eiffel Tower stands on the Champ de Mars in Paris.\n" * 3


@pytest.fixture
def stack(real_serve: ServeProcess) -> ServeProcess:
    """The run's `chatllm serve` with the real model (tests/e2e/conftest.py)."""
    return real_serve


@pytest.fixture
def prometheus(stack: ServeProcess, tmp_path: Path) -> Iterator[PrometheusServer]:
    rules = tmp_path / "alerts.yml"
    rules.write_text((REPO / "ops" / "prometheus" / "alerts.yml").read_text())
    server = PrometheusServer(tmp_path, {JOB: [stack.http.removeprefix("http://")]}, (rules,))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def send_traffic(stack: ServeProcess, model: str) -> None:
    """One of everything a user does, each checked enough to know it really happened."""
    ask = {"prompt": "What is the capital of France?", "max_new_tokens": 4, "temperature": 0}
    reply = requests.post(stack.http, json={**ask, "use_stream_chat": False}, timeout=120)
    assert reply.status_code == 200 and reply.json()["response"]
    with requests.post(stack.http, json={**ask, "use_stream_chat": True}, stream=True, timeout=120) as stream:
        chunks = [c for c in stream.content.split(b"\0") if c] if stream.ok else []
    assert len(chunks) >= 2 and json.loads(chunks[-1])["response"]
    ws = websocket.create_connection(stack.http.replace("http", "ws", 1) + "/", timeout=120)
    try:
        ws.send(json.dumps(ask))
        frames = []
        while (frame := ws.recv()) != "<EOS>":
            frames.append(frame)
        assert frames
    finally:
        ws.close()
    openai = requests.post(
        f"{stack.http}/v1/chat/completions",
        timeout=120,
        json={
            "model": model,
            "messages": [{"role": "user", "content": ask["prompt"]}],
            "max_tokens": 4,
        },
    )
    assert openai.status_code == 200 and openai.json()["choices"][0]["message"]["content"]
    with ChatClient(stack.grpc) as client:
        assert client.chat(ask["prompt"], max_new_tokens=4, temperature=0.0).text
        assert client.ingest(data=DOCUMENT, filename="paris.txt", knowledge_base="default").chunks >= 1
        assert client.retrieve("Where is the Eiffel Tower?", knowledge_base="default")
        with pytest.raises(grpc.RpcError) as error:
            client.chat("   ")
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    kb_answer = requests.post(stack.http, json={**ask, "use_stream_chat": False, "langchain": True}, timeout=120)
    assert kb_answer.status_code == 200 and kb_answer.json()["response"]
    bad = requests.post(stack.http, json={"prompt": "hi", "temperature": "hot"}, timeout=30)
    assert bad.status_code == 400


def resolve_variables(prometheus: PrometheusServer, start: float, end: float) -> dict[str, list[str]]:
    """Each template variable's values, its label_values() query run on Prometheus, in dashboard order."""
    values: dict[str, list[str]] = {}
    for variable in query_variables(load()):
        selector, label = label_values_query(variable)
        found = prometheus.label_values(substitute(selector, values, RATE_INTERVAL), label, start, end)
        assert found, f"template variable {variable['name']} has no values"
        values[variable["name"]] = found
    return values


def problems_with(
    queries: list[PanelQuery], prometheus: PrometheusServer, variables: dict[str, list[str]], start: float, end: float
) -> list[str]:
    """Why each failing panel query fails: invalid, no data, or (rates/latencies) only zeros."""
    problems = []
    for query in queries:
        expr = substitute(query.expr, variables, RATE_INTERVAL)
        try:
            result = prometheus.query_range(expr, start, end)
        except AssertionError as exc:
            problems.append(f"{query.name}: invalid: {exc}")
            continue
        values = finite_values(result)
        if not values:
            problems.append(f"{query.name}: no data for {expr}")
        elif "rate(" in expr and not any(v > 0 for v in values) and query.panel not in MAY_BE_ZERO:
            problems.append(f"{query.name}: only zeros although traffic was sent: {expr}")
    return problems


def test_every_dashboard_panel_returns_data_from_a_real_prometheus(
    stack: ServeProcess, prometheus: PrometheusServer
) -> None:
    prometheus.wait_for_scrape_after(JOB, 0, timeout=60)
    model = requests.get(f"{stack.http}/v1/models", timeout=30).json()["data"][0]["id"]
    start = time.time() - 5
    # Twice, with a scrape between: a labelled counter first seen mid-traffic only shows a rate
    # once it grows again (Prometheus has no zero sample before its first scrape).
    send_traffic(stack, model)
    prometheus.wait_for_scrape_after(JOB, time.time())
    send_traffic(stack, model)
    prometheus.wait_for_scrape_after(JOB, time.time() + 1)
    end = time.time()

    variables = resolve_variables(prometheus, start, end)
    assert variables["model"] == [model]
    queries = panel_queries(load())
    assert len(queries) >= 40
    problems = problems_with(queries, prometheus, variables, start, end)
    assert not problems, "\n".join(problems)

    # The check can fail: a misspelt series and a broken expression are both reported.
    typo = PanelQuery("typo", "A", queries[0].expr.replace("chatllm_", "chatllm_typo_", 1))
    broken = PanelQuery("broken", "A", "sum(rate(chatllm_requests_total[$__rate_interval])")
    assert [p.split(":")[0] for p in problems_with([typo, broken], prometheus, variables, start, end)] == [
        "typo [A]",
        "broken [A]",
    ]

    # The alert rules ran against this real data without errors.
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules and all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]

    # History export saw every channel (the exporter stamped each exchange).
    lines = [json.loads(line) for path in stack.history_dir.glob("history-*.jsonl") for line in path.open()]
    assert {"http", "ws", "openai", "grpc"} <= {entry["channel"] for entry in lines}


def test_compose_healthchecks_pass_against_a_live_stack(stack: ServeProcess) -> None:
    """The healthcheck commands of ops/compose.yaml (every replica's and bridge's), pointed at this stack's
    ports, succeed."""
    services = yaml.safe_load((REPO / "ops" / "compose.yaml").read_text())["services"]
    grpc_port, http_port = stack.grpc.rsplit(":", 1)[1], stack.http.rsplit(":", 1)[1]
    ports = {"server": ("127.0.0.1:50051", grpc_port), "bridge": ("127.0.0.1:8000", http_port)}
    checks = {
        name: service["healthcheck"]["test"][-1].replace(address, f"127.0.0.1:{port}")
        for name, service in services.items()
        for kind, (address, port) in ports.items()
        if name.startswith(f"{kind}-")
    }
    assert {name.split("-")[0] for name in checks} == {"server", "bridge"}, sorted(services)
    for name, code in checks.items():
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{name}: {result.stderr}"
