"""The dense leg with milvus-lite: a FAISS HNSW index in this process, persisted beside the store.

Why not milvus-lite's own search: profiled at 100k chunks (bench/results/retrieval-2026-12-02.md),
one milvus-lite 3.2.2 search took ~68 ms, of which FAISS itself was ~2 ms; the rest is
its pure-Python executor walking every row on every query (a per-row dict of max
sequence numbers for de-duplication, then a per-row tombstone check). Its cost grows
with the collection whatever the index, so sealing segments or index parameters
cannot fix it. milvus-lite stays the store of record (text, terms, vectors, the
manifest); this index only answers "which keys are nearest", like the lexical index.
A Milvus server searches its own HNSW index instead (see `MilvusStore.search`).

Rows are appended; a removed key is masked out of searches (FAISS HNSW cannot delete)
and the index is rebuilt without them once they are the majority.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatllm.retrieval.row_keys import RowKeys


@dataclass(frozen=True)
class HnswParams:
    """FAISS HNSW: M links per node, efConstruction at build, efSearch per query (recall vs time)."""

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 192


class HnswIndex:
    """Nearest chunk keys by inner product of unit vectors (= cosine). Thread-safe."""

    def __init__(self, dimension: int, params: HnswParams) -> None:
        import faiss

        self.dimension = dimension
        self.params = params
        self._index = faiss.IndexHNSWFlat(dimension, params.m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = params.ef_construction
        self._rows = RowKeys()
        self._lock = threading.Lock()
        self._selector: object | None = None  # cached IDSelectorBitmap while rows are dead
        self._bitmap: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Append (key, vector) rows; a key already present is replaced."""
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self.dimension)
        with self._lock:
            self._rows.remove(k for k in keys if k in self._rows)
            self._rows.append(keys)
            self._index.add(vectors)
            self._selector = None
            if self._rows.dead > 1000 and self._rows.dead > len(self._rows):
                self._rebuild_locked()

    def remove(self, keys: Sequence[str] | set[str]) -> int:
        with self._lock:
            removed = self._rows.remove(keys)
            self._selector = None
            return removed

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
        """The `limit` nearest live keys with their cosine similarity, best first."""
        import faiss

        with self._lock:
            if not len(self._rows):
                return []
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(self.params.ef_search, limit)
            if self._rows.dead:
                params.sel = self._live_selector_locked()
            query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dimension)
            scores, rows = self._index.search(query, limit, params=params)
            score_of = dict(zip(rows[0].tolist(), scores[0].tolist(), strict=True))
            return [(key, score_of[row]) for row, key in self._rows.live_pairs(rows[0][rows[0] >= 0])]

    def similarities(self, vector: np.ndarray, keys: Sequence[str]) -> dict[str, float]:
        """Exact cosine of `vector` with the stored vectors of `keys` (those present)."""
        with self._lock:
            present = [(k, r) for k in keys if (r := self._rows.row(k)) is not None]
            if not present:
                return {}
            stored = np.vstack([self._index.reconstruct(int(r)) for _, r in present])
        values = stored @ np.asarray(vector, dtype=np.float32)
        return {k: float(v) for (k, _), v in zip(present, values, strict=True)}

    # --- persistence --------------------------------------------------------------
    def save(self, folder: Path) -> None:
        import faiss

        with self._lock:
            faiss.write_index(self._index, str(folder / "dense.faiss"))
            self._rows.save(folder / "dense-keys")

    @classmethod
    def load(cls, folder: Path, dimension: int, params: HnswParams) -> HnswIndex:
        import faiss

        loaded = cls(dimension, params)
        index: Any = faiss.read_index(str(folder / "dense.faiss"))
        graph: Any = getattr(index, "hnsw", None)
        if graph is None or index.d != dimension or graph.nb_neighbors(0) != 2 * params.m:
            raise ValueError("the saved HNSW index has other dimensions or parameters")
        loaded._index = index
        loaded._rows = RowKeys.load(folder / "dense-keys")
        if loaded._rows.total != index.ntotal:
            raise ValueError("the saved HNSW index and its keys disagree")
        return loaded

    # --- internals (lock held) ----------------------------------------------------
    def _live_selector_locked(self) -> object:
        import faiss

        if self._selector is None:
            self._bitmap = np.packbits(self._rows.alive, bitorder="little")
            self._selector = faiss.IDSelectorBitmap(self._rows.total, faiss.swig_ptr(self._bitmap))
        return self._selector

    def _rebuild_locked(self) -> None:
        """Drop dead rows: re-insert the live vectors into a fresh graph (seconds at 100k rows)."""
        import faiss

        live = np.flatnonzero(self._rows.alive)
        vectors = self._index.reconstruct_batch(live) if live.size else np.zeros((0, self.dimension), np.float32)
        keys = self._rows.keys_of(live)
        fresh = faiss.IndexHNSWFlat(self.dimension, self.params.m, faiss.METRIC_INNER_PRODUCT)
        fresh.hnsw.efConstruction = self.params.ef_construction
        fresh.add(vectors)
        self._index = fresh
        self._rows = RowKeys()
        self._rows.append(keys)
        self._selector = None
