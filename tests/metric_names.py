"""The series names this project's code can export (server + bridge + process collector).

Used to check that alert rules and dashboard queries only name series that exist.
Counters are exported with `_total`; histograms as `_bucket`, `_count` and `_sum`.
"""

from __future__ import annotations

import importlib
import re

from prometheus_client import REGISTRY

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
SERIES_NAME = re.compile(r"\b((?:chatllm|process)_[a-z0-9_]+)\b")


def exported_series_names() -> set[str]:
    for module in ("chatllm.server.metrics", "chatllm.bridge.metrics"):
        importlib.import_module(module)  # registers that process's metrics

    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def series_names_in(expression: str) -> set[str]:
    """chatllm_* and process_* names a PromQL expression mentions (label values excluded)."""
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    return set(SERIES_NAME.findall(without_strings))
