"""Prometheus metrics of the bridge (default registry, served on its /metrics).

HTTP-level series are `chatllm_http_*`, generation seen through the bridge is
`chatllm_bridge_*` (labelled by protocol: http, sse, ws, openai), so in
`chatllm serve`, where server and bridge share one registry, nothing collides
with the server's `chatllm_*` series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TOKEN_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "chatllm_http_requests_total",
    "HTTP requests answered by the bridge, by route, method and status",
    ["route", "method", "status"],
)
TOKEN_REQUESTS = Counter(
    "chatllm_bridge_token_requests_total",
    "HTTP requests answered by the bridge, by the name of the token they were accepted with (anonymous: the "
    "bridge checks no token, or the route is public; unnamed: --token), route and status",
    ["token", "route", "status"],
)
HTTP_IN_FLIGHT = Gauge("chatllm_http_requests_in_flight", "HTTP requests being handled", ["route"])
HTTP_DURATION = Histogram(
    "chatllm_http_request_duration_seconds",
    "Time from request to the end of the response (streams included)",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatllm_bridge_time_to_first_token_seconds",
    "Bridge-side: request sent upstream to first text received",
    ["protocol"],
    buckets=LATENCY_BUCKETS,
)
INTER_TOKEN = Histogram(
    "chatllm_bridge_inter_token_latency_seconds",
    "Bridge-side: time between received tokens",
    ["protocol"],
    buckets=TOKEN_LATENCY_BUCKETS,
)
GENERATION_DURATION = Histogram(
    "chatllm_bridge_generation_duration_seconds",
    "Bridge-side: request sent upstream to end of the answer",
    ["protocol"],
    buckets=LATENCY_BUCKETS,
)
GENERATIONS = Counter(
    "chatllm_bridge_generations_total",
    "Generate calls made upstream, by protocol and gRPC outcome",
    ["protocol", "code"],
)
GENERATIONS_IN_FLIGHT = Gauge(
    "chatllm_bridge_generations_in_flight", "Generate calls streaming through the bridge", ["protocol"]
)
PROMPT_TOKENS = Counter("chatllm_bridge_prompt_tokens_total", "Prompt tokens of answered requests", ["protocol"])
GENERATION_TOKENS = Counter(
    "chatllm_bridge_generation_tokens_total", "Tokens generated for bridge clients", ["protocol"]
)
FINISH_REASONS = Counter("chatllm_bridge_finish_reason_total", "Finished answers by reason", ["protocol", "reason"])
WEBSOCKET_CONNECTIONS = Gauge("chatllm_bridge_websocket_connections", "Open WebSocket connections")
WEBSOCKET_MESSAGES = Counter(
    "chatllm_bridge_websocket_messages_total", "WebSocket prompts answered, by outcome", ["outcome"]
)

# Routing across replicas (bridge/routing): which replica got each Generate call and why, what each
# replica's prefix cache gave back as the bridge saw it, and the fleet's state at scrape time.
ROUTING_DECISIONS = Counter(
    "chatllm_bridge_routing_decisions_total",
    "Generate calls routed to each replica, by reason (prefix: longest cached prefix; load: the loads were "
    "imbalanced; fallback: no prefix worth following; round-robin / least-load: those policies)",
    ["replica", "reason"],
)
ROUTING_DECISION_SECONDS = Histogram(
    "chatllm_bridge_routing_decision_seconds",
    "Time to choose a replica (hashing the request's prefix included)",
    buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
ROUTING_RETRIES = Counter(
    "chatllm_bridge_routing_retries_total",
    "Generate calls moved to another replica because this one failed before answering",
    ["replica"],
)
REPLICA_PROMPT_TOKENS = Counter(
    "chatllm_bridge_replica_prompt_tokens_total", "Prompt tokens of the answers each replica gave", ["replica"]
)
REPLICA_CACHED_PROMPT_TOKENS = Counter(
    "chatllm_bridge_replica_cached_prompt_tokens_total",
    "Prompt tokens each replica served from its prefix cache",
    ["replica"],
)


@dataclass(frozen=True)
class ReplicaState:
    name: str
    serving: bool
    in_flight: int
    load: int
    index_blocks: int


class ReplicaCollector(Collector):
    """Each replica's health, load and prefix-index size, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], list[ReplicaState]]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = [state for source in self.sources for state in source()]
        families = {
            "serving": GaugeMetricFamily(
                "chatllm_bridge_replica_serving", "1 while the replica's readiness is SERVING", labels=["replica"]
            ),
            "in_flight": GaugeMetricFamily(
                "chatllm_bridge_replica_in_flight",
                "Generate calls this bridge has open on the replica",
                labels=["replica"],
            ),
            "load": GaugeMetricFamily(
                "chatllm_bridge_replica_load",
                "The replica's load as the picker sees it: in flight here, or running + waiting as it reported",
                labels=["replica"],
            ),
            "index_blocks": GaugeMetricFamily(
                "chatllm_bridge_prefix_index_blocks",
                "Prefix blocks the bridge believes the replica has cached",
                labels=["replica"],
            ),
        }
        for state in states:
            for attribute, family in families.items():
                family.add_metric([state.name], float(getattr(state, attribute)))
        yield from families.values()


REPLICAS = ReplicaCollector()
REGISTRY.register(REPLICAS)
