"""ops/prometheus: promtool accepts the config and rules, and every alert is proven to fire."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.metric_names import exported_series_names, series_names_in

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
REQUIRED_ALERTS = {  # the list: error rate, TTFT p95, queue saturation, engine down, scrape down
    "ChatLLMHighErrorRate",
    "ChatLLMBridgeHighErrorRate",
    "ChatLLMTimeToFirstTokenHigh",
    "ChatLLMQueueSaturated",
    "ChatLLMEngineDown",
    "ChatLLMScrapeDown",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make test-system` installs Debian's prometheus package"
    return subprocess.run([path, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_scrape_config_and_its_rule_file() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rule_unit_tests_pass_so_every_alert_fires_on_its_symptom() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_case_in_the_rule_tests() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert REQUIRED_ALERTS <= names
    assert names <= firing, f"alerts without a test that makes them fire: {sorted(names - firing)}"


def test_alerts_name_only_series_the_code_exports() -> None:
    exported = exported_series_names() | {"up"}
    for rule in alert_rules():
        mentioned = series_names_in(rule["expr"])
        assert mentioned or rule["expr"].startswith("up{"), rule["alert"]
        assert mentioned <= exported, f"{rule['alert']}: unknown series {sorted(mentioned - exported)}"


@pytest.mark.parametrize("mutation", ["chatllm_ready", "chatllm_queue_depth"])
def test_a_typo_in_a_rule_is_caught(tmp_path: Path, mutation: str) -> None:
    """The checks above can fail: a misspelt series breaks the rule tests."""
    for name in ("alerts.yml", "alerts.test.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules.read_text().replace(mutation, mutation + "_typo"))
    result = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_scrape_jobs_cover_server_and_bridge_on_their_default_ports() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # Every replica behind one DNS name (compose's network alias), each its own target.
    server, bridge = jobs["chatllm-server"]["dns_sd_configs"], jobs["chatllm-bridge"]["dns_sd_configs"]
    assert server == [{"names": ["server"], "type": "A", "port": 8001}]  # `chatllm server` --metrics-port default
    assert bridge == [{"names": ["bridge"], "type": "A", "port": 8000}]  # the bridge's HTTP port serves /metrics
    assert config["rule_files"] == ["alerts.yml"]
