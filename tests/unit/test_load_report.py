"""The load documents gateways read (kernel/load_report.py) and the routing flags' start-up checks."""

from __future__ import annotations

import pytest

from chatllm.kernel.config import Config
from chatllm.kernel.flags import validate
from chatllm.kernel.load_report import LoadSnapshot, sglang_loads, vllm_load
from chatllm.proto import pb


def test_a_server_info_becomes_one_rank_of_sglangs_document() -> None:
    info = pb.ServerInfo(
        active_requests=3,
        waiting_requests=2,
        kv_cache_usage=0.25,
        kv_cache_tokens=8192,
        prompt_tokens=1000,
        cached_prompt_tokens=750,
        max_concurrent=64,
    )
    snapshots = [LoadSnapshot.of(info), LoadSnapshot.of(pb.ServerInfo())]
    assert vllm_load(snapshots) == {"server_load": 5}
    document = sglang_loads(snapshots, "1.2.3")
    assert document["dp_rank_count"] == 2 and document["version"] == "1.2.3"
    first, idle = document["loads"]
    assert first == {
        "dp_rank": 0,
        "num_running_reqs": 3,
        "num_waiting_reqs": 2,
        "num_total_reqs": 5,
        "num_used_tokens": 2048,
        "max_total_num_tokens": 8192,
        "token_usage": 0.25,
        "cache_hit_rate": 0.75,
        "max_running_requests": 64,
    }
    assert idle["cache_hit_rate"] == 0.0 and idle["dp_rank"] == 1


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"routing_cache_threshold": 1.5}, "--routing-cache-threshold"),
        ({"routing_balance_abs": -1}, "--routing-balance-abs"),
        ({"routing_balance_rel": 0.5}, "--routing-balance-rel"),
    ],
)
def test_routing_flags_out_of_range_are_start_up_errors(values: dict[str, float], problem: str) -> None:
    with pytest.raises(SystemExit, match=problem):
        validate(Config.build(**values))
