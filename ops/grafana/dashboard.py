"""Build ops/grafana/chatllm.json, the "ChatLLM Serve" Grafana dashboard.

    python ops/grafana/dashboard.py > ops/grafana/chatllm.json

The JSON is what Grafana imports (and what ops/compose.yaml provisions); this script is its
source so panels stay uniform. tests/unit/test_ops_grafana.py fails when the JSON is stale, and
tests/e2e/test_dashboard.py evaluates every query against a real Prometheus scraping a real
`chatllm serve`.

Template variables: `datasource` (any Prometheus), `model` (from chatllm_model_info), `instance`
(the server processes serving that model) and `bridge` (bridge processes). In `chatllm serve`
both are the same process.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SERVER = 'instance=~"$instance"'
BRIDGE = 'instance=~"$bridge"'
RATE = "$__rate_interval"
WIDTH = 24


class Layout:
    """Places panels left to right, wrapping at the dashboard width."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "id": len(self.panels) + 1,
                "gridPos": {"x": 0, "y": self.y, "w": WIDTH, "h": 1},
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], width: int = 12, height: int = 8) -> None:
        if self.x + width > WIDTH:
            self._newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": width, "h": height}
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = self.row_height = 0


Query = tuple[str, str]  # (PromQL, legend)


@dataclass
class Panel:
    title: str
    description: str
    queries: list[Query]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "targets": [
                {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
                for i, (expr, legend) in enumerate(self.queries)
            ],
            "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        }


def stat(title: str, description: str, query: Query, unit: str = "short", width: int = 4) -> Panel:
    return Panel(title, description, [query], unit, kind="stat", width=width, height=5)


def quantiles(metric: str, sel: str, by: str = "", levels: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[Query]:
    """histogram_quantile of a histogram at each level, optionally per label."""
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    rate = f"rate({metric}_bucket{{{sel}}}[{RATE}])"
    return [(f"histogram_quantile({q}, sum by ({group}) ({rate}))", f"{prefix}p{round(q * 100):g}") for q in levels]


def rate_by(metric: str, sel: str, by: str, legend: str) -> Query:
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RATE}]))", legend


def ratio_by(numerator: str, denominator: str, sel: str, by: str, legend: str) -> Query:
    """rate(numerator) / rate(denominator), per `by`."""
    return f"{rate_by(numerator, sel, by, '')[0]} / {rate_by(denominator, sel, by, '')[0]}", legend


def total_rate(metric: str, sel: str, legend: str) -> Query:
    return f"sum(rate({metric}{{{sel}}}[{RATE}]))", legend


HTTP = "chatllm_http_requests_total"
HTTP_ERRORS = f'{BRIDGE}, status=~"[45].."'
BOTH = 'instance=~"$instance|$bridge"'
CACHED, PROMPT = "chatllm_prompt_cached_tokens_total", "chatllm_prompt_tokens_total"
MODEL = f'count by (model, backend, device, dtype) (chatllm_model_info{{{SERVER}, model=~"$model"}})'

SECTIONS: list[tuple[str, list[Panel]]] = [
    (
        "Overview",
        [
            stat(
                "Ready",
                "1 when every selected server is SERVING (model loaded, not draining).",
                (f"min(chatllm_ready{{{SERVER}}})", "ready"),
            ),
            stat(
                "Model",
                "The served model, its engine, device and dtype.",
                (MODEL, "{{model}} on {{backend}} / {{device}} / {{dtype}}"),
                width=8,
            ),
            stat("Requests/s", "HTTP requests answered by the bridges.", total_rate(HTTP, BRIDGE, "HTTP"), "reqps"),
            stat(
                "HTTP error ratio",
                "Share of bridge responses that are 4xx or 5xx.",
                (f"{total_rate(HTTP, HTTP_ERRORS, '')[0]} / {total_rate(HTTP, BRIDGE, '')[0]}", "errors"),
                "percentunit",
            ),
            stat(
                "Uptime",
                "Since the server process started.",
                (f"time() - max(process_start_time_seconds{{{SERVER}}})", "uptime"),
                "s",
            ),
        ],
    ),
    (
        "Requests",
        [
            Panel(
                "HTTP requests by route and status",
                "Bridge: legacy POST /, WebSocket, OpenAI, /metrics, ...",
                [rate_by(HTTP, BRIDGE, "route, status", "{{route}} {{status}}")],
                "reqps",
            ),
            Panel(
                "HTTP errors by route and status",
                "Bridge responses with a 4xx or 5xx status.",
                [rate_by(HTTP, HTTP_ERRORS, "route, status", "{{route}} {{status}}")],
                "reqps",
            ),
            Panel(
                "gRPC requests by method and code",
                "Every RPC of the server, by status code.",
                [rate_by("chatllm_requests_total", SERVER, "method, code", "{{method}} {{code}}")],
                "reqps",
            ),
            Panel(
                "gRPC errors by method and code",
                "RPCs that did not end OK.",
                [rate_by("chatllm_requests_total", SERVER + ', code!="OK"', "method, code", "{{method}} {{code}}")],
                "reqps",
            ),
            Panel(
                "In flight and queued",
                "Requests being handled, and Generate calls waiting for a slot "
                "(refused once the queue holds --max-queue).",
                [
                    (f"sum(chatllm_requests_in_flight{{{SERVER}}})", "gRPC in flight"),
                    (f"sum(chatllm_queue_depth{{{SERVER}}})", "queued"),
                    (f"sum(chatllm_queue_limit{{{SERVER}}})", "queue limit"),
                    (f"sum(chatllm_http_requests_in_flight{{{BRIDGE}}})", "HTTP in flight"),
                ],
            ),
            Panel(
                "Generations through the bridge",
                "Generate calls the bridge made upstream, by protocol and outcome.",
                [rate_by("chatllm_bridge_generations_total", BRIDGE, "protocol, code", "{{protocol}} {{code}}")],
                "reqps",
            ),
        ],
    ),
    (
        "Latency",
        [
            Panel(
                "Time to first token",
                "Server: request arrival to the first generated text.",
                quantiles("chatllm_time_to_first_token_seconds", SERVER),
                "s",
            ),
            Panel(
                "Inter-token latency",
                "Server: time between generated tokens.",
                quantiles("chatllm_inter_token_latency_seconds", SERVER),
                "s",
            ),
            Panel(
                "End-to-end latency by channel",
                "Server: arrival to last token, by channel (grpc, http, ws, openai).",
                quantiles("chatllm_request_duration_seconds", SERVER, "channel", (0.5, 0.95)),
                "s",
            ),
            Panel(
                "Queue time",
                "Server: arrival until the engine scheduled the request.",
                quantiles("chatllm_queue_time_seconds", SERVER, levels=(0.5, 0.95)),
                "s",
            ),
            Panel(
                "Time to first token seen by clients",
                "Bridge: request sent upstream to first text, by protocol.",
                quantiles("chatllm_bridge_time_to_first_token_seconds", BRIDGE, "protocol", (0.95,)),
                "s",
            ),
            Panel(
                "HTTP request duration by route",
                "Bridge: request to the end of the response (streams included).",
                quantiles("chatllm_http_request_duration_seconds", BRIDGE, "route", (0.95,)),
                "s",
            ),
        ],
    ),
    (
        "Tokens and engine",
        [
            Panel(
                "Tokens per second",
                "Prompt tokens processed and tokens generated.",
                [
                    total_rate("chatllm_prompt_tokens_total", SERVER, "prompt"),
                    total_rate("chatllm_generation_tokens_total", SERVER, "generated"),
                ],
            ),
            Panel(
                "Finish reasons",
                "stop (end of answer), length (max_new_tokens), abort (cancelled, timed out), error.",
                [rate_by("chatllm_finish_reason_total", SERVER, "reason", "{{reason}}")],
                "reqps",
            ),
            Panel(
                "KV-cache usage",
                "Fraction of the engine's KV cache in use.",
                [(f"max by (instance) (chatllm_kv_cache_usage_ratio{{{SERVER}}})", "{{instance}}")],
                "percentunit",
            ),
            Panel(
                "Engine running and waiting",
                "Requests inside the engine: generating, and waiting for a batch slot.",
                [
                    (f"sum(chatllm_engine_running_requests{{{SERVER}}})", "running"),
                    (f"sum(chatllm_engine_waiting_requests{{{SERVER}}})", "waiting"),
                ],
            ),
            Panel(
                "Speculative decoding",
                "Draft tokens the model checked and accepted per second (--speculative; 0 without). Accepted / "
                "drafted is the acceptance rate: low on free-form text, high on answers that quote their context.",
                [
                    total_rate("chatllm_spec_decode_draft_tokens_total", SERVER, "drafted"),
                    total_rate("chatllm_spec_decode_accepted_tokens_total", SERVER, "accepted"),
                ],
                width=24,
            ),
        ],
    ),
    (
        "Cache",
        [
            Panel(
                "Prefix-cache hit rate",
                "Share of prompt tokens served from the engines' prefix cache: the whole fleet, and each replica. "
                "The bridge's --routing prefix keeps it near a single replica's.",
                [
                    (f"{total_rate(CACHED, SERVER, '')[0]} / {total_rate(PROMPT, SERVER, '')[0]}", "fleet"),
                    ratio_by(CACHED, PROMPT, SERVER, "instance", "{{instance}}"),
                ],
                "percentunit",
                width=8,
            ),
            Panel(
                "KV cache per replica",
                "Tokens each replica's KV cache holds, and the share in use.",
                [
                    (f"max by (instance) (chatllm_kv_cache_capacity_tokens{{{SERVER}}})", "{{instance}} tokens"),
                    (f"max by (instance) (chatllm_kv_cache_usage_ratio{{{SERVER}}})", "{{instance}} in use"),
                ],
                width=8,
            ),
            Panel(
                "Hit rate by replica, as the bridges route",
                "Cached share of the prompt tokens of the answers each replica gave through the bridges.",
                [
                    ratio_by(
                        "chatllm_bridge_replica_cached_prompt_tokens_total",
                        "chatllm_bridge_replica_prompt_tokens_total",
                        BRIDGE,
                        "replica",
                        "{{replica}}",
                    )
                ],
                "percentunit",
                width=8,
            ),
            Panel(
                "Routing decisions by replica and reason",
                "prefix: the replica holding the longest prefix; load: the loads were imbalanced; fallback: no "
                "prefix worth following (new prompts spread); round-robin / least-load: those policies.",
                [
                    rate_by(
                        "chatllm_bridge_routing_decisions_total", BRIDGE, "replica, reason", "{{replica}} {{reason}}"
                    )
                ],
                "reqps",
                width=8,
            ),
            Panel(
                "Routing decision time",
                "Hashing the request's prefix and picking the replica.",
                quantiles("chatllm_bridge_routing_decision_seconds", BRIDGE, levels=(0.5, 0.99)),
                "s",
                width=8,
            ),
            Panel(
                "Replicas serving, and their load",
                "Replicas whose readiness is SERVING for each bridge, and each one's outstanding requests as the "
                "picker sees them.",
                [
                    (f"sum by (instance) (chatllm_bridge_replica_serving{{{BRIDGE}}})", "{{instance}} serving"),
                    (f"max by (replica) (chatllm_bridge_replica_load{{{BRIDGE}}})", "{{replica}} load"),
                ],
                width=8,
            ),
        ],
    ),
    (
        "Fleet: usage per token and the state store",
        [
            Panel(
                "Tokens used per token name",
                "Prompt, cached-prompt and completion tokens per second, by the name of the caller's token, "
                "summed over the server replicas (GET /api/usage has the totals).",
                [rate_by("chatllm_token_tokens_total", SERVER, "token, kind", "{{token}} {{kind}}")],
                width=8,
            ),
            Panel(
                "Generate requests per token name",
                "By status: RESOURCE_EXHAUSTED is a token over its rpm, tpm, streams or daily limit (or a full "
                "server), UNAVAILABLE includes a closed state store.",
                [
                    rate_by(
                        "chatllm_token_requests_total",
                        SERVER + ', method="Generate"',
                        "token, code",
                        "{{token}} {{code}}",
                    )
                ],
                "reqps",
                width=8,
            ),
            Panel(
                "State store",
                "1 while every process reaches the state store (--state-store); operations that could not.",
                [
                    (f"min(chatllm_state_store_up{{{BOTH}}})", "up"),
                    (f"sum(rate(chatllm_state_store_failures_total{{{BOTH}}}[{RATE}]))", "failures/s"),
                ],
                width=8,
            ),
        ],
    ),
    (
        "Knowledge base",
        [
            Panel(
                "Ingest latency",
                "Parse, split, embed and store one document.",
                quantiles("chatllm_ingest_duration_seconds", SERVER, levels=(0.5, 0.95)),
                "s",
                width=8,
            ),
            Panel(
                "Retrieval latency",
                "Embed the question and search the knowledge base.",
                quantiles("chatllm_retrieval_duration_seconds", SERVER, levels=(0.5, 0.95)),
                "s",
                width=8,
            ),
            Panel(
                "Chunks ingested",
                "Knowledge-base chunks stored per second.",
                [total_rate("chatllm_ingest_chunks_total", SERVER, "chunks")],
                width=8,
            ),
        ],
    ),
    (
        "Bridge WebSockets and processes",
        [
            Panel(
                "WebSocket connections",
                "Open WebSocket connections on the bridges.",
                [(f"sum by (instance) (chatllm_bridge_websocket_connections{{{BRIDGE}}})", "{{instance}}")],
                width=8,
            ),
            Panel(
                "WebSocket prompts by outcome",
                "Prompts answered over WebSockets.",
                [rate_by("chatllm_bridge_websocket_messages_total", BRIDGE, "outcome", "{{outcome}}")],
                "reqps",
                width=8,
            ),
            Panel(
                "History export",
                "Conversation history lines written, dropped or failed (--export-history-path).",
                [rate_by("chatllm_history_lines_total", SERVER, "outcome", "{{outcome}}")],
                width=8,
            ),
            Panel(
                "CPU",
                "CPU seconds per second, per process (1 = one core busy).",
                [(f"sum by (instance) (rate(process_cpu_seconds_total{{{BOTH}}}[{RATE}]))", "{{instance}}")],
            ),
            Panel(
                "Resident memory",
                "RSS per process.",
                [(f"max by (instance) (process_resident_memory_bytes{{{BOTH}}})", "{{instance}}")],
                "bytes",
            ),
        ],
    ),
]


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def templating() -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "refresh": 1,
        },
        variable("model", "Model", "label_values(chatllm_model_info, model)"),
        variable("instance", "Server", 'label_values(chatllm_model_info{model=~"$model"}, instance)'),
        variable("bridge", "Bridge", "label_values(chatllm_bridge_websocket_connections, instance)"),
    ]


def build() -> dict[str, Any]:
    layout = Layout()
    for title, panels in SECTIONS:
        layout.row(title)
        for panel in panels:
            layout.add(panel.to_json(), panel.width, panel.height)
    return {
        "uid": "chatllm-serve",
        "title": "ChatLLM Serve",
        "description": "Requests, latency, tokens, engine, knowledge base and processes of ChatLLM Serve.",
        "tags": ["chatllm", "llm", "serving"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": templating()},
        "panels": layout.panels,
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(build(), indent=2) + "\n")
