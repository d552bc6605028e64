"""Prometheus metrics of the gRPC server (one module per process, default registry).

Names follow Prometheus conventions: `chatllm_` prefix, base units in the name,
`_total` on counters. Engine gauges are read at scrape time from whatever
engines registered themselves (normally one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chatllm.kernel.state import failure as state_store_metrics
from chatllm.server.engines.base import EngineStats

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TOKEN_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter("chatllm_requests_total", "gRPC requests handled, by method and status code", ["method", "code"])
TOKEN_REQUESTS = Counter(
    "chatllm_token_requests_total",
    "gRPC requests by the name of the caller's token (anonymous: no token configured; unnamed: --token), "
    "method and status code",
    ["token", "method", "code"],
)
TOKEN_TOKENS = Counter(
    "chatllm_token_tokens_total",
    "Tokens used by the name of the caller's token, the model that answered, and kind: prompt, cached_prompt "
    "(the part of prompt whose KV cache was reused) or completion",
    ["token", "model", "kind"],
)
LIMIT_CHECK = Histogram(
    "chatllm_limit_check_seconds",
    "Time a request's token limits took to check in the state store, by step (admit: before it waits; "
    "reserve: its tokens, once the prompt is built)",
    ["step"],
    buckets=(0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0),
)
IN_FLIGHT = Gauge("chatllm_requests_in_flight", "gRPC requests being handled", ["method"])
QUEUE_DEPTH = Gauge("chatllm_queue_depth", "Generate requests admitted but waiting for a slot")
QUEUE_LIMIT = Gauge(
    "chatllm_queue_limit", "Most Generate requests that may wait for a slot (--max-queue; 0: nothing waits)"
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatllm_time_to_first_token_seconds", "Arrival to first generated text", buckets=LATENCY_BUCKETS
)
INTER_TOKEN = Histogram(
    "chatllm_inter_token_latency_seconds", "Time between generated tokens", buckets=TOKEN_LATENCY_BUCKETS
)
E2E_LATENCY = Histogram(
    "chatllm_request_duration_seconds", "Generate arrival to last token", ["channel"], buckets=LATENCY_BUCKETS
)
QUEUE_TIME = Histogram(
    "chatllm_queue_time_seconds", "Arrival until the engine scheduled the request", buckets=LATENCY_BUCKETS
)
PROMPT_TOKENS = Counter("chatllm_prompt_tokens_total", "Prompt tokens processed")
PROMPT_CACHED_TOKENS = Counter(
    "chatllm_prompt_cached_tokens_total",
    "Prompt tokens served from the prefix cache (their KV reused from an earlier request)",
)
GENERATION_TOKENS = Counter("chatllm_generation_tokens_total", "Tokens generated")
FINISH_REASONS = Counter("chatllm_finish_reason_total", "Finished generations by reason", ["reason"])
INGEST_LATENCY = Histogram(
    "chatllm_ingest_duration_seconds", "Document ingest time (parse, split, embed, store)", buckets=LATENCY_BUCKETS
)
INGEST_CHUNKS = Counter("chatllm_ingest_chunks_total", "Knowledge-base chunks stored")
RETRIEVAL_LATENCY = Histogram(
    "chatllm_retrieval_duration_seconds", "Knowledge-base retrieval time", buckets=LATENCY_BUCKETS
)
MODEL_INFO = Gauge("chatllm_model_info", "The served model (value 1)", ["model", "backend", "device", "dtype"])
READY = Gauge("chatllm_ready", "1 when the server is SERVING, 0 while loading or draining")
HISTORY_LINES = Counter(
    "chatllm_history_lines_total", "History export lines by outcome (written, dropped, failed)", ["outcome"]
)


class EngineCollector(Collector):
    """Engine running/waiting/KV usage and speculative decoding counts, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], EngineStats]] = []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = [source() for source in self.sources]
        yield GaugeMetricFamily(
            "chatllm_engine_running_requests", "Requests the engine is generating", value=sum(s.running for s in stats)
        )
        yield GaugeMetricFamily(
            "chatllm_engine_waiting_requests", "Requests waiting inside the engine", value=sum(s.waiting for s in stats)
        )
        yield GaugeMetricFamily(
            "chatllm_kv_cache_usage_ratio",
            "Fraction of the KV cache in use (0-1)",
            value=max((s.kv_cache_usage for s in stats), default=0.0),
        )
        yield GaugeMetricFamily(
            "chatllm_kv_cache_capacity_tokens",
            "Tokens the KV cache holds (0 when the engine does not say)",
            value=sum(s.kv_cache_tokens for s in stats),
        )
        yield CounterMetricFamily(
            "chatllm_spec_decode_draft_tokens",
            "Speculative decoding: tokens drafted and checked by the model (0 without --speculative)",
            value=sum(s.draft_tokens for s in stats),
        )
        yield CounterMetricFamily(
            "chatllm_spec_decode_accepted_tokens",
            "Speculative decoding: drafted tokens the model accepted (each one a step saved)",
            value=sum(s.accepted_draft_tokens for s in stats),
        )


ENGINES = EngineCollector()
REGISTRY.register(ENGINES)
_ = state_store_metrics  # chatllm_state_store_* (kernel.state.failure) are this process's series too


@dataclass
class PromptTally:
    """Prompt tokens since start and those served from the prefix cache, for GetServerInfo (the
    counters above say the same to Prometheus)."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0

    def add(self, prompt_tokens: int, cached_prompt_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.cached_prompt_tokens += cached_prompt_tokens
        PROMPT_TOKENS.inc(prompt_tokens)
        PROMPT_CACHED_TOKENS.inc(cached_prompt_tokens)


PROMPTS = PromptTally()
