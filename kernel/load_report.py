"""What the HTTP probes of serving gateways read, in the shapes they parse.

SMG (Shepherd Model Gateway), vLLM Router, llm-d and KServe put "workers" behind them after probing
them over HTTP. SMG's worker discovery, watched against a replica, asks for `GET /health` (it
refuses a worker that answers 404), `/v1/models`, `/version`, `/server_info`, then polls
`/loads?model=...` (its own gateways' route: we answer 404 and it moves on), `/v1/loads?include=...`
and `/metrics`. Served here from one snapshot type, by the gRPC server's HTTP side (one replica) and
by the bridge (each replica it routes to, as one data-parallel rank of a bigger worker):

- `/health`: 200 while the readiness is SERVING, else 503 (vLLM's and SGLang's rule);
- `/load`: vLLM's `{"server_load": N}` (requests running or waiting);
- `/v1/loads`: SGLang's load document (`dp_rank_count`, one `loads` entry per rank: running,
  waiting, KV tokens used and held, token usage, prefix-cache hit rate), which SMG's load-aware
  policies and overload protection read;
- `/version`: `{"version": ...}`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadSnapshot:
    """One replica's load, as its GetServerInfo reports it."""

    running: int
    waiting: int
    kv_cache_usage: float  # 0-1
    kv_cache_tokens: int  # capacity
    prompt_tokens: int  # since start
    cached_prompt_tokens: int
    max_running: int  # its concurrency limit (0: the engine's)

    @classmethod
    def of(cls, info: Any) -> LoadSnapshot:
        """From a `chatllm.v1.ServerInfo` (read by field name: the kernel sits below the proto)."""
        return cls(
            info.active_requests,
            info.waiting_requests,
            info.kv_cache_usage,
            info.kv_cache_tokens,
            info.prompt_tokens,
            info.cached_prompt_tokens,
            info.max_concurrent,
        )

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def vllm_load(snapshots: Sequence[LoadSnapshot]) -> dict[str, int]:
    return {"server_load": sum(s.running + s.waiting for s in snapshots)}


def sglang_loads(snapshots: Sequence[LoadSnapshot], version: str) -> dict[str, Any]:
    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
        "version": version,
        "dp_rank_count": len(snapshots),
        "loads": [_rank(rank, s) for rank, s in enumerate(snapshots)],
    }


def _rank(rank: int, s: LoadSnapshot) -> dict[str, Any]:
    return {
        "dp_rank": rank,
        "num_running_reqs": s.running,
        "num_waiting_reqs": s.waiting,
        "num_total_reqs": s.running + s.waiting,
        "num_used_tokens": round(s.kv_cache_usage * s.kv_cache_tokens),
        "max_total_num_tokens": s.kv_cache_tokens,
        "token_usage": round(s.kv_cache_usage, 4),
        "cache_hit_rate": round(s.cache_hit_rate, 4),
        "max_running_requests": s.max_running,
    }
