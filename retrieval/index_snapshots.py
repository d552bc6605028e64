"""The in-process indexes of each knowledge base, saved beside the store, and the pending-ingest journal.

A snapshot is a cache of what the store holds: it lists the (document, generation)
pairs it covers, and start-up compares that list with the manifest, removing what
is no longer committed and reading from the store only the documents it lacks. A
missing, partial or unreadable snapshot just means a full rebuild from the store.

Writes are atomic: files go into `snapshot-N.partial/`, are fsynced, the folder is
renamed to `snapshot-N/`, then the one-line `CURRENT` file is replaced to point at it
(as LevelDB does). A kill at any point leaves the previous snapshot in force.

The journal (`pending/<generation>.json`) names each ingest whose chunk rows may be in
the store without a manifest row; it is written before the first row and
removed after the commit or the clean-up. Start-up deletes exactly those rows,
instead of scanning every chunk to find leftovers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chatllm.retrieval.chunk_texts import ChunkTexts
from chatllm.retrieval.dense import HnswIndex, HnswParams
from chatllm.retrieval.lexical import LexicalIndex
from chatllm.retrieval.search_indexes import SearchIndexes

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the chunk texts are saved with the indexes
CURRENT = "CURRENT"


@dataclass
class SavedIndexes:
    documents: dict[str, str]  # document id -> generation the indexes hold
    indexes: SearchIndexes


@dataclass(frozen=True)
class PendingIngest:
    generation: str
    knowledge_base: str
    document_id: str


class IndexSnapshots:
    """Snapshots under `folder/<collection>/`, the journal under `folder/pending/`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pending_folder = folder / "pending"
        self.pending_folder.mkdir(parents=True, exist_ok=True)

    # --- snapshots ----------------------------------------------------------------
    def load(self, collection: str, dimension: int, params: HnswParams | None, local: bool) -> SavedIndexes | None:
        """The last complete snapshot, or None (none yet, unreadable, or made with other settings).
        `local`: the snapshot must hold the HNSW index and the texts too (see SearchIndexes)."""
        base = self.folder / collection
        try:
            current = base / (base / CURRENT).read_text().strip()
            meta = json.loads((current / "meta.json").read_text())
            if meta["format"] != FORMAT_VERSION or meta["local"] != local or meta["dimension"] != dimension:
                log.info("index snapshot of %s was made with other settings; rebuilding from the store", collection)
                return None
            indexes = SearchIndexes(LexicalIndex.load(current), None, None)
            if local:
                indexes.dense = HnswIndex.load(current, dimension, params or HnswParams())
                indexes.texts = ChunkTexts.load(current)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # faiss raises RuntimeError
            log.warning("index snapshot of %s unreadable (%s); rebuilding from the store", collection, exc)
            return None
        return SavedIndexes(dict(meta["documents"]), indexes)

    def save(self, collection: str, dimension: int, documents: dict[str, str], indexes: SearchIndexes) -> None:
        base = self.folder / collection
        base.mkdir(parents=True, exist_ok=True)
        number = 1 + max((_number(p) for p in base.glob("snapshot-*")), default=0)
        partial = base / f"snapshot-{number}.partial"
        partial.mkdir()
        indexes.lexical.save(partial)
        if indexes.dense is not None:
            indexes.dense.save(partial)
        if indexes.texts is not None:
            indexes.texts.save(partial)
        meta = {
            "format": FORMAT_VERSION,
            "local": indexes.dense is not None and indexes.texts is not None,
            "dimension": dimension,
            "documents": sorted(documents.items()),
        }
        (partial / "meta.json").write_text(json.dumps(meta))
        for path in partial.iterdir():
            _fsync(path)
        final = base / f"snapshot-{number}"
        partial.rename(final)
        _replace_atomically(base / CURRENT, final.name)
        for old in base.glob("snapshot-*"):
            if _number(old) < number:  # never a newer one another writer may be filling
                shutil.rmtree(old, ignore_errors=True)

    def drop(self, collection: str) -> None:
        shutil.rmtree(self.folder / collection, ignore_errors=True)

    # --- journal ------------------------------------------------------------------
    def begin_ingest(self, pending: PendingIngest) -> None:
        """Written (not fsynced: milvus-lite does not fsync its WAL either, and two fsyncs per document
        cost ~4 ms) before the first row; renamed into place, so a kill never leaves half an entry."""
        path = self.pending_folder / f"{pending.generation}.json"
        body = {"knowledge_base": pending.knowledge_base, "document_id": pending.document_id}
        _replace_atomically(path, json.dumps(body), durable=False)

    def end_ingest(self, generation: str) -> None:
        (self.pending_folder / f"{generation}.json").unlink(missing_ok=True)

    def pending_ingests(self) -> list[PendingIngest]:
        found = []
        for path in sorted(self.pending_folder.glob("*.json")):
            try:
                body = json.loads(path.read_text())
                found.append(PendingIngest(path.stem, body["knowledge_base"], body["document_id"]))
            except (OSError, ValueError, KeyError):  # a journal entry cut by a crash: its ingest never wrote
                path.unlink(missing_ok=True)
        return found


def _number(snapshot: Path) -> int:
    return int(snapshot.name.split("-")[1].split(".")[0])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(path: Path, text: str, durable: bool = True) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as out:
        out.write(text)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(partial, path)
    if durable:
        _fsync(path.parent)


class DelayedSaver:
    """Saves a knowledge base's snapshot a few seconds after its last change, off the request path.

    `save(name)` is the library's own (it takes the knowledge base's write lock, so the
    snapshot matches the documents it lists); `flush()` saves everything still marked."""

    def __init__(self, save: Callable[[str], None], delay_seconds: float) -> None:
        self._save = save
        self._delay = delay_seconds
        self._due: dict[str, float] = {}
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="index-snapshots", daemon=True)
        self._thread.start()

    def mark(self, name: str) -> None:
        with self._wake:
            self._due.setdefault(name, time.monotonic() + self._delay)
            self._wake.notify()

    def forget(self, name: str) -> None:
        with self._wake:
            self._due.pop(name, None)

    def flush(self) -> None:
        with self._wake:
            names, self._due = list(self._due), {}
        for name in names:
            self._save_logged(name)

    def close(self, flush: bool = True) -> None:
        """Stop the thread; save what is marked unless `flush` is false (what a kill would leave)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        if flush:
            self.flush()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed:
                    now = time.monotonic()
                    ready = [n for n, at in self._due.items() if at <= now]
                    if ready:
                        break
                    self._wake.wait(min(self._due.values(), default=now + 3600) - now)
                if self._closed:
                    return
                for name in ready:
                    del self._due[name]
            for name in ready:
                self._save_logged(name)

    def _save_logged(self, name: str) -> None:
        try:
            self._save(name)
        except Exception:  # the store still holds everything; the next start-up catches up
            log.exception("saving the index snapshot of knowledge base %s failed", name)
