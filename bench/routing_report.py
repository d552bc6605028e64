"""bench/routing.py's report: the figures per leg and round, and the issue's targets as ratios of
the legs' medians (the same prompts, legs alternating)."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import markdown_table


def median(data: dict[str, Any], leg: str, workload: str, figure: str) -> float:
    """The figure's median over the leg's rounds; NaN for a leg not run (a partial record)."""
    results = data["legs"].get(leg) or []
    return statistics.median(result[workload][figure] for result in results) if results else math.nan


def targets(data: dict[str, Any]) -> list[list[Any]]:
    """(target, measured, met) rows, from the medians over the rounds."""

    def m(leg: str, workload: str, figure: str) -> float:
        return median(data, leg, workload, figure)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 2) if b else float("inf")

    rows: list[list[Any]] = []

    def check(name: str, value: float, ok: bool) -> None:
        rows.append([name, "leg not run", "-"] if math.isnan(value) else [name, value, "yes" if ok else "no"])

    a = "tenants"
    check(
        "(a) hit rate >= 3.8x round robin's",
        ratio(m("prefix", a, "hit_rate"), m("round-robin", a, "hit_rate")),
        m("prefix", a, "hit_rate") >= 3.8 * m("round-robin", a, "hit_rate"),
    )
    check(
        "(a) hit rate >= 0.9x a single replica's",
        ratio(m("prefix", a, "hit_rate"), m("single", a, "hit_rate")),
        m("prefix", a, "hit_rate") >= 0.9 * m("single", a, "hit_rate"),
    )
    check(
        "(a) TTFT p90 <= 0.25x round robin's",
        ratio(m("prefix", a, "ttft_p90"), m("round-robin", a, "ttft_p90")),
        m("prefix", a, "ttft_p90") <= 0.25 * m("round-robin", a, "ttft_p90"),
    )
    check(
        "(a) throughput >= 1.3x round robin's",
        ratio(m("prefix", a, "output_tok_s"), m("round-robin", a, "output_tok_s")),
        m("prefix", a, "output_tok_s") >= 1.3 * m("round-robin", a, "output_tok_s"),
    )
    check(
        "(a) hit rate >= SMG's - 2 points (difference, points)",
        round(100 * (m("prefix", a, "hit_rate") - m("smg", a, "hit_rate")), 1),
        m("prefix", a, "hit_rate") >= m("smg", a, "hit_rate") - 0.02,
    )
    check(
        "(a) TTFT p90 <= 1.1x SMG's",
        ratio(m("prefix", a, "ttft_p90"), m("smg", a, "ttft_p90")),
        m("prefix", a, "ttft_p90") <= 1.1 * m("smg", a, "ttft_p90"),
    )
    b = "conversations"
    check(
        "(b) turns 2-6 cached share >= 0.9x a single replica's",
        ratio(m("prefix", b, "hit_rate"), m("single", b, "hit_rate")),
        m("prefix", b, "hit_rate") >= 0.9 * m("single", b, "hit_rate"),
    )
    c = "unique"
    check(
        "(c) throughput >= 0.95x round robin's",
        ratio(m("prefix", c, "output_tok_s"), m("round-robin", c, "output_tok_s")),
        m("prefix", c, "output_tok_s") >= 0.95 * m("round-robin", c, "output_tok_s"),
    )
    shares = [s for result in data["legs"]["prefix"] for s in result[c]["replica_share"]]
    check(
        "(c) each replica serves 40-60% (prefix, every round)",
        min(shares, default=0.0),
        bool(shares) and all(0.4 <= s <= 0.6 for s in shares),
    )
    d = data["decision"]
    check("routing decision p99 < 1 ms with 100k blocks (us)", round(d["p99_us"]), d["p99_us"] < 1000)
    return rows


def report(data: dict[str, Any]) -> str:
    lines = ["## Targets (medians over the rounds)\n", markdown_table(["target", "measured", "met"], targets(data)), ""]
    for workload in ("tenants", "conversations", "unique"):
        rows = []
        for leg, rounds in data["legs"].items():
            for n, result in enumerate(rounds, 1):
                r = result[workload]
                share = " / ".join(f"{s:.0%}" for s in r.get("replica_share", []))
                rows.append(
                    [leg, n, r["hit_rate"], r["ttft_p50"], r["ttft_p90"], r["output_tok_s"], r["errors"], share]
                )
        header = ["leg", "round", "hit rate", "TTFT p50 s", "TTFT p90 s", "output tok/s", "errors", "replica share"]
        lines += [f"## ({workload})\n", markdown_table(header, rows), ""]
    trim_rows = [
        [trim, n, r[f"trim_{trim}"]["hit_rate"], r[f"trim_{trim}"]["ttft_p50"]]
        for n, r in enumerate(data["legs"]["single"], 1)
        for trim in ("exact", "stable")
    ]
    lines += ["## --max-round-trim (WebSocket, --max_round 2, rounds 2-8)\n"]
    lines += [markdown_table(["trim", "round", "hit rate", "TTFT p50 s"], trim_rows), ""]
    d = data["decision"]
    lines += [
        "## Routing decision (hash + pick, in process)\n",
        f"{d['indexed_blocks']} blocks indexed over {d['replicas']} replicas, {d['request_blocks']}-block requests: "
        f"p50 {d['p50_us']:.0f} us, p99 {d['p99_us']:.0f} us, max {d['max_us']:.0f} us ({d['decisions']} decisions)",
    ]
    return "\n".join(lines)
