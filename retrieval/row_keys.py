"""Row numbers <-> chunk keys for the in-process indexes (lexical and dense), with a live mask.

Both indexes address their rows by position (a sparse-matrix row, a FAISS id), append
new rows and mask removed ones until they compact. This is that bookkeeping, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


class RowKeys:
    """Not thread-safe: the owning index holds its lock."""

    def __init__(self) -> None:
        self._keys: list[str | None] = []
        self._row_of: dict[str, int] = {}
        self._alive = np.zeros(0, dtype=bool)
        self.dead = 0

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, key: str) -> bool:
        return key in self._row_of

    @property
    def total(self) -> int:
        """Rows ever appended since the last compaction, dead ones included."""
        return len(self._keys)

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: len(self._keys)]

    def append(self, keys: Sequence[str]) -> range:
        """Rows for new keys (none of them present); returns their row numbers."""
        first = len(self._keys)
        self._keys.extend(keys)
        for offset, key in enumerate(keys):
            self._row_of[key] = first + offset
        if len(self._keys) > self._alive.size:  # amortised growth, like a list
            grown = np.zeros(max(len(self._keys), 2 * self._alive.size, 1024), dtype=bool)
            grown[: self._alive.size] = self._alive
            self._alive = grown
        self._alive[first : len(self._keys)] = True
        return range(first, len(self._keys))

    def remove(self, keys: Iterable[str]) -> int:
        removed = 0
        for key in keys:
            row = self._row_of.pop(key, None)
            if row is None:
                continue
            self._alive[row] = False
            self._keys[row] = None
            removed += 1
        self.dead += removed
        return removed

    def row(self, key: str) -> int | None:
        return self._row_of.get(key)

    def keys_of(self, rows: Iterable[int]) -> list[str]:
        return [k for _, k in self.live_pairs(rows)]

    def live_pairs(self, rows: Iterable[int]) -> list[tuple[int, str]]:
        """(row, key) for the rows that are still live, in the given order."""
        return [(int(r), k) for r in rows if (k := self._keys[int(r)]) is not None]

    def live_keys(self) -> set[str]:
        return set(self._row_of)

    # --- persistence --------------------------------------------------------------
    def save(self, stem: Path) -> None:
        """Keys as one newline-joined UTF-8 blob (keys hold no newlines), dead rows as empty lines."""
        blob = "".join(f"{k or ''}\n" for k in self._keys).encode()
        np.save(stem.with_suffix(".npy"), np.frombuffer(blob, dtype=np.uint8), allow_pickle=False)

    @classmethod
    def load(cls, stem: Path) -> RowKeys:
        blob = np.load(stem.with_suffix(".npy"), allow_pickle=False).tobytes().decode()
        loaded = cls()
        keys = blob.split("\n")[:-1]
        loaded.append(keys)
        dead = [row for row, key in enumerate(keys) if not key]
        for row in dead:
            loaded._keys[row] = None
            loaded._alive[row] = False
        loaded._row_of.pop("", None)
        loaded.dead = len(dead)
        return loaded
