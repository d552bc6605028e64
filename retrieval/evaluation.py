"""Recall@k on a labelled question set (tests and bench/retrieval.py share it).

A set is a folder of documents plus `questions.jsonl`, one object per line:
{"question": ..., "file": <document filename>, "evidence": <a phrase of the answer>}.
A question is answered when one of the top-k chunks comes from `file` and
contains `evidence`. Labelling by evidence phrase rather than by chunk index
keeps the set valid for any chunk size.

`off_topic.jsonl` beside it holds questions the documents say nothing about
({"question": ...}); a retriever with a relevance threshold should return nothing
for them (`off_topic_rejection`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.retrieval.knowledge_bases import RetrievedChunk

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


def recall_at_k(
    retrieve: Callable[[str, int], Sequence[RetrievedChunk]], questions: Sequence[LabelledQuestion], k: int = 3
) -> RecallReport:
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


def off_topic_rejection(
    retrieve: Callable[[str, int], Sequence[RetrievedChunk]], questions: Sequence[str], k: int = 3
) -> RejectionReport:
    report = RejectionReport(questions=len(questions), rejected=0)
    for question in questions:
        chunks = retrieve(question, k)
        if chunks:
            report.answered.append((question, [f"{c.file}#{c.chunk} {c.score:.3f}" for c in chunks]))
        else:
            report.rejected += 1
    return report
