"""The lexical leg: BM25 over jieba-segmented Chinese and word-split Latin text.

The default embedding model cannot read Chinese, so this leg is what lets a
Chinese question find a Chinese chunk. Terms are computed once per chunk at
ingest and stored next to it (the store's `terms` field), so the in-memory
index can be rebuilt at start-up without re-segmenting the corpus.

The index is a term-frequency matrix built from appended (row, term, count)
triplets; the column-compressed form that queries read is rebuilt lazily after
a change, so a query costs O(postings of its terms) in numpy and an ingest
costs O(its own terms). Deleted rows are masked, and compacted away once they
are the majority.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from scipy import sparse

log = logging.getLogger(__name__)

LATIN_WORD = re.compile(r"[0-9a-z]+(?:['.][0-9a-z]+)*")
TOKEN_SPLIT = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]+)")
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be by do does did for from has have how i if in into is it its of on or our so "
    "than that the their them then there these they this to was we were what when where which who why "
    "will with you your can my me".split()
)
CHINESE_STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 吗 呢 吧 啊 之 也 就 都 而 把 被 给 我 你 他 她 它 们 这 那 什么 怎么 哪".split()
)
K1 = 1.5
B = 0.75

_jieba_ready = threading.Lock()


def _jieba() -> ModuleType:
    # jieba imports pkg_resources, which warns about namespace packages at import time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jieba
    return jieba


def initialise_segmenter() -> None:
    """Load jieba's dictionary now (about a second) instead of on the first query; quiet its log."""
    jieba = _jieba()
    with _jieba_ready:
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()


def stem(word: str) -> str:
    """A light English suffix folding (plural, -ed, -ing) so "reboots" meets "reboot"; digits untouched."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    if word.endswith("ing") and len(word) > 5:
        return word[:-3]
    if word.endswith("ed") and len(word) > 4:
        return word[:-2]
    return word


def tokenize(text: str) -> list[str]:
    """Index/query terms: jieba search-mode words for CJK runs, folded lower-case words for the rest."""
    jieba = _jieba()
    terms: list[str] = []
    for i, part in enumerate(TOKEN_SPLIT.split(text.lower())):
        if not part:
            continue
        if i % 2 == 1:  # a CJK run (the captured group)
            terms.extend(w for w in jieba.cut_for_search(part) if w.strip() and w not in CHINESE_STOPWORDS)
        else:
            terms.extend(stem(w) for w in LATIN_WORD.findall(part) if w not in ENGLISH_STOPWORDS)
    return terms


def join_terms(terms: Sequence[str]) -> str:
    """Terms never contain spaces, so a space-joined string is a lossless storage form."""
    return " ".join(terms)


@dataclass(frozen=True)
class LexicalHit:
    key: str
    score: float


class LexicalIndex:
    """BM25 over the chunks of one knowledge base, keyed by the store's primary keys. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vocabulary: dict[str, int] = {}
        self._row_of: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._lengths: list[int] = []
        self._alive: list[bool] = []
        self._triplets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._matrix: sparse.csc_matrix | None = None
        self._dead = 0

    def __len__(self) -> int:
        return len(self._row_of)

    def add(self, items: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Add (key, terms) pairs; a key already present is replaced."""
        with self._lock:
            for key, terms in items:
                if key in self._row_of:
                    self._remove_locked(key)
                counts = Counter(terms)
                row = len(self._keys)
                self._row_of[key] = row
                self._keys.append(key)
                self._lengths.append(sum(counts.values()))
                self._alive.append(True)
                cols = np.fromiter((self._term_id(t) for t in counts), dtype=np.int64, count=len(counts))
                values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
                self._triplets.append((np.full(len(counts), row, dtype=np.int64), cols, values))
            self._matrix = None

    def remove(self, keys: Iterable[str]) -> int:
        with self._lock:
            removed = sum(self._remove_locked(k) for k in keys)
            if self._dead > 1000 and self._dead > len(self._row_of):
                self._compact_locked()
            return removed

    def search(self, terms: Sequence[str], limit: int) -> list[LexicalHit]:
        """The best `limit` keys by BM25 (only rows sharing at least one term)."""
        with self._lock:
            query = [self._vocabulary[t] for t in dict.fromkeys(terms) if t in self._vocabulary]
            if not query or not self._row_of:
                return []
            matrix = self._csc_locked()
            alive = np.asarray(self._alive, dtype=bool)
            lengths = np.asarray(self._lengths, dtype=np.float32)
            keys = list(self._keys)
        average = float(lengths[alive].mean()) or 1.0
        count = int(alive.sum())
        scores = np.zeros(len(keys), dtype=np.float32)
        for col in query:
            start, end = matrix.indptr[col], matrix.indptr[col + 1]
            rows, tf = matrix.indices[start:end], matrix.data[start:end]
            live = alive[rows]
            rows, tf = rows[live], tf[live]
            if rows.size == 0:
                continue
            idf = math.log(1.0 + (count - rows.size + 0.5) / (rows.size + 0.5))
            norm = K1 * (1.0 - B + B * lengths[rows] / average)
            scores[rows] += idf * tf * (K1 + 1.0) / (tf + norm)
        candidates = np.flatnonzero(scores > 0)
        if candidates.size > limit:
            candidates = candidates[np.argpartition(-scores[candidates], limit - 1)[:limit]]
        ordered = candidates[np.argsort(-scores[candidates], kind="stable")]
        return [LexicalHit(key=str(keys[r]), score=float(scores[r])) for r in ordered]

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._row_of)

    # --- internals (lock held) ---------------------------------------------------
    def _term_id(self, term: str) -> int:
        term_id = self._vocabulary.get(term)
        if term_id is None:
            term_id = self._vocabulary[term] = len(self._vocabulary)
        return term_id

    def _remove_locked(self, key: str) -> bool:
        row = self._row_of.pop(key, None)
        if row is None:
            return False
        self._alive[row] = False
        self._keys[row] = None
        self._dead += 1
        return True

    def _csc_locked(self) -> sparse.csc_matrix:
        if self._matrix is None:
            if self._triplets:
                rows, cols, values = (np.concatenate(parts) for parts in zip(*self._triplets, strict=True))
                self._triplets = [(rows, cols, values)]
            else:
                rows = cols = np.zeros(0, dtype=np.int64)
                values = np.zeros(0, dtype=np.float32)
            shape = (len(self._keys), max(len(self._vocabulary), 1))
            self._matrix = sparse.csc_matrix((values, (rows, cols)), shape=shape, dtype=np.float32)
        return self._matrix

    def _compact_locked(self) -> None:
        """Drop dead rows and renumber the live ones."""
        old_alive = np.asarray(self._alive, dtype=bool)
        new_row = np.cumsum(old_alive) - 1
        rows, cols, values = (
            (np.concatenate(p) for p in zip(*self._triplets, strict=True))
            if self._triplets
            else (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        )
        keep = old_alive[rows]
        self._triplets = [(new_row[rows[keep]], cols[keep], values[keep])]
        self._keys = [k for k, a in zip(self._keys, old_alive, strict=True) if a]
        self._lengths = [n for n, a in zip(self._lengths, old_alive, strict=True) if a]
        self._alive = [True] * len(self._keys)
        self._row_of = {k: i for i, k in enumerate(self._keys) if k is not None}
        self._dead = 0
        self._matrix = None
