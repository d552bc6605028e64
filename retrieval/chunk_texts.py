"""The text of every indexed chunk, held in this process beside the search indexes.

Why: with the dense and lexical legs in this process, the one store call left on a
question's path was reading the texts of the chunks it returns; milvus-lite's `get`
for three rows cost ~2.5-3 ms (its in-process gRPC adapter and row materialisation),
a fifth of a retrieval at 100k chunks (bench/results/retrieval-2026-12-02.md). The
texts change exactly when the indexes do (at an ingest's commit, a deletion, a
catch-up from the manifest), so they are added, removed and saved together with them
(chatllm.retrieval.search_indexes) and stay as consistent with the store as the
indexes are. The file name and chunk number are not kept here: the key holds the
document id and chunk number, the manifest the file name.

Memory: about the UTF-8 size of the corpus plus a dict entry per chunk (~60 MB for
100k chunks of 500 characters); milvus-lite holds the same texts again, which is why
this is only used with milvus-lite, whose rows live in this process anyway. A Milvus
server returns texts with its own dense hits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


class ChunkTexts:
    """Key -> text. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def add(self, keys: Sequence[str], texts: Sequence[str]) -> None:
        with self._lock:
            self._texts.update(zip(keys, texts, strict=True))

    def remove(self, keys: Iterable[str]) -> int:
        with self._lock:
            return sum(1 for k in keys if self._texts.pop(k, None) is not None)

    def get(self, keys: Iterable[str]) -> dict[str, str]:
        """The texts of the keys present."""
        with self._lock:
            return {k: t for k in keys if (t := self._texts.get(k)) is not None}

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._texts)

    # --- persistence --------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Keys newline-joined (they hold none); texts as one UTF-8 blob with byte offsets (they may)."""
        with self._lock:
            keys, texts = list(self._texts), list(self._texts.values())
        encoded = [t.encode() for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        np.savez(folder / "texts.npz", blob=blob, offsets=offsets)
        key_blob = "".join(f"{k}\n" for k in keys).encode()
        np.save(folder / "text-keys.npy", np.frombuffer(key_blob, dtype=np.uint8), allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> ChunkTexts:
        with np.load(folder / "texts.npz", allow_pickle=False) as saved:
            blob, offsets = saved["blob"].tobytes(), saved["offsets"].tolist()
        keys = np.load(folder / "text-keys.npy", allow_pickle=False).tobytes().decode().split("\n")[:-1]
        if len(keys) + 1 != len(offsets) or offsets[-1] != len(blob):
            raise ValueError("the saved chunk texts and their keys disagree")
        loaded = cls()
        loaded._texts = {k: blob[offsets[i] : offsets[i + 1]].decode() for i, k in enumerate(keys)}
        return loaded
