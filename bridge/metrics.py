"""Prometheus metrics of the bridge (default registry, served on its /metrics).

HTTP-level series are `chatllm_http_*`, generation seen through the bridge is
`chatllm_bridge_*` (labelled by protocol: http, sse, ws, openai), so in
`chatllm serve`, where server and bridge share one registry, nothing collides
with the server's `chatllm_*` series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
