"""BM25 over jieba/word terms (normalised scores, persistence), and the weighted score fusion."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from chatllm.retrieval.fusion import fuse
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


def test_scores_are_the_share_of_the_questions_idf_mass(index: LexicalIndex) -> None:
    everything = index.scores(tokenize("reset button")).of(["router"])["router"]
    half = index.scores(tokenize("reset button quantum")).of(["router"])["router"]
    assert 0.5 < everything <= 1.0
    assert 0 < half < everything  # a term no chunk has still counts in the question's mass
    assert index.scores(tokenize("reset router")).of(["lamp", "unknown-key"]) == {"lamp": 0.0, "unknown-key": 0.0}


def test_save_and_load_keep_scores_and_drop_dead_rows(index: LexicalIndex, tmp_path: Path) -> None:
    copy = LexicalIndex()
    copy.add((key, tokenize(text)) for key, text in DOCS.items())
    copy.add([("gone", ["router", "reset"])])
    copy.remove(["gone"])
    copy.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert loaded.keys() == set(DOCS)
    for question in ("年假有几天？", "how do I reset my router", "blinking lamp"):
        assert loaded.search(tokenize(question), 4) == index.search(tokenize(question), 4)
    loaded.add([("new", ["router"])])  # a loaded index keeps growing
    assert "new" in {h.key for h in loaded.search(["router"], 5)}


def test_fusion_combines_both_legs_scores() -> None:
    fused = fuse({"x": 0.8, "y": 0.5}, {"y": 0.9, "z": 0.4}, dense_weight=1.0)
    assert [f.key for f in fused] == ["y", "x", "z"]
    assert fused[0].score == pytest.approx((0.5 + 0.9) / 2) and fused[2].score == pytest.approx(0.2)
    assert (fused[0].dense, fused[0].lexical) == (0.5, 0.9)


def test_a_leg_without_weight_does_not_count() -> None:
    fused = fuse({"noise": 0.9}, {"right": 0.6}, dense_weight=0.0)
    assert [(f.key, f.score) for f in fused] == [("right", 0.6), ("noise", 0.0)]
    assert fuse({"a": -0.3}, {}, dense_weight=1.0, lexical_weight=0.0)[0].score == 0.0  # negative cosine: 0
