"""Recall@3 on the labelled English and Chinese sets, and rejection of their off-topic questions, with the
server's default offline configuration (relevance threshold included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatllm.kernel.config import Config
from chatllm.retrieval.evaluation import (
    documents,
    load_off_topic,
    load_questions,
    off_topic_rejection,
    one_leg,
    recall_at_k,
)
from chatllm.retrieval.knowledge_bases import KnowledgeBases
from chatllm.retrieval.search_indexes import DEFAULT_MIN_SCORE
from chatllm.server.knowledge import open_knowledge_bases

pytestmark = pytest.mark.model  # the real embedder

DATA = Path(__file__).resolve().parent.parent / "data"
SETS = {"en": DATA / "kb_en", "zh": DATA / "kb_zh"}
DEFAULT_TOP_K = Config().kb.retrieval_top_k


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeBases]:
    """Everything as `chatllm server` defaults it (embedder, chunking, top-k) except where files go."""
    data_dir = tmp_path_factory.mktemp("quality")
    config = Config.build(data_dir=str(data_dir))
    knowledge = open_knowledge_bases(config.kb, config.common.kb_dir)
    assert knowledge.embedder.name == "all-MiniLM-L6-v2"
    for name, folder in SETS.items():
        for path in documents(folder):
            assert not knowledge.ingest(name, path.name, path.read_bytes()).unchanged
    yield knowledge
    knowledge.store.close()


@pytest.mark.parametrize("name", sorted(SETS))
def test_labelled_set_is_big_enough_and_points_at_real_text(name: str) -> None:
    questions = load_questions(SETS[name])
    assert len(questions) >= 20 and len(load_off_topic(SETS[name])) >= 20
    texts = {p.name: p.read_text(encoding="utf-8") for p in documents(SETS[name])}
    for q in questions:
        assert q.evidence in texts[q.file], q


@pytest.mark.parametrize("name", sorted(SETS))
def test_recall_at_3_with_the_default_configuration(library: KnowledgeBases, name: str) -> None:
    report = recall_at_k(lambda q, k: library.retrieve(name, q, k), load_questions(SETS[name]), k=DEFAULT_TOP_K)
    assert DEFAULT_TOP_K == 3 and Config().kb.kb_min_score == DEFAULT_MIN_SCORE == library.settings.min_score
    assert report.recall == 1.0, f"recall@3 {report.recall:.2f}; misses: {report.misses}"


@pytest.mark.parametrize("name", sorted(SETS))
def test_off_topic_questions_retrieve_nothing(library: KnowledgeBases, name: str) -> None:
    questions = load_off_topic(SETS[name])
    report = off_topic_rejection(lambda q, k: library.retrieve(name, q, k), questions, k=DEFAULT_TOP_K)
    assert report.rate == 1.0, f"off-topic questions that retrieved chunks: {report.answered}"
    # Without the threshold the same questions get top-k chunks: the threshold is what rejects them.
    unfiltered = off_topic_rejection(lambda q, k: library.retrieve(name, q, k, min_score=0), questions)
    assert unfiltered.rate < 0.1  # (a question sharing no term with any chunk gets nothing even then)


def test_chinese_questions_need_the_lexical_leg(library: KnowledgeBases) -> None:
    """The default embedder reads no Chinese: without BM25 the Chinese set fails, with it it passes."""
    questions = load_questions(SETS["zh"])
    dense_only = recall_at_k(one_leg(library, "zh", "dense"), questions)
    fused = recall_at_k(lambda q, k: library.retrieve("zh", q, k), questions)
    assert dense_only.recall < 0.8 <= fused.recall
