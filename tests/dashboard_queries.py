"""The PromQL of a Grafana dashboard, with its template variables filled in as Grafana does."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent.parent / "ops" / "grafana" / "chatllm.json"
# Grafana's $__rate_interval is max(4 x scrape interval, step + scrape interval); callers pick it.
BUILTINS = ("$__rate_interval", "$__interval", "$__range")


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref_id}]"


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels and those inside collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target["refId"], target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def query_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def label_values_query(variable: dict[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a `label_values(selector, label)` variable."""
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, f"variable {variable['name']}: not a label_values() query: {query}"
    return match.group(1), match.group(2)


def regex_of(values: list[str]) -> str:
    """A multi-value / All selection, as Grafana formats it for Prometheus: (a|b) regex-escaped."""
    escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, variables: dict[str, list[str]], rate_interval: str) -> str:
    for builtin in BUILTINS:
        expr = expr.replace(builtin, rate_interval)
    for name in sorted(variables, key=len, reverse=True):  # $instance before $inst...
        value = regex_of(variables[name])
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unresolved variable in {expr}"
    return expr
