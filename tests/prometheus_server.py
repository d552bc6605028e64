"""Debian's `prometheus` as a test subprocess: loopback, port 0, temporary storage, HTTP API helpers."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.daemon_process import DaemonProcess


class PrometheusServer:
    """Started with `start()`; `stop()` ends it (and only it: its own process group)."""

    def __init__(self, workdir: Path, scrape_targets: dict[str, list[str]], rule_files: tuple[Path, ...] = ()) -> None:
        self.workdir = workdir
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in scrape_targets.items()
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.daemon: DaemonProcess | None = None
        self.url = ""

    def start(self, timeout: float = 60) -> None:
        argv = [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--web.listen-address=127.0.0.1:0",  # Prometheus binds port 0 and logs the port it got
            "--log.level=info",
        ]
        self.log_path.unlink(missing_ok=True)
        self.daemon = DaemonProcess("prometheus", "prometheus", argv, self.log_path)
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', self.log_path.read_text())
            if match:
                self.url = f"http://{match.group(1)}"
                break
            assert self.daemon.running, f"prometheus exited:\n{self.daemon.log_tail()}"
            assert time.monotonic() < deadline, f"prometheus did not listen:\n{self.daemon.log_tail()}"
            time.sleep(0.1)
        self.wait_for(lambda: requests.get(f"{self.url}/-/ready", timeout=5).ok, "prometheus ready", timeout)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop(30)

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns `data`, raises with Prometheus' error message otherwise."""
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def label_values(self, selector: str, label: str, start: float, end: float) -> list[str]:
        series = self.api("series", **{"match[]": selector, "start": start, "end": end})
        return sorted({s[label] for s in series if label in s})

    def last_scrape(self, job: str) -> float:
        """Timestamp of the newest completed scrape of `job` (0 if none yet)."""
        result = self.query(f'timestamp(up{{job="{job}"}} == 1)')
        return max((float(r["value"][1]) for r in result), default=0.0)

    def wait_for_scrape_after(self, job: str, moment: float, timeout: float = 30) -> None:
        self.wait_for(lambda: self.last_scrape(job) > moment, f"a scrape of {job} after {moment}", timeout)

    @staticmethod
    def wait_for(condition: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """Every non-NaN, finite sample of a query or query_range result."""
    values = []
    for series in result:
        for _, raw in series.get("values", [series.get("value", [0, "NaN"])]):
            value = float(raw)
            if math.isfinite(value):
                values.append(value)
    return values
