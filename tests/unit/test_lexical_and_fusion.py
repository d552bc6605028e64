"""BM25 over jieba/word terms, and weighted reciprocal-rank fusion."""

from __future__ import annotations

import itertools

import pytest

from chatllm.retrieval.fusion import RankedList, reciprocal_rank_fusion
from chatllm.retrieval.lexical import LexicalIndex, initialise_segmenter, stem, tokenize

DOCS = {
    "leave": "员工每年享有十五天带薪年假，入职满三年后增加到二十天。",
    "invoice": "差旅费用需在出差结束后三十天内提交发票。",
    "router": "Hold the reset button for twelve seconds to restore the router's factory settings.",
    "lamp": "A blinking red lamp means the firmware update failed.",
}


@pytest.fixture(scope="module")
def index() -> LexicalIndex:
    initialise_segmenter()
    built = LexicalIndex()
    built.add((key, tokenize(text)) for key, text in DOCS.items())
    return built


def test_tokenize_segments_chinese_and_folds_english() -> None:
    terms = tokenize("员工的带薪年假 — The Routers were RESET 3.5 times")
    assert {"员工", "带薪", "router", "reset", "3.5", "time"} <= set(terms)
    assert "的" not in terms and "the" not in terms
    assert stem("batteries") == "battery" and stem("reboots") == "reboot" and stem("x200") == "x200"


@pytest.mark.parametrize(
    ("question", "best"),
    [
        ("年假有几天？", "leave"),
        ("发票要多久内提交", "invoice"),
        ("how do I reset my router", "router"),
        ("what does a blinking red lamp mean", "lamp"),
    ],
)
def test_bm25_ranks_the_matching_chunk_first(index: LexicalIndex, question: str, best: str) -> None:
    hits = index.search(tokenize(question), 3)
    assert hits[0].key == best
    assert all(a.score >= b.score > 0 for a, b in itertools.pairwise(hits))


def test_no_shared_term_means_no_hit(index: LexicalIndex) -> None:
    assert index.search(tokenize("quantum chromodynamics"), 3) == []


def test_remove_replace_and_compact() -> None:
    built = LexicalIndex()
    built.add((f"filler{i}", ["filler", f"t{i}"]) for i in range(1500))
    built.add([("a", ["apple", "pie"]), ("b", ["apple"])])
    assert [h.key for h in built.search(["pie"], 5)] == ["a"]
    built.add([("a", ["banana"])])  # same key: replaced
    assert built.search(["pie"], 5) == [] and next(h.key for h in built.search(["banana"], 5)) == "a"
    assert built.remove([f"filler{i}" for i in range(1500)]) == 1500  # triggers compaction
    assert built.keys() == {"a", "b"} and len(built) == 2
    assert [h.key for h in built.search(["apple"], 5)] == ["b"]
    assert [h.key for h in built.search(["banana"], 5)] == ["a"]


def test_rrf_rewards_agreement_between_legs() -> None:
    fused = reciprocal_rank_fusion([RankedList(["x", "y", "z"]), RankedList(["y", "w"])], limit=3)
    assert [key for key, _ in fused] == ["y", "x", "w"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_a_leg_without_weight_does_not_vote() -> None:
    fused = reciprocal_rank_fusion([RankedList(["noise1", "noise2"], weight=0.0), RankedList(["right"])], limit=2)
    assert fused == [("right", pytest.approx(1 / 61))]
    half = reciprocal_rank_fusion([RankedList(["a"], weight=0.5), RankedList(["b"])], limit=2)
    assert [key for key, _ in half] == ["b", "a"]
