"""Print ops/prometheus/alerts.yml as a PrometheusRule (Prometheus Operator) resource.

    python ops/k8s/prometheusrule.py > ops/k8s/prometheusrule.yaml

The rules have one source, alerts.yml (promtool-tested); this keeps the Kubernetes copy
identical, and tests/unit/test_ops_k8s.py fails when the committed file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ALERTS = Path(__file__).resolve().parents[1] / "prometheus" / "alerts.yml"
HEADER = (
    "# Generated from ops/prometheus/alerts.yml by ops/k8s/prometheusrule.py; edit alerts.yml, then\n"
    "#   python ops/k8s/prometheusrule.py > ops/k8s/prometheusrule.yaml\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as `|` blocks, as a person would write them."""


def _str(dumper: yaml.SafeDumper, data: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_BlockDumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "chatllm", "labels": {"app.kubernetes.io/name": "chatllm"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(resource, Dumper=_BlockDumper, sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render())
