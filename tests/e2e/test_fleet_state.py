"""The session's fleet (tests/fleet.py: two vLLM replicas and bridges on one Redis, `--state-store`) keeps
one record of usage: what GET /api/usage says on any bridge equals the sum of the `usage` blocks the
clients received through both bridges, a replica killed with SIGKILL mid-run included (the same test
checks what the bridges' routing does with the dead and the restarted replica); and Redis
stopped mid-run and started again (the fleet runs `--state-store-failure open`): every request is
answered, none waits on the dead store, and the usage of the outage arrives once Redis is back.
(Limits, priorities and the closed policy over two replicas and two bridges: the fast tier,
tests/component/test_fleet_limits_fast.py and test_fleet_kill_fast.py; under load: bench/fleet.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import requests

from tests.fleet import MODEL, Fleet, FleetBridge, ask, bridge_metrics, handbook, metric
from tests.redis_server import RedisServer

QUESTIONS = [f"In one sentence: what is {thing}?" for thing in ("rain", "a lighthouse", "bread", "a violin", "snow")]


def chat(url: str, index: int) -> dict[str, Any] | None:
    """One answer's usage block (None when the request failed: a replica killed under it)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
        "max_tokens": 6 + index % 5,
        "temperature": 0,
    }
    response = requests.post(url + "/v1/chat/completions", json=body, timeout=300)
    return response.json()["usage"] if response.status_code == 200 else None


def usage(bridge: FleetBridge) -> dict[str, int]:
    """The fleet's totals for this model (no tokens on the fleet: everyone is `anonymous`)."""
    report = requests.get(bridge.http_url + "/api/usage", timeout=30)
    assert report.status_code == 200, report.text
    rows = [row for row in report.json()["totals"] if row["model"] == MODEL and row["token"] == "anonymous"]
    keys = ("requests", "prompt_tokens", "completion_tokens")
    return {key: sum(row[key] for row in rows) for key in keys}


@contextmanager
def two_bridges(fleet: Fleet) -> Iterator[list[FleetBridge]]:
    with ExitStack() as stack:
        yield [stack.enter_context(fleet.bridge()) for _ in range(2)]


def wait_for_usage(bridge: FleetBridge, expected: dict[str, int], within: float = 30) -> dict[str, int]:
    deadline = time.monotonic() + within
    while (found := usage(bridge)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_a_replica_killed_mid_run_then_restarted(fleet: Fleet) -> None:
    """Two bridges under load when a replica is SIGKILLed: the survivor answers what follows, both bridges
    drop the dead replica and its prefix-index entries, the fleet's one usage record equals the sum of
    the usage blocks the clients received (what the dead replica answered before it died included), and
    once restarted, its index empty, the replica is the first choice for new prompts."""
    victim = fleet.replicas[0]
    try:
        with two_bridges(fleet) as bridges:
            before = usage(bridges[0])
            received: list[dict[str, Any]] = []
            for owner in ("Ivy Mill", "Kale Row"):  # new prefixes alternate: one for each replica's index
                system = {"role": "system", "content": handbook(owner)}
                received.append(ask(bridges[0].http_url, [system, {"role": "user", "content": "Hi"}])["usage"])
            assert metric(bridge_metrics(bridges[0]), "chatllm_bridge_prefix_index_blocks", replica=victim.target)
            ended: list[tuple[float, dict[str, Any] | None]] = []  # (when, usage; None: failed)

            def send(offset: int) -> None:
                for index in range(offset, offset + 12, 2):
                    ended.append((time.monotonic(), chat(bridges[index % 2].http_url, index)))

            senders = [threading.Thread(target=send, args=(offset,)) for offset in (0, 1)]
            for thread in senders:
                thread.start()
            deadline = time.monotonic() + 300
            while len(ended) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            # Mid-run: what it answered is recorded; what it was answering never reached a client.
            fleet.kill(victim.index)
            killed_at = time.monotonic()
            for thread in senders:
                thread.join(600)
            received += [reply for _, reply in ended if reply is not None]
            assert len(received) >= 12  # at most the two answers cut at the kill are missing
            assert all(reply is not None for at, reply in ended if at > killed_at + 1), ended  # the survivor serves
            for bridge in bridges:
                text = bridge_metrics(bridge)
                assert metric(text, "chatllm_bridge_replica_serving", replica=victim.target) == 0
                assert metric(text, "chatllm_bridge_prefix_index_blocks", replica=victim.target) == 0
            sent = {
                "requests": len(received),
                "prompt_tokens": sum(u["prompt_tokens"] for u in received),
                "completion_tokens": sum(u["completion_tokens"] for u in received),
            }
            expected = {key: before[key] + sent[key] for key in sent}
            for bridge in bridges:  # either bridge reads the fleet's one record
                assert wait_for_usage(bridge, expected) == expected

            fleet.restart(victim.index)
            deadline = time.monotonic() + 120
            while metric(bridge_metrics(bridges[0]), "chatllm_bridge_replica_serving", replica=victim.target) != 1:
                assert time.monotonic() < deadline, "the bridge did not see the restarted replica"
                time.sleep(0.2)
            decisions = "chatllm_bridge_routing_decisions_total"
            chosen = metric(bridge_metrics(bridges[0]), decisions, replica=victim.target)
            for i in range(4):
                ask(bridges[0].http_url, [{"role": "user", "content": f"After the restart, question {i}."}], 4)
            assert metric(bridge_metrics(bridges[0]), decisions, replica=victim.target) > chosen
    finally:
        fleet.revive()


def test_redis_stopped_and_started_again_under_the_fleet(fleet: Fleet, redis_server: RedisServer) -> None:
    with two_bridges(fleet) as bridges:
        assert chat(bridges[0].http_url, 0) is not None
        redis_server.stop()
        try:
            timings, received = [], []
            for index in range(6):
                started = time.monotonic()
                received.append(chat(bridges[index % 2].http_url, index))
                timings.append(time.monotonic() - started)
            report = requests.get(bridges[0].http_url + "/api/usage", timeout=30)
        finally:
            redis_server.start()  # same port, empty: no persistence
        assert all(reply is not None for reply in received)  # open: served without the store
        assert max(timings) < 30, timings  # answered at the model's pace, not after store timeouts
        assert report.status_code == 503 and report.json()["error"]["code"] == "state_store_unavailable"
        expected = {
            "requests": len(received),
            "prompt_tokens": sum(u["prompt_tokens"] for u in received if u),
            "completion_tokens": sum(u["completion_tokens"] for u in received if u),
        }
        assert wait_for_usage(bridges[1], expected) == expected  # what the replicas held, sent once
