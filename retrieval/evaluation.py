"""Recall@k on a labelled question set (tests and bench/retrieval.py share it).

A set is a folder of documents plus `questions.jsonl`, one object per line:
{"question": ..., "file": <document filename>, "evidence": <a phrase of the answer>}.
A question is answered when one of the top-k chunks comes from `file` and
contains `evidence`. Labelling by evidence phrase rather than by chunk index
keeps the set valid for any chunk size.

`off_topic.jsonl` beside it holds questions the documents say nothing about
({"question": ...}); a retriever with a relevance threshold should return nothing
for them (`off_topic_rejection`).

`one_leg` ranks by the dense or the lexical leg alone, without fusion or threshold: what
each leg contributes (e.g. the English-only default model finds few Chinese answers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.retrieval.knowledge_bases import KnowledgeBases, RetrievedChunk
from chatllm.retrieval.lexical import tokenize

Retriever = Callable[[str, int], Sequence[RetrievedChunk]]
LEGS = ("dense", "lexical")
QUESTIONS_FILE = "questions.jsonl"
OFF_TOPIC_FILE = "off_topic.jsonl"


@dataclass(frozen=True)
class LabelledQuestion:
    question: str
    file: str
    evidence: str


@dataclass
class RecallReport:
    k: int
    questions: int
    found: int
    misses: list[tuple[LabelledQuestion, list[str]]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.questions if self.questions else 0.0


def load_questions(folder: Path) -> list[LabelledQuestion]:
    lines = (folder / QUESTIONS_FILE).read_text(encoding="utf-8").splitlines()
    return [LabelledQuestion(**json.loads(line)) for line in lines if line.strip()]


def load_off_topic(folder: Path) -> list[str]:
    lines = (folder / OFF_TOPIC_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def documents(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in (QUESTIONS_FILE, OFF_TOPIC_FILE))


def recall_at_k(retrieve: Retriever, questions: Sequence[LabelledQuestion], k: int = 3) -> RecallReport:
    report = RecallReport(k=k, questions=len(questions), found=0)
    for labelled in questions:
        chunks = retrieve(labelled.question, k)
        if any(c.file == labelled.file and labelled.evidence in c.text for c in chunks[:k]):
            report.found += 1
        else:
            report.misses.append((labelled, [f"{c.file}#{c.chunk}" for c in chunks[:k]]))
    return report


@dataclass
class RejectionReport:
    questions: int
    rejected: int  # questions for which nothing was retrieved
    answered: list[tuple[str, list[str]]] = field(default_factory=list)  # the others, with what came back

    @property
    def rate(self) -> float:
        return self.rejected / self.questions if self.questions else 0.0


def off_topic_rejection(retrieve: Retriever, questions: Sequence[str], k: int = 3) -> RejectionReport:
    report = RejectionReport(questions=len(questions), rejected=0)
    for question in questions:
        chunks = retrieve(question, k)
        if chunks:
            report.answered.append((question, [f"{c.file}#{c.chunk} {c.score:.3f}" for c in chunks]))
        else:
            report.rejected += 1
    return report


def one_leg(library: KnowledgeBases, knowledge_base: str, leg: str) -> Retriever:
    """A retriever that ranks by one leg's own score ("dense": cosine, "lexical": normalised BM25)."""
    if leg not in LEGS:
        raise ValueError(f"leg must be one of {LEGS}, not {leg!r}")

    def retrieve(question: str, k: int) -> list[RetrievedChunk]:
        if leg == "dense":
            scores, _ = library.dense_search(knowledge_base, library.embedder.encode_query(question), k)
        else:
            hits = library.indexes(knowledge_base).lexical.search(tokenize(question), k)
            scores = {h.key: h.score for h in hits}
        chunks = library.chunks(knowledge_base, list(scores))
        ranked = sorted((c for c in chunks.values()), key=lambda c: -scores[c.key])
        return [RetrievedChunk(c.document_id, c.file, c.chunk, scores[c.key], c.text) for c in ranked]

    return retrieve
