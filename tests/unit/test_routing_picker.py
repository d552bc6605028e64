"""The replica picker and its prefix index (bridge/routing): pure logic, no servers."""

from __future__ import annotations

from collections import Counter

import pytest

from chatllm.bridge.routing.picker import Candidate, NoReplicaError, Picker, RoutingRules
from chatllm.bridge.routing.prefix_index import PrefixIndex
from chatllm.bridge.routing.prefix_key import BLOCK_CHARS, block_hashes, request_blocks, routed_text
from chatllm.proto import pb

DOCUMENT = "".join(f"Clause {i}: the tenant shall keep the premises in good order. " for i in range(60))


def chat(*contents: str, system: str = "") -> pb.GenerateRequest:
    messages = [pb.Message(role="system", content=system)] if system else []
    messages += [pb.Message(role="user" if i % 2 == 0 else "assistant", content=c) for i, c in enumerate(contents)]
    return pb.GenerateRequest(messages=messages)


def picker(mode: str = "prefix", capacity: int = 10_000, **rules: float) -> Picker:
    index = PrefixIndex()
    for name in ("a", "b"):
        index.set_capacity(name, capacity)
    return Picker(RoutingRules(mode=mode, **rules), index)  # type: ignore[arg-type]


IDLE = [Candidate("a", 0), Candidate("b", 0)]


def test_blocks_are_chained_and_whole() -> None:
    text = "x" * (3 * BLOCK_CHARS + 5)
    blocks = block_hashes(text)
    assert len(blocks) == 3 and len(set(blocks)) == 3  # same content, different position: different hash
    assert block_hashes("y" + text[1:])[1:] != blocks[1:]  # a changed first block changes every later one
    assert block_hashes(text[: 2 * BLOCK_CHARS]) == blocks[:2]


def test_the_key_follows_the_order_the_model_reads() -> None:
    turn1 = chat(DOCUMENT + " Who cleans?", system="You are a lawyer.")
    turn2 = chat(DOCUMENT + " Who cleans?", "The tenant.", "And who repairs?", system="You are a lawyer.")
    first, second = request_blocks(turn1), request_blocks(turn2)
    shared = len(routed_text(turn1)) // BLOCK_CHARS
    assert second[:shared] == first[:shared]
    other_system = chat(DOCUMENT + " Who cleans?", system="You are a poet.")
    assert request_blocks(other_system)[0] != first[0]
    legacy = pb.GenerateRequest(system_prompt="You are a lawyer.", prompt="And who repairs?")
    legacy.history.add(user=DOCUMENT + " Who cleans?", assistant="The tenant.")
    assert routed_text(legacy).startswith(routed_text(pb.GenerateRequest(system_prompt="You are a lawyer.")))
    adapter = chat(DOCUMENT, system="You are a lawyer.")
    adapter.model = "legal-lora"
    assert request_blocks(adapter)[0] != first[0]  # an adapter's cache is its own


def test_a_conversation_stays_on_its_replica_and_new_ones_spread() -> None:
    p = picker()
    first = [p.pick(IDLE, request_blocks(chat(f"{i} " + DOCUMENT))) for i in range(4)]
    assert [d.reason for d in first] == ["fallback"] * 4
    assert Counter(d.replica for d in first) == {"a": 2, "b": 2}
    for i, decision in enumerate(first):
        follow_up = p.pick(IDLE, request_blocks(chat(f"{i} " + DOCUMENT, "Noted.", "Summarise it.")))
        assert (follow_up.replica, follow_up.reason) == (decision.replica, "prefix")
        assert follow_up.matched_blocks == len(DOCUMENT) // BLOCK_CHARS


def test_ties_on_the_prefix_go_to_the_less_loaded_replica() -> None:
    p = picker()
    blocks = request_blocks(chat(DOCUMENT))
    p.index.insert("a", blocks)
    p.index.insert("b", blocks)
    assert p.pick([Candidate("a", 2), Candidate("b", 1)], blocks).replica == "b"


def test_imbalanced_loads_send_the_request_to_the_least_loaded() -> None:
    p = picker(balance_abs=4, balance_rel=1.5)
    blocks = request_blocks(chat(DOCUMENT))
    p.index.insert("a", blocks)
    assert p.pick([Candidate("a", 4), Candidate("b", 0)], blocks).reason == "prefix"  # 4 more is not > 4
    spilled = p.pick([Candidate("a", 6), Candidate("b", 1)], blocks)
    assert (spilled.replica, spilled.reason) == ("b", "load")
    assert p.pick([Candidate("a", 16), Candidate("b", 11)], blocks).reason == "prefix"  # 16 < 1.5 * 11


def test_a_match_below_the_threshold_is_not_followed() -> None:
    p = picker(cache_threshold=0.5)
    shared = "You are a helpful assistant. " * 5  # about one block
    p.index.insert("a", request_blocks(chat(shared + "A" * 400)))
    decision = p.pick([Candidate("a", 1), Candidate("b", 0)], request_blocks(chat(shared + "B" * 400)))
    assert (decision.replica, decision.reason) == ("b", "fallback")


def test_unrelated_prompts_split_evenly() -> None:
    p = picker(capacity=50)
    picks = Counter(p.pick(IDLE, request_blocks(chat(f"question {i} " * 40))).replica for i in range(200))
    assert picks["a"] == picks["b"] == 100


def test_round_robin_and_least_load() -> None:
    rr = picker("round-robin")
    assert [rr.pick(IDLE).replica for _ in range(4)] == ["a", "b", "a", "b"]
    least = picker("least-load")
    assert least.pick([Candidate("a", 3), Candidate("b", 1)]).replica == "b"
    assert {least.pick(IDLE).replica for _ in range(2)} == {"a", "b"}
    assert rr.index.sizes() == {"a": 0, "b": 0}  # only the prefix policy keeps the index


def test_no_replica_and_unknown_mode() -> None:
    with pytest.raises(NoReplicaError):
        picker().pick([], [1])
    with pytest.raises(ValueError, match="--routing"):
        picker("random")


def test_the_index_evicts_least_recently_routed_tails_first() -> None:
    index = PrefixIndex()
    index.set_capacity("a", 6)
    old, new = [1, 2, 3, 4], [5, 6, 7, 8]
    index.insert("a", old)
    index.insert("a", new)
    assert index.matched(["a"], new) == {"a": 4}
    assert index.matched(["a"], old) == {"a": 2}  # its head survived, its tail went
    index.set_capacity("a", 2)
    assert index.matched(["a"], new) == {"a": 2} and index.size("a") == 2
    index.forget("a")
    assert index.matched(["a", "gone"], new) == {"a": 0, "gone": 0}
