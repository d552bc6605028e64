"""The in-process search structures of one knowledge base, and the retrieval settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chatllm.retrieval.chunk_texts import ChunkTexts
from chatllm.retrieval.dense import HnswIndex, HnswParams
from chatllm.retrieval.lexical import LexicalIndex

# Chosen from the labelled on-topic and off-topic questions in tests/data; how, and the
# score distributions, are in bench/results/retrieval-2026-12-02.md.
DEFAULT_MIN_SCORE = 0.34
ADD_BATCH = 5000


@dataclass(frozen=True)
class RetrievalSettings:
    min_score: float = DEFAULT_MIN_SCORE  # fused score below which a chunk is not retrieved
    hnsw: HnswParams = field(default_factory=HnswParams)
    snapshot_delay_seconds: float = 5.0  # after the last change, before the indexes are saved


@dataclass
class SearchIndexes:
    """BM25 always; with a local store (milvus-lite) also the HNSW index and the chunk texts, so a
    question needs no store call. A Milvus server searches vectors and returns texts itself."""

    lexical: LexicalIndex
    dense: HnswIndex | None
    texts: ChunkTexts | None

    @classmethod
    def empty(cls, dimension: int, params: HnswParams, local: bool) -> SearchIndexes:
        if not local:
            return cls(LexicalIndex(), None, None)
        return cls(LexicalIndex(), HnswIndex(dimension, params), ChunkTexts())

    def add(
        self, keys: Sequence[str], terms: Sequence[Sequence[str]], vectors: np.ndarray, texts: Sequence[str]
    ) -> None:
        self.lexical.add(zip(keys, terms, strict=True))
        if self.dense is not None:
            self.dense.add(keys, vectors)
        if self.texts is not None:
            self.texts.add(keys, texts)

    def remove(self, keys: Sequence[str]) -> None:
        self.lexical.remove(keys)
        if self.dense is not None:
            self.dense.remove(keys)
        if self.texts is not None:
            self.texts.remove(keys)

    def add_rows(self, rows: Iterable[Mapping[str, Any]], generations: Mapping[str, str]) -> list[str]:
        """Add stored chunk rows (pk, document_id, generation, terms[, vector, text]) of the wanted
        (document -> generation) pairs; returns the keys of the rows that were not wanted."""
        unwanted: list[str] = []
        batch: list[Mapping[str, Any]] = []
        for row in rows:
            if generations.get(row["document_id"]) != row["generation"]:
                unwanted.append(row["pk"])
                continue
            batch.append(row)
            if len(batch) >= ADD_BATCH:
                self._add_batch(batch)
                batch = []
        self._add_batch(batch)
        return unwanted

    def _add_batch(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        keys = [r["pk"] for r in rows]
        self.lexical.add((r["pk"], r["terms"].split()) for r in rows)
        if self.dense is not None:
            self.dense.add(keys, np.asarray([r["vector"] for r in rows], dtype=np.float32))
        if self.texts is not None:
            self.texts.add(keys, [r["text"] for r in rows])

    def keys_of_documents(self, documents: Mapping[str, str]) -> list[str]:
        """Indexed keys of the given (document -> generation) pairs."""
        prefixes = tuple(f"{d}:{g}:" for d, g in documents.items())
        return [k for k in self.lexical.keys() if k.startswith(prefixes)] if prefixes else []
