"""ops/grafana/chatllm.json: built from dashboard.py, importable, every query names real series
and parses as PromQL (promtool). The proof against live data is tests/e2e/test_dashboard.py."""

from __future__ import annotations

import json
import runpy
import subprocess
from pathlib import Path

import yaml

from tests.dashboard_queries import DASHBOARD, all_panels, load, panel_queries, query_variables, substitute
from tests.metric_names import exported_series_names, series_names_in

ISSUE_PANELS = {  # the issue's panel list, by the series each needs
    "requests by route/status": "chatllm_http_requests_total",
    "gRPC requests": "chatllm_requests_total",
    "in-flight": "chatllm_requests_in_flight",
    "queued": "chatllm_queue_depth",
    "time to first token": "chatllm_time_to_first_token_seconds_bucket",
    "inter-token latency": "chatllm_inter_token_latency_seconds_bucket",
    "end-to-end latency": "chatllm_request_duration_seconds_bucket",
    "prompt tokens/s": "chatllm_prompt_tokens_total",
    "generated tokens/s": "chatllm_generation_tokens_total",
    "finish reasons": "chatllm_finish_reason_total",
    "KV-cache usage": "chatllm_kv_cache_usage_ratio",
    "engine running": "chatllm_engine_running_requests",
    "engine waiting": "chatllm_engine_waiting_requests",
    "ingest latency": "chatllm_ingest_duration_seconds_bucket",
    "retrieval latency": "chatllm_retrieval_duration_seconds_bucket",
    "WebSocket connections": "chatllm_bridge_websocket_connections",
    "process CPU": "process_cpu_seconds_total",
    "process RSS": "process_resident_memory_bytes",
}


def test_the_json_is_what_dashboard_py_builds() -> None:
    build = runpy.run_path(str(DASHBOARD.parent / "dashboard.py"))["build"]
    assert json.loads(DASHBOARD.read_text()) == build(), "run: python ops/grafana/dashboard.py"


def test_dashboard_is_importable_with_datasource_and_model_variables() -> None:
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "chatllm_model_info" in variables["model"]["query"]["query"]
    assert "$model" in variables["instance"]["query"]["query"]  # servers follow the model choice
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(load()):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_of_the_issue_is_there_and_names_only_real_series() -> None:
    exported = exported_series_names()
    used: set[str] = set()
    for query in panel_queries(load()):
        names = series_names_in(query.expr)
        assert names, query.name
        assert names <= exported, f"{query.name}: unknown series {sorted(names - exported)}"
        used |= names
    missing = {panel for panel, series in ISSUE_PANELS.items() if series not in used}
    assert not missing, f"no panel for: {sorted(missing)}"


def test_every_query_and_variable_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each query (with variables filled in) as a recording rule."""
    dashboard = load()
    variables = {v["name"]: ["a.example:8000", "b.example:8001"] for v in query_variables(dashboard)}
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(q.expr, variables, "1m")}
        for i, q in enumerate(panel_queries(dashboard))
    ]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
