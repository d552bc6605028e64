"""Two `chatllm server` replicas (the session's fleet, tests/fleet.py: vLLM, one thread each) behind
`chatllm bridge`: which replica answers each request, what the prefix cache gives back through the
bridge compared with a single replica, and the gRPC front door. A replica lost and restarted mid-run:
test_fleet_state.py; SMG in front of our workers: test_gateways.py. Figures with more load: bench/routing.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import openai
import requests
import websocket  # websocket-client
from openai.types.responses import Response

from chatllm.clients import ChatClient
from tests.fleet import MODEL, Fleet, ask, bridge_metrics, handbook, metric


def generated(fleet: Fleet) -> list[float]:
    """Generate calls each replica has answered so far (its own /metrics)."""
    return [
        metric(requests.get(r.metrics_url + "/metrics", timeout=10).text, "chatllm_requests_total", method="Generate")
        for r in fleet.replicas
    ]


def conversations(url: str, owners: list[str], turns: int) -> float:
    """Interleaved chats, one per owner; the share of the prompt tokens of turns 2.. served from the cache."""
    chats = [[{"role": "system", "content": handbook(owner)}] for owner in owners]
    prompt = cached = 0
    for turn in range(turns):
        for chat in chats:
            chat.append({"role": "user", "content": f"Question {turn + 1}: what does rule {turn * 7} say?"})
            reply = ask(url, chat)
            chat.append({"role": "assistant", "content": reply["choices"][0]["message"]["content"]})
            if turn > 0:
                usage = reply["usage"]
                prompt += usage["prompt_tokens"]
                cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return cached / prompt


def test_unrelated_prompts_are_split_across_both_replicas(fleet: Fleet) -> None:
    before = generated(fleet)
    with fleet.bridge() as bridge:
        for i in range(8):
            ask(bridge.http_url, [{"role": "user", "content": f"Question {i}: name a colour and a fruit."}], 4)
        decisions = bridge_metrics(bridge)
    served = [after - was for after, was in zip(generated(fleet), before, strict=True)]
    assert sum(served) == 8 and min(served) >= 3, served
    assert metric(decisions, "chatllm_bridge_routing_decisions_total", reason="fallback") == 8


def test_multi_turn_chats_keep_their_cache_as_on_a_single_replica(fleet: Fleet) -> None:
    with fleet.bridge(upstream=fleet.replicas[0].target) as single:
        alone = conversations(single.http_url, ["Alder Inn", "Birch Hall", "Cedar Lodge"], 3)
    with fleet.bridge() as bridge:
        routed = conversations(bridge.http_url, ["Dune Hotel", "Elm House", "Fir Court"], 3)
        decisions = bridge_metrics(bridge)
    assert alone > 0.5, alone  # the handbook is reused turn after turn
    assert routed >= 0.9 * alone, (routed, alone)
    assert metric(decisions, "chatllm_bridge_routing_decisions_total", reason="prefix") >= 6  # turns 2-3 followed


def websocket_rounds(url: str, owner: str, rounds: int) -> float:
    """A WebSocket conversation (the connection keeps the history); the cached share of rounds 2..."""
    ws = websocket.create_connection(url, timeout=300)
    prompt = cached = 0
    try:
        for n in range(rounds):
            question = handbook(owner) if n == 0 else f"And what does rule {n * 5} say?"
            frame = {"prompt": question, "max_new_tokens": 8, "temperature": 0, "stream_format": "events"}
            ws.send(json.dumps(frame))
            final = None
            while (reply := ws.recv()) != "<EOS>":
                final = json.loads(reply).get("final", final)
            assert final is not None
            if n > 0:
                prompt += final["usage"]["prompt_tokens"]
                cached += (final["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    finally:
        ws.close()
    return cached / prompt


def test_a_websocket_conversation_keeps_its_cache(fleet: Fleet) -> None:
    with fleet.bridge(upstream=fleet.replicas[1].target) as single:
        alone = websocket_rounds(single.ws_url, "Gorse Farm", 5)
    with fleet.bridge() as bridge:
        routed = websocket_rounds(bridge.ws_url, "Heath Barn", 5)
    assert alone > 0.5 and routed >= 0.9 * alone, (routed, alone)


def test_a_chained_response_goes_to_the_replica_that_answered_its_first_turn(fleet: Fleet, tmp_path: Path) -> None:
    """A Responses chain (previous_response_id) reaches the engine as the whole conversation in one
    Generate, so its prefix is the first turn's: two chains, started apart, each follow their first turn."""
    with fleet.bridge("--data-dir", str(tmp_path)) as bridge:
        client = openai.OpenAI(base_url=bridge.http_url + "/v1", api_key="unused", max_retries=0)
        chains = []
        for owner in ("Larch Wharf", "Maple Quay"):
            before = generated(fleet)
            first = respond(client, owner, "What does rule 2 say?")
            chains.append((owner, first.id, served_by(fleet, before)))
        assert {replica for _, _, replica in chains} == {0, 1}  # new prefixes spread: the check below can fail
        for owner, first_id, replica in chains:
            before = generated(fleet)
            second = respond(client, owner, "And rule 3?", previous_response_id=first_id)
            assert second.previous_response_id == first_id and second.output_text
            assert served_by(fleet, before) == replica
            assert second.usage is not None and second.usage.input_tokens_details.cached_tokens > 0
        decisions = bridge_metrics(bridge)
    assert metric(decisions, "chatllm_bridge_routing_decisions_total", reason="prefix") >= 2


def respond(client: openai.OpenAI, owner: str, question: str, previous_response_id: str | None = None) -> Response:
    return client.responses.create(
        model=MODEL,
        instructions=handbook(owner),
        input=question,
        previous_response_id=previous_response_id,
        max_output_tokens=8,
        temperature=0,
    )


def served_by(fleet: Fleet, before: list[float]) -> int:
    """The one replica that answered a Generate since `before` (generated(fleet))."""
    grown = [i for i, (after, was) in enumerate(zip(generated(fleet), before, strict=True)) if after > was]
    assert len(grown) == 1, grown
    return grown[0]


def test_the_grpc_front_door_forwards_to_the_fleet(fleet: Fleet) -> None:
    with fleet.bridge("--grpc-port", "0") as bridge:
        port = int(bridge.process.wait_for_log(r"gRPC front door listening on \S+:(\d+)", 30).group(1))
        with ChatClient(f"127.0.0.1:{port}") as client:
            system = handbook("Juniper Yard")
            first = client.chat("What does rule 3 say?", system_prompt=system, max_new_tokens=8, temperature=0)
            second = client.chat("And rule 4?", system_prompt=system, max_new_tokens=8, temperature=0)
            assert first.text and second.finish_reason in ("stop", "length")
            assert second.usage.cached_prompt_tokens > 0  # routed by its prefix to the replica that has it
            info = client.server_info()
    assert info.kv_cache_tokens > 0 and info.cached_prompt_tokens > 0


def test_chatllm_info_shows_the_cache(fleet: Fleet) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatllm.clients.cli", "info", "--target", fleet.replicas[1].target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"prefix cache: (\d+) of (\d+) prompt tokens served from it \((\S+)%\)", result.stdout)
    assert match and 0 < int(match.group(1)) <= int(match.group(2)), result.stdout
    assert re.search(r"KV cache: \d+% in use of \d+ tokens", result.stdout), result.stdout
