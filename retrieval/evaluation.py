"""Recall@k on a labelled question set (tests and bench/retrieval.py share it).

A set is a folder of documents plus `questions.jsonl`, one object per line:
{"question": ..., "file": <document filename>, "evidence": <a phrase of the answer>}.
A question is answered when one of the top-k chunks comes from `file` and
contains `evidence`. Labelling by evidence phrase rather than by chunk index
keeps the set valid for any chunk size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.retrieval.knowledge_bases import RetrievedChunk

QUESTIONS_FILE = "questions.jsonl"


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


def documents(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != QUESTIONS_FILE)


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
