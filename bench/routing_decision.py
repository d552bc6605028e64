"""The routing decision's own cost: hashing a request's prefix and picking a replica, with the
prefix index holding 100k blocks (bench/routing.py reports it)."""

from __future__ import annotations

import gc
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.routing_load import document
from chatllm.bridge.routing.picker import Candidate, Picker, RoutingRules
from chatllm.bridge.routing.prefix_index import PrefixIndex
from chatllm.bridge.routing.prefix_key import request_blocks
from chatllm.proto import pb

INDEXED_BLOCKS = 100_000


def decision_times(decisions: int = 20_000, replicas: int = 2) -> dict[str, Any]:
    index = PrefixIndex()
    names = [f"10.0.0.{i}:50051" for i in range(replicas)]
    for name in names:
        index.set_capacity(name, INDEXED_BLOCKS // replicas)
    picker = Picker(RoutingRules(), index)
    tenants = [
        pb.GenerateRequest(
            messages=[pb.Message(role="system", content=document(t)), pb.Message(role="user", content="?")]
        )
        for t in range(5_000)
    ]
    for request in tenants:  # fill the index to its capacity
        picker.pick([Candidate(n, 0) for n in names], request_blocks(request))
    rng, times = random.Random(1), []
    gc.collect()
    for _ in range(decisions):
        request = tenants[rng.randrange(len(tenants))]
        candidates = [Candidate(name, rng.randrange(4)) for name in names]
        started = time.perf_counter()
        picker.pick(candidates, request_blocks(request))
        times.append(time.perf_counter() - started)
    times.sort()
    return {
        "indexed_blocks": sum(index.sizes().values()),
        "replicas": replicas,
        "request_blocks": len(request_blocks(tenants[0])),
        "decisions": decisions,
        "p50_us": times[len(times) // 2] * 1e6,
        "p99_us": times[int(len(times) * 0.99)] * 1e6,
        "max_us": times[-1] * 1e6,
    }


if __name__ == "__main__":
    print(decision_times())
