"""Start-up of a knowledge-base library: leftovers of interrupted writes go, search indexes come back.

Per knowledge base, the saved index snapshot is loaded and brought in line with
the manifest: documents it holds that are no longer committed are removed from it,
committed documents it lacks are read from the store. Chunks of ingests that never
committed are found through the pending-ingest journal. Without a usable snapshot
(first start, another version, a damaged file) every chunk is read once, which also
finds leftovers, and the indexes are rebuilt and saved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatllm.retrieval.search_indexes import SearchIndexes
from chatllm.retrieval.store import DocumentRecord, collection_name

if TYPE_CHECKING:
    from chatllm.retrieval.knowledge_bases import KnowledgeBases

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    orphaned_chunks: int = 0
    superseded_documents: list[str] = field(default_factory=list)
    dangling_records: int = 0
    loaded_snapshots: list[str] = field(default_factory=list)  # knowledge bases whose indexes were loaded
    rebuilt_indexes: list[str] = field(default_factory=list)  # ... and those rebuilt from every chunk


def recover(library: KnowledgeBases) -> RecoveryReport:
    report = RecoveryReport()
    store = library.store
    records = store.documents()
    names = set(store.knowledge_bases())
    for record in records:
        if record.knowledge_base not in names:  # killed while deleting the knowledge base
            store.remove_document(record.knowledge_base, record.document_id)
            report.dangling_records += 1
    for name in sorted(names):
        with library._write_locks[name]:
            committed = {r.document_id: r for r in records if r.knowledge_base == name}
            report.superseded_documents += _drop_superseded(library, name, committed)
            started = time.perf_counter()
            if _load_snapshot(library, name, committed):
                report.loaded_snapshots.append(name)
            else:
                report.orphaned_chunks += _rebuild(library, name, committed)
                report.rebuilt_indexes.append(name)
            library._committed[name] = committed
            log.info("knowledge base %s: indexes ready in %.2fs", name, time.perf_counter() - started)
    report.orphaned_chunks += _finish_pending(library, names)
    return report


def _drop_superseded(library: KnowledgeBases, name: str, committed: dict[str, DocumentRecord]) -> list[str]:
    """A kill between committing a replacement and deleting the old version leaves both: keep the newest."""
    newest: dict[str, DocumentRecord] = {}
    superseded: list[str] = []
    for record in sorted(committed.values(), key=lambda r: r.created_unix, reverse=True):
        if record.filename in newest:
            library.store.remove_document(name, record.document_id)
            superseded.append(record.document_id)
        else:
            newest[record.filename] = record
    for document_id in superseded:
        del committed[document_id]
    return superseded


def _load_snapshot(library: KnowledgeBases, name: str, committed: dict[str, DocumentRecord]) -> bool:
    """Load the saved indexes and catch them up with the manifest; False when there are none to load."""
    if library.snapshots is None:
        return False
    saved = library.snapshots.load(
        collection_name(name), library.embedder.dimension, library.settings.hnsw, library.local_search
    )
    if saved is None:
        return False
    indexes = saved.indexes
    wanted = {d: r.generation for d, r in committed.items()}
    stale = {d: g for d, g in saved.documents.items() if wanted.get(d) != g}
    missing = {d: g for d, g in wanted.items() if saved.documents.get(d) != g}
    indexes.remove(indexes.keys_of_documents(stale))
    if missing:
        indexes.add_rows(library.store.scan_chunks(name, sorted(missing), library.local_search), missing)
    library._indexes[name] = indexes
    if stale or missing:
        log.info(
            "knowledge base %s: snapshot caught up (%d documents removed, %d added)", name, len(stale), len(missing)
        )
        library._changed(name)
    return True


def _rebuild(library: KnowledgeBases, name: str, committed: dict[str, DocumentRecord]) -> int:
    """Index every committed chunk from the store; delete the chunks of uncommitted generations."""
    indexes = library._indexes[name] = SearchIndexes.empty(
        library.embedder.dimension, library.settings.hnsw, library.local_search
    )
    wanted = {d: r.generation for d, r in committed.items()}
    orphans = indexes.add_rows(library.store.scan_chunks(name, with_vectors_and_texts=library.local_search), wanted)
    if orphans:
        log.info("knowledge base %s: removing %d chunks of unfinished ingests", name, len(orphans))
        library.store.delete_chunk_keys(name, orphans)
        library.store.flush(name)
    library._changed(name)
    return len(orphans)


def _finish_pending(library: KnowledgeBases, names: set[str]) -> int:
    """Delete the rows of journalled ingests that never committed; returns how many."""
    if library.snapshots is None:
        return 0
    removed = 0
    for pending in library.snapshots.pending_ingests():
        record = library._committed.get(pending.knowledge_base, {}).get(pending.document_id)
        if pending.knowledge_base in names and (record is None or record.generation != pending.generation):
            removed += library.store.delete_chunks(pending.knowledge_base, pending.document_id, pending.generation)
        library.snapshots.end_ingest(pending.generation)
    if removed:
        log.info("removed %d chunks of unfinished ingests named in the journal", removed)
    return removed
