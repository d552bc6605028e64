"""The knowledge bases of one Milvus store: ingest, hybrid retrieval, listing, deletion.

Blocking and thread-safe: the gRPC layer calls it from worker threads. Writes
to one knowledge base are serialised by a lock; reads are not.

Atomicity: an ingest writes its chunk rows under a fresh generation id (named
first in the pending-ingest journal), and only then writes the manifest row (the
commit point). Only chunks of committed (document, generation) pairs are ever
returned or indexed, and start-up (chatllm.retrieval.recovery) deletes every other
chunk, so a failed or killed ingest leaves no partial document. Deletions remove
the manifest row first for the same reason.

Search structures live in this process (chatllm.retrieval.search_indexes): BM25
always, and FAISS HNSW for the dense leg when the store is milvus-lite; a Milvus
server answers the dense leg itself. They are saved beside the store a few seconds
after each change, so a restart loads them instead of re-reading every chunk.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatllm.retrieval.embedder import Embedder
from chatllm.retrieval.errors import UnknownDocument, UnknownKnowledgeBase
from chatllm.retrieval.fusion import FusedScore, dense_leg_weight, fuse
from chatllm.retrieval.index_snapshots import DelayedSaver, IndexSnapshots, PendingIngest
from chatllm.retrieval.ingest_pipeline import embed_and_write
from chatllm.retrieval.isolation import IsolatedParser
from chatllm.retrieval.lexical import join_terms, tokenize
from chatllm.retrieval.loaders import load_document
from chatllm.retrieval.recovery import RecoveryReport, recover
from chatllm.retrieval.search_indexes import RetrievalSettings, SearchIndexes
from chatllm.retrieval.splitter import DocumentSplitter
from chatllm.retrieval.store import (
    ChunkRow,
    DocumentRecord,
    MilvusStore,
    StoredChunk,
    chunk_key,
    collection_name,
    parse_chunk_key,
)

log = logging.getLogger(__name__)

MIN_CANDIDATES = 20  # per leg, before fusion
MIN_DENSE_WEIGHT = 0.05  # below it the model reads too little of the question to be asked
MAX_TERMS_BYTES = 60_000  # under Milvus' 65535-byte VARCHAR limit


@dataclass(frozen=True)
class IngestResult:
    document_id: str
    chunks: int
    unchanged: bool
    replaced_document_ids: list[str]
    characters: int


@dataclass(frozen=True)
class RetrievedChunk:
    document_id: str
    file: str
    chunk: int
    score: float
    text: str


@dataclass(frozen=True)
class KnowledgeBaseSummary:
    name: str
    documents: int
    chunks: int


def document_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class KnowledgeBases:
    """`shared_store=True` when other processes write to the same Milvus (a server with replicas):
    then the committed-document cache and the lexical index are re-synced from the manifest on reads.
    `index_folder` is where the search indexes and the ingest journal are saved (None: kept in memory
    only, rebuilt from the store at every start)."""

    def __init__(
        self,
        store: MilvusStore,
        embedder: Embedder,
        splitter: DocumentSplitter,
        shared_store: bool | None = None,
        parser: IsolatedParser | None = None,
        settings: RetrievalSettings | None = None,
        index_folder: Path | None = None,
    ) -> None:
        self.store = store
        # Untrusted PDF/DOCX are parsed in a bounded child process when a parser is given.
        self.load = parser.load if parser is not None else load_document
        self.embedder = embedder
        self.splitter = splitter
        self.settings = settings or RetrievalSettings()
        self.shared_store = store.is_server if shared_store is None else shared_store
        # milvus-lite's own search is too slow (see chatllm.retrieval.dense): with it, vectors and texts
        # are searched and read in this process.
        self.local_search = not store.is_server
        self.snapshots = IndexSnapshots(index_folder) if index_folder is not None else None
        self._saver = DelayedSaver(self.save_snapshot, self.settings.snapshot_delay_seconds) if self.snapshots else None
        self._write_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._committed: dict[str, dict[str, DocumentRecord]] = {}
        self._indexes: dict[str, SearchIndexes] = {}
        self._pending: set[str] = set()  # generations being written by this process

    def indexes(self, knowledge_base: str) -> SearchIndexes:
        found = self._indexes.get(knowledge_base)
        if found is None:
            found = self._indexes.setdefault(
                knowledge_base, SearchIndexes.empty(self.embedder.dimension, self.settings.hnsw, self.local_search)
            )
        return found

    def close(self) -> None:
        """Save what changed since the last snapshot, then close the store."""
        if self._saver is not None:
            self._saver.close()
        self.store.close()

    def recover(self) -> RecoveryReport:
        """Drop leftovers of interrupted writes; load (or rebuild) the search indexes."""
        return recover(self)

    # --- ingest ------------------------------------------------------------------
    def find_committed(self, knowledge_base: str, document_id: str) -> DocumentRecord | None:
        return self._documents(knowledge_base).get(document_id)

    def ingest(self, knowledge_base: str, filename: str, data: bytes, mime_type: str = "") -> IngestResult:
        """Parse, split, then embed and write in a pipeline, then commit; replaces older documents of the
        same filename. The chunk rows are invisible until the commit, so no lock is held while writing."""
        document_id = document_id_of(data)
        existing = self.find_committed(knowledge_base, document_id)
        if existing is not None:
            return _unchanged(existing)
        loaded = self.load(filename, data, mime_type)
        chunks = self.splitter.split(loaded.text, loaded.kind)
        generation = uuid.uuid4().hex
        self.store.open_knowledge_base(knowledge_base, create=True)
        self._pending.add(generation)
        if self.snapshots is not None:
            self.snapshots.begin_ingest(PendingIngest(generation, knowledge_base, document_id))
        log.info("writing %d chunks of %s (%s) into %s", len(chunks), filename, document_id[:12], knowledge_base)

        def write(first: int, texts: Sequence[str], terms: list[list[str]], vectors: np.ndarray) -> None:
            rows = [
                ChunkRow(document_id, generation, first + i, filename, text, _terms_field(t), v)
                for i, (text, t, v) in enumerate(zip(texts, terms, vectors, strict=True))
            ]
            self.store.insert_chunks(knowledge_base, rows)

        try:
            # No flush of the chunk rows: milvus-lite's WAL already has them (it replays it after a kill),
            # nothing searches its segments, and a flush per document cost ~4% of the ingest rate.
            terms, vectors = embed_and_write(chunks, self.embedder, write)
        except BaseException:
            self._discard_quietly(knowledge_base, document_id, generation)
            self._pending.discard(generation)
            raise
        record = DocumentRecord(
            knowledge_base, document_id, generation, filename, len(chunks), len(data), len(loaded.text), time.time()
        )
        try:
            return self._commit(record, terms, vectors, chunks)
        finally:
            self._pending.discard(generation)

    def _commit(
        self, record: DocumentRecord, terms: list[list[str]], vectors: np.ndarray, texts: Sequence[str]
    ) -> IngestResult:
        """The commit point, under the knowledge base's lock: manifest row, indexes, replaced documents."""
        name = record.knowledge_base
        with self._write_locks[name]:
            committed = self._documents(name)
            if record.document_id in committed:  # a concurrent ingest of the same bytes won
                self._discard_quietly(name, record.document_id, record.generation)
                return _unchanged(committed[record.document_id])
            try:
                self.store.commit_document(record)
            except BaseException:  # not committed: the rows go (what fails after this point stays committed)
                self._discard_quietly(name, record.document_id, record.generation)
                raise
            if self.snapshots is not None:
                self.snapshots.end_ingest(record.generation)
            committed = self._committed.setdefault(name, committed)  # a new knowledge base
            committed[record.document_id] = record
            keys = [chunk_key(record.document_id, record.generation, i) for i in range(record.chunks)]
            self.indexes(name).add(keys, terms, vectors, texts)
            replaced = [
                r for r in committed.values() if r.filename == record.filename and r.document_id != record.document_id
            ]
            for old in replaced:
                self._delete_locked(name, old)
            self._changed(name)
        replaced_ids = [r.document_id for r in replaced]
        return IngestResult(record.document_id, record.chunks, False, replaced_ids, record.characters)

    def _discard_quietly(self, knowledge_base: str, document_id: str, generation: str) -> None:
        try:
            self.store.delete_chunks(knowledge_base, document_id, generation)
        except Exception:  # the journal entry stays: start-up recovery removes what is left
            log.exception("cleaning up a failed ingest of %s failed; recovery will finish it", document_id)
            return
        if self.snapshots is not None:
            self.snapshots.end_ingest(generation)

    # --- read --------------------------------------------------------------------
    def retrieve(
        self, knowledge_base: str, query: str, top_k: int, min_score: float | None = None
    ) -> list[RetrievedChunk]:
        """The best `top_k` chunks whose fused score reaches `min_score` (default: the configured
        threshold); best first."""
        threshold = self.settings.min_score if min_score is None else min_score
        return [
            RetrievedChunk(c.document_id, c.file, c.chunk, f.score, c.text)
            for f, c in self.ranked(knowledge_base, query, top_k)
            if f.score >= threshold
        ]

    def ranked(self, knowledge_base: str, query: str, top_k: int) -> list[tuple[FusedScore, StoredChunk]]:
        """The best `top_k` chunks with their fused and per-leg scores, without a threshold."""
        committed = self._documents(knowledge_base, must_exist=True)
        if not committed:
            return []
        candidates = max(top_k * 4, MIN_CANDIDATES)
        indexes = self.indexes(knowledge_base)
        dense_weight = dense_leg_weight(self.embedder.unknown_token_fraction(query))
        # The question's embedding (on one core) runs while this thread does BM25 on the other.
        embedding = self.embedder.encode_query_soon(query) if dense_weight > MIN_DENSE_WEIGHT else None
        scores = indexes.lexical.scores(tokenize(query))
        lexical = {h.key: h.score for h in scores.top(candidates)}
        dense: dict[str, float] = {}
        fetched: dict[str, StoredChunk] = {}
        if embedding is not None:
            vector = embedding.result()
            dense, fetched = self.dense_search(knowledge_base, vector, candidates)
            dense.update(self._similarities(knowledge_base, indexes, vector, [k for k in lexical if k not in dense]))
            lexical.update(scores.of(k for k in dense if k not in lexical))
        else:
            dense_weight = 0.0
        best = fuse(dense, lexical, dense_weight)[:top_k]
        fetched |= self.chunks(knowledge_base, [f.key for f in best if f.key not in fetched], committed)
        return [(f, c) for f in best if (c := fetched.get(f.key)) is not None]

    def dense_search(
        self, knowledge_base: str, vector: np.ndarray, limit: int
    ) -> tuple[dict[str, float], dict[str, StoredChunk]]:
        """The `limit` committed chunks nearest to `vector` (cosine), and those of their stored chunks
        that came with them (a Milvus server returns them with its hits)."""
        indexes = self.indexes(knowledge_base)
        if indexes.dense is not None:
            return dict(indexes.dense.search(vector, limit)), {}
        committed = self._documents(knowledge_base, must_exist=True)
        hits = self.store.search(knowledge_base, vector, limit, sorted(self._pending))
        hits = [h for h in hits if _is_committed(h, committed)]
        return {h.key: h.score for h in hits}, {h.key: h for h in hits}

    def chunks(
        self, knowledge_base: str, keys: Sequence[str], committed: dict[str, DocumentRecord] | None = None
    ) -> dict[str, StoredChunk]:
        """The committed chunks among `keys`: from the texts held beside the indexes, or read from a server."""
        committed = self._documents(knowledge_base, must_exist=True) if committed is None else committed
        texts = self.indexes(knowledge_base).texts
        if texts is None:
            stored = self.store.get_chunks(knowledge_base, keys)
            return {c.key: c for c in stored if _is_committed(c, committed)}
        found = {}
        for key, text in texts.get(keys).items():
            document_id, generation, chunk = parse_chunk_key(key)
            record = committed.get(document_id)
            if record is not None and record.generation == generation:
                found[key] = StoredChunk(key, document_id, generation, chunk, record.filename, text)
        return found

    def _similarities(
        self, knowledge_base: str, indexes: SearchIndexes, vector: np.ndarray, keys: list[str]
    ) -> dict[str, float]:
        """Cosine of the query with chunks only the lexical leg proposed."""
        if not keys:
            return {}
        if indexes.dense is not None:
            return indexes.dense.similarities(vector, keys)
        stored = self.store.get_vectors(knowledge_base, keys)
        return {k: float(v @ vector) for k, v in stored.items()}

    def list_documents(self, knowledge_base: str) -> list[DocumentRecord]:
        docs = self._documents(knowledge_base, must_exist=True)
        return sorted(docs.values(), key=lambda r: (r.created_unix, r.filename))

    def knowledge_bases(self) -> list[KnowledgeBaseSummary]:
        summaries = []
        for name in self.store.knowledge_bases():
            docs = self._documents(name).values()
            summaries.append(KnowledgeBaseSummary(name, len(docs), sum(d.chunks for d in docs)))
        return summaries

    # --- delete ------------------------------------------------------------------
    def delete_document(self, knowledge_base: str, document_id: str) -> int:
        """Remove a document; returns the chunks removed. UnknownDocument if it is not there."""
        with self._write_locks[knowledge_base]:
            record = self._documents(knowledge_base, must_exist=True).get(document_id)
            if record is None:
                raise UnknownDocument(f"no document {document_id!r} in knowledge base {knowledge_base!r}")
            removed = self._delete_locked(knowledge_base, record)
            self._changed(knowledge_base)
            return removed

    def _delete_locked(self, knowledge_base: str, record: DocumentRecord) -> int:
        self.store.remove_document(knowledge_base, record.document_id)  # invisible from here on
        self._committed[knowledge_base].pop(record.document_id, None)
        self.indexes(knowledge_base).remove(
            [chunk_key(record.document_id, record.generation, i) for i in range(record.chunks)]
        )
        self.store.delete_chunks(knowledge_base, record.document_id)
        self.store.flush(knowledge_base)
        return record.chunks

    def delete_knowledge_base(self, knowledge_base: str) -> int:
        """Remove a knowledge base; returns the documents it held."""
        with self._write_locks[knowledge_base]:
            docs = self._documents(knowledge_base, must_exist=True)
            for record in list(docs.values()):
                self.store.remove_document(knowledge_base, record.document_id)
            self.store.drop_knowledge_base(knowledge_base)
            self._committed.pop(knowledge_base, None)
            self._indexes.pop(knowledge_base, None)
            if self._saver is not None and self.snapshots is not None:
                self._saver.forget(knowledge_base)
                self.snapshots.drop(collection_name(knowledge_base))
            return len(docs)

    # --- snapshots ---------------------------------------------------------------
    def _changed(self, knowledge_base: str) -> None:
        if self._saver is not None:
            self._saver.mark(knowledge_base)

    def save_snapshot(self, knowledge_base: str) -> None:
        """Save the knowledge base's indexes with the documents they hold (under its write lock)."""
        if self.snapshots is None:
            return
        with self._write_locks[knowledge_base]:
            committed = self._committed.get(knowledge_base)
            indexes = self._indexes.get(knowledge_base)
            if committed is None or indexes is None:
                return  # deleted meanwhile
            started = time.perf_counter()
            documents = {d: r.generation for d, r in committed.items()}
            name = collection_name(knowledge_base)
            self.snapshots.save(name, self.embedder.dimension, documents, indexes)
        log.info(
            "saved the index snapshot of %s (%d chunks) in %.2fs",
            knowledge_base,
            len(indexes.lexical),
            time.perf_counter() - started,
        )

    # --- committed-document cache ------------------------------------------------
    def _documents(self, knowledge_base: str, must_exist: bool = False) -> dict[str, DocumentRecord]:
        """Committed documents by id. Cached per knowledge base once its collection exists (one
        writer), re-read on every call when other processes share the store."""
        cached = self._committed.get(knowledge_base)
        if cached is not None and not self.shared_store:
            return cached
        if not self.store.has_knowledge_base(knowledge_base):
            if must_exist:
                raise UnknownKnowledgeBase(f"no knowledge base named {knowledge_base!r}; ingest a document first")
            return {}
        self._sync(knowledge_base)
        return self._committed[knowledge_base]

    def _sync(self, knowledge_base: str) -> None:
        """Bring the cache and the indexes in line with the manifest (other writers, or first use)."""
        records = {r.document_id: r for r in self.store.documents(knowledge_base)}
        known = self._committed.get(knowledge_base, {})
        indexes = self.indexes(knowledge_base)
        gone = [r for doc_id, r in known.items() if records.get(doc_id) != r]
        indexes.remove([chunk_key(r.document_id, r.generation, i) for r in gone for i in range(r.chunks)])
        added = [r for doc_id, r in records.items() if known.get(doc_id) != r]
        if added:
            indexes.add_rows(
                self.store.scan_chunks(knowledge_base, [r.document_id for r in added], self.local_search),
                {r.document_id: r.generation for r in added},
            )
        self._committed[knowledge_base] = records


def _is_committed(chunk: StoredChunk, committed: dict[str, DocumentRecord]) -> bool:
    record = committed.get(chunk.document_id)
    return record is not None and record.generation == chunk.generation


def _unchanged(record: DocumentRecord) -> IngestResult:
    return IngestResult(record.document_id, record.chunks, True, [], record.characters)


def _terms_field(terms: Sequence[str]) -> str:
    text = join_terms(terms)
    if len(text.encode()) <= MAX_TERMS_BYTES:
        return text
    return text.encode()[:MAX_TERMS_BYTES].decode(errors="ignore").rsplit(" ", 1)[0]
