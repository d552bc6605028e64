"""The lexical leg: BM25 over jieba-segmented Chinese and word-split Latin text.

The default embedding model cannot read Chinese, so this leg is what lets a
Chinese question find a Chinese chunk. Terms are computed once per chunk at
ingest and stored next to it (the store's `terms` field), so the in-memory
index can be rebuilt at start-up without re-segmenting the corpus.

The index keeps (row, term, count) triplets; after a change it rebuilds, once, a
column-compressed matrix of each posting's saturated BM25 term weight and the
live document frequencies, so a query is one sparse matrix-vector product over
the postings of its terms. Scores are normalised by the query's own idf mass,
so 1.0 means "every term of the question, once, in an average-length chunk",
whatever the corpus: that is what makes a relevance threshold possible.

Why not bm25s: it precomputes every posting's score with corpus-wide idf and
average length, so adding one document means re-indexing the corpus; here an
ingest costs O(its own terms). The index is saved beside the store
(`save`/`load`), so a restart does not re-read and re-count every chunk.
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
from pathlib import Path
from types import ModuleType

import numpy as np
from scipy import sparse

from chatllm.retrieval.row_keys import RowKeys

log = logging.getLogger(__name__)

LATIN_WORD = re.compile(r"[0-9a-z]+(?:['.][0-9a-z]+)*")
TOKEN_SPLIT = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]+)")
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be by do does did for from has have how i if in into is it its of on or our so "
    "than that the their them then there these they this to was we were what when where which who why "
    "will with you your can my me".split()
)
CHINESE_STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 吗 呢 吧 啊 之 也 就 都 而 把 被 给 我 你 他 她 它 们 这 那 什么 怎么 哪 "
    # question words: a question always has them, the chunk that answers it rarely does
    "多少 哪里 哪儿 哪个 哪些 哪座 哪一 几 几个 多久 多长 怎样 如何 是否 可以 能否 有没有 请问 为什么 吗？".split()
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


def tokenize(text: str, for_index: bool = False) -> list[str]:
    """Query terms: jieba search-mode words for CJK runs, folded lower-case words for the rest.

    `for_index`: a chunk's terms also get the character bigrams of its CJK words of three or
    more characters, because jieba may keep a run whole in a chunk ("餐补为") that it cuts
    in a question ("餐补"). Only the index side: on the query side they would count as
    terms the chunk lacks."""
    jieba = _jieba()
    terms: list[str] = []
    for i, part in enumerate(TOKEN_SPLIT.split(text.lower())):
        if not part:
            continue
        if i % 2 == 1:  # a CJK run (the captured group)
            words = [w for w in jieba.cut_for_search(part) if w.strip() and w not in CHINESE_STOPWORDS]
            terms.extend(words)
            if for_index:
                terms.extend(_inner_bigrams(words))
        else:
            terms.extend(stem(w) for w in LATIN_WORD.findall(part) if w not in ENGLISH_STOPWORDS)
    return terms


def _inner_bigrams(words: Sequence[str]) -> list[str]:
    present = set(words)
    return [b for w in words if len(w) > 2 for j in range(len(w) - 1) if (b := w[j : j + 2]) not in present]


def join_terms(terms: Sequence[str]) -> str:
    """Terms never contain spaces, so a space-joined string is a lossless storage form."""
    return " ".join(terms)


@dataclass(frozen=True)
class LexicalHit:
    key: str
    score: float  # BM25 normalised by the query's idf mass, 0..1


class LexicalScores:
    """One query's normalised BM25 score of every row: the top hits and any key's score."""

    def __init__(self, scores: np.ndarray, rows: RowKeys) -> None:
        self._scores = scores
        self._rows = rows

    def top(self, limit: int) -> list[LexicalHit]:
        candidates = np.flatnonzero(self._scores > 0)
        if candidates.size > limit:
            candidates = candidates[np.argpartition(-self._scores[candidates], limit - 1)[:limit]]
        ordered = candidates[np.argsort(-self._scores[candidates], kind="stable")]
        return [
            LexicalHit(k, float(self._scores[r])) for r, k in zip(ordered, self._rows.keys_of(ordered), strict=True)
        ]

    def of(self, keys: Iterable[str]) -> dict[str, float]:
        return {k: float(self._scores[r]) if (r := self._rows.row(k)) is not None else 0.0 for k in keys}


class _Matrix:
    """The query-side form, rebuilt after a change: saturated term weights (rows x terms), df."""

    def __init__(self, weights: sparse.csc_matrix, df: np.ndarray, live: int) -> None:
        self.weights = weights
        self.df = df
        self.live = live


class LexicalIndex:
    """BM25 over the chunks of one knowledge base, keyed by the store's primary keys. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vocabulary: dict[str, int] = {}
        self._rows = RowKeys()
        self._lengths = np.zeros(0, dtype=np.float32)
        self._triplets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._matrix: _Matrix | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, items: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Add (key, terms) pairs; a key already present is replaced."""
        with self._lock:
            for key, terms in items:
                if key in self._rows:
                    self._rows.remove([key])
                counts = Counter(terms)
                (row,) = self._rows.append([key])
                self._set_length(row, sum(counts.values()))
                cols = np.fromiter((self._term_id(t) for t in counts), dtype=np.int64, count=len(counts))
                values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
                self._triplets.append((np.full(len(counts), row, dtype=np.int64), cols, values))
            self._matrix = None

    def remove(self, keys: Iterable[str]) -> int:
        with self._lock:
            removed = self._rows.remove(keys)
            if removed:
                self._matrix = None
            if self._rows.dead > 1000 and self._rows.dead > len(self._rows):
                self._compact_locked()
            return removed

    def scores(self, terms: Sequence[str]) -> LexicalScores:
        """Every row's BM25 score for the query `terms`, divided by the sum of the terms' idf (capped at 1)."""
        with self._lock:
            matrix = self._matrix_locked()
            rows = self._rows
            query = list(dict.fromkeys(terms))
            known = [self._vocabulary[t] for t in query if t in self._vocabulary]
        total = np.zeros(rows.total, dtype=np.float32)
        if not query or matrix.live == 0:
            return LexicalScores(total, rows)
        # A term no chunk has (any more) weighs as much as the rarest term that some chunk has (df 1).
        df = np.maximum(matrix.df[known], 1).astype(np.float64)
        idf = np.log1p((matrix.live - df + 0.5) / (df + 0.5))
        unknown_idf = math.log1p((matrix.live - 0.5) / 1.5) * (len(query) - len(known))
        mass = float(idf.sum()) + unknown_idf
        if known:
            total[: matrix.weights.shape[0]] = matrix.weights[:, known] @ (idf / mass).astype(np.float32)
        np.minimum(total, 1.0, out=total)
        return LexicalScores(total, rows)

    def search(self, terms: Sequence[str], limit: int) -> list[LexicalHit]:
        """The best `limit` keys (only rows sharing at least one term)."""
        return self.scores(terms).top(limit)

    def keys(self) -> set[str]:
        with self._lock:
            return self._rows.live_keys()

    # --- persistence --------------------------------------------------------------
    def save(self, folder: Path) -> None:
        with self._lock:
            self._compact_locked()
            rows, cols, values = self._concatenated_locked()
            lengths = self._lengths[: self._rows.total]
            np.savez(folder / "lexical.npz", rows=rows, cols=cols, values=values, lengths=lengths)
            vocabulary = "".join(f"{t}\n" for t in self._vocabulary).encode()
            np.save(folder / "vocabulary.npy", np.frombuffer(vocabulary, dtype=np.uint8), allow_pickle=False)
            self._rows.save(folder / "lexical-keys")

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        loaded = cls()
        with np.load(folder / "lexical.npz", allow_pickle=False) as saved:
            loaded._triplets = [(saved["rows"], saved["cols"], saved["values"])]
            loaded._lengths = saved["lengths"]
        vocabulary = np.load(folder / "vocabulary.npy", allow_pickle=False).tobytes().decode().split("\n")[:-1]
        loaded._vocabulary = {t: i for i, t in enumerate(vocabulary)}
        loaded._rows = RowKeys.load(folder / "lexical-keys")
        if loaded._rows.total != loaded._lengths.size:
            raise ValueError("the saved lexical index and its keys disagree")
        with loaded._lock:
            loaded._matrix_locked()  # at load time rather than on the first question
        return loaded

    # --- internals (lock held) ---------------------------------------------------
    def _term_id(self, term: str) -> int:
        term_id = self._vocabulary.get(term)
        if term_id is None:
            term_id = self._vocabulary[term] = len(self._vocabulary)
        return term_id

    def _set_length(self, row: int, length: int) -> None:
        if row >= self._lengths.size:
            grown = np.zeros(max(row + 1, 2 * self._lengths.size, 1024), dtype=np.float32)
            grown[: self._lengths.size] = self._lengths
            self._lengths = grown
        self._lengths[row] = length

    def _concatenated_locked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._triplets:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(self._triplets) > 1:
            rows, cols, values = (np.concatenate(p) for p in zip(*self._triplets, strict=True))
            self._triplets = [(rows, cols, values)]
        return self._triplets[0]

    def _matrix_locked(self) -> _Matrix:
        if self._matrix is None:
            rows, cols, tf = self._concatenated_locked()
            alive = self._rows.alive
            live = alive[rows]
            rows, cols, tf = rows[live], cols[live], tf[live]
            lengths = self._lengths[: alive.size]
            average = float(lengths[alive].mean()) if alive.any() else 1.0
            norm = K1 * (1.0 - B + B * lengths[rows] / (average or 1.0))
            weights = tf * (K1 + 1.0) / (tf + norm)
            shape = (alive.size, max(len(self._vocabulary), 1))
            matrix = sparse.csc_matrix((weights.astype(np.float32), (rows, cols)), shape=shape)
            df = np.bincount(cols, minlength=shape[1])
            self._matrix = _Matrix(matrix, df, int(alive.sum()))
        return self._matrix

    def _compact_locked(self) -> None:
        """Drop dead rows and renumber the live ones."""
        if not self._rows.dead:
            return
        alive = self._rows.alive
        new_row = np.cumsum(alive) - 1
        rows, cols, values = self._concatenated_locked()
        keep = alive[rows]
        self._triplets = [(new_row[rows[keep]], cols[keep], values[keep])]
        keys = self._rows.keys_of(np.flatnonzero(alive))
        self._lengths = self._lengths[: alive.size][alive].copy()
        self._rows = RowKeys()
        self._rows.append(keys)
        self._matrix = None
