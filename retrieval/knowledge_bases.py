"""The knowledge bases of one Milvus store: ingest, hybrid retrieval, listing, deletion, crash recovery.

Blocking and thread-safe: the gRPC layer calls it from worker threads. Writes
to one knowledge base are serialised by a lock; reads are not.

Atomicity: an ingest writes its chunk rows under a fresh generation id, flushes
them, and only then writes the manifest row (the commit point). Searches only
return chunks of committed (document, generation) pairs, and `recover()` (run
at start-up) deletes every other chunk, so a failed or killed ingest leaves no
partial document. Deletions remove the manifest row first for the same reason.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from chatllm.retrieval.embedder import Embedder
from chatllm.retrieval.errors import UnknownDocument, UnknownKnowledgeBase
from chatllm.retrieval.fusion import RankedList, reciprocal_rank_fusion
from chatllm.retrieval.isolation import IsolatedParser
from chatllm.retrieval.lexical import LexicalIndex, join_terms, tokenize
from chatllm.retrieval.loaders import load_document
from chatllm.retrieval.splitter import DocumentSplitter
from chatllm.retrieval.store import ChunkRow, DocumentRecord, MilvusStore, StoredChunk, chunk_key

log = logging.getLogger(__name__)

MIN_CANDIDATES = 20  # per leg, before fusion
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


@dataclass
class PreparedDocument:
    """A document parsed, split, segmented and embedded: everything but the writes."""

    filename: str
    document_id: str
    size_bytes: int
    characters: int
    chunks: list[str]
    terms: list[list[str]]
    vectors: object  # numpy array (n, dim)


@dataclass
class RecoveryReport:
    orphaned_chunks: int = 0
    superseded_documents: list[str] = field(default_factory=list)
    dangling_records: int = 0


def document_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class KnowledgeBases:
    """`shared_store=True` when other processes write to the same Milvus (a server with replicas):
    then the committed-document cache and the lexical index are re-synced from the manifest on reads."""

    def __init__(
        self,
        store: MilvusStore,
        embedder: Embedder,
        splitter: DocumentSplitter,
        shared_store: bool | None = None,
        parser: IsolatedParser | None = None,
    ) -> None:
        self.store = store
        # Untrusted PDF/DOCX are parsed in a bounded child process when a parser is given.
        self.load = parser.load if parser is not None else load_document
        self.embedder = embedder
        self.splitter = splitter
        self.shared_store = store.is_server if shared_store is None else shared_store
        self._write_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._committed: dict[str, dict[str, DocumentRecord]] = {}
        self._lexical: dict[str, LexicalIndex] = defaultdict(LexicalIndex)
        self._pending: set[str] = set()  # generations being written by this process

    # --- start-up ----------------------------------------------------------------
    def recover(self) -> RecoveryReport:
        """Drop leftovers of interrupted writes and rebuild the lexical indexes from the store."""
        report = RecoveryReport()
        records = self.store.documents()
        names = set(self.store.knowledge_bases())
        for record in records:
            if record.knowledge_base not in names:  # killed while deleting the knowledge base
                self.store.remove_document(record.knowledge_base, record.document_id)
                report.dangling_records += 1
        for name in sorted(names):
            with self._write_locks[name]:
                committed = {r.document_id: r for r in records if r.knowledge_base == name}
                report.superseded_documents += self._drop_superseded(name, committed)
                report.orphaned_chunks += self._load_lexical(name, committed)
                self._committed[name] = committed
        return report

    def _drop_superseded(self, name: str, committed: dict[str, DocumentRecord]) -> list[str]:
        """A kill between committing a replacement and deleting the old version leaves both: keep the newest."""
        newest: dict[str, DocumentRecord] = {}
        superseded: list[str] = []
        for record in sorted(committed.values(), key=lambda r: r.created_unix, reverse=True):
            if record.filename in newest:
                self.store.remove_document(name, record.document_id)
                superseded.append(record.document_id)
            else:
                newest[record.filename] = record
        for document_id in superseded:
            del committed[document_id]
        return superseded

    def _load_lexical(self, name: str, committed: dict[str, DocumentRecord]) -> int:
        index = self._lexical[name] = LexicalIndex()
        orphans: list[str] = []
        batch: list[tuple[str, list[str]]] = []
        for row in self.store.scan_chunks(name):
            record = committed.get(row["document_id"])
            if record is None or record.generation != row["generation"]:
                orphans.append(row["pk"])
                continue
            batch.append((row["pk"], row["terms"].split()))
            if len(batch) >= 5000:
                index.add(batch)
                batch = []
        index.add(batch)
        if orphans:
            log.info("knowledge base %s: removing %d chunks of unfinished ingests", name, len(orphans))
            self.store.delete_chunk_keys(name, orphans)
            self.store.flush(name)
        return len(orphans)

    # --- ingest ------------------------------------------------------------------
    def prepare(self, filename: str, data: bytes, mime_type: str = "") -> PreparedDocument:
        """Parse, split, segment and embed (the slow part, no lock held). DocumentError for bad files."""
        loaded = self.load(filename, data, mime_type)
        chunks = self.splitter.split(loaded.text, loaded.kind)
        return PreparedDocument(
            filename=filename,
            document_id=document_id_of(data),
            size_bytes=len(data),
            characters=len(loaded.text),
            chunks=chunks,
            terms=[tokenize(c) for c in chunks],
            vectors=self.embedder.encode(chunks),
        )

    def find_committed(self, knowledge_base: str, document_id: str) -> DocumentRecord | None:
        return self._documents(knowledge_base).get(document_id)

    def ingest(self, knowledge_base: str, filename: str, data: bytes, mime_type: str = "") -> IngestResult:
        existing = self.find_committed(knowledge_base, document_id_of(data))
        if existing is not None:
            return _unchanged(existing)
        return self.commit(knowledge_base, self.prepare(filename, data, mime_type))

    def commit(self, knowledge_base: str, doc: PreparedDocument) -> IngestResult:
        """Write a prepared document; replaces older documents of the same filename."""
        with self._write_locks[knowledge_base]:
            committed = self._documents(knowledge_base)
            if doc.document_id in committed:  # a concurrent ingest of the same bytes won
                return _unchanged(committed[doc.document_id])
            generation = uuid.uuid4().hex
            rows = [
                ChunkRow(doc.document_id, generation, i, doc.filename, text, _terms_field(terms), vector)
                for i, (text, terms, vector) in enumerate(zip(doc.chunks, doc.terms, doc.vectors, strict=True))  # type: ignore[call-overload]
            ]
            record = DocumentRecord(
                knowledge_base,
                doc.document_id,
                generation,
                doc.filename,
                len(rows),
                doc.size_bytes,
                doc.characters,
                time.time(),
            )
            self._pending.add(generation)
            log.info(
                "writing %d chunks of %s (%s) into %s", len(rows), doc.filename, doc.document_id[:12], knowledge_base
            )
            try:
                self.store.insert_chunks(knowledge_base, rows)
                self.store.flush(knowledge_base)
                self.store.commit_document(record)
            except BaseException:
                self._discard_quietly(knowledge_base, doc.document_id, generation)
                raise
            finally:
                self._pending.discard(generation)
            committed = self._committed.setdefault(knowledge_base, committed)  # a new knowledge base
            committed[doc.document_id] = record
            self._lexical[knowledge_base].add((r.key, terms) for r, terms in zip(rows, doc.terms, strict=True))
            replaced = [
                r for r in committed.values() if r.filename == doc.filename and r.document_id != doc.document_id
            ]
            for old in replaced:
                self._delete_locked(knowledge_base, old)
        return IngestResult(doc.document_id, len(rows), False, [r.document_id for r in replaced], doc.characters)

    def _discard_quietly(self, knowledge_base: str, document_id: str, generation: str) -> None:
        try:
            self.store.delete_chunks(knowledge_base, document_id, generation)
        except Exception:  # start-up recovery removes what is left
            log.exception("cleaning up a failed ingest of %s failed; recovery will finish it", document_id)

    # --- read --------------------------------------------------------------------
    def retrieve(
        self, knowledge_base: str, query: str, top_k: int, legs: Sequence[str] = ("dense", "lexical")
    ) -> list[RetrievedChunk]:
        """Dense and BM25 candidates fused by reciprocal rank; best first. `legs` exists for benchmarks."""
        committed = self._documents(knowledge_base, must_exist=True)
        candidates = max(top_k * 4, MIN_CANDIDATES)
        dense_weight = dense_leg_weight(self.embedder.unknown_token_fraction(query)) if "dense" in legs else 0.0
        if legs == ("dense",):
            dense_weight = 1.0  # the dense ranking alone, however little of the query the model reads
        dense: list[StoredChunk] = []
        if dense_weight > 0.05 and committed:
            vector = self.embedder.encode([query])[0]
            hits = self.store.search(knowledge_base, vector, candidates, sorted(self._pending))
            dense = [h for h in hits if _is_committed(h, committed)]
        lexical = self._lexical[knowledge_base].search(tokenize(query), candidates) if "lexical" in legs else []
        fused = reciprocal_rank_fusion(
            [RankedList([h.key for h in dense], dense_weight), RankedList([h.key for h in lexical], 1.0)], top_k
        )
        by_key = {h.key: h for h in dense}
        missing = [key for key, _ in fused if key not in by_key]
        by_key.update({c.key: c for c in self.store.get_chunks(knowledge_base, missing)})
        return [
            RetrievedChunk(c.document_id, c.file, c.chunk, score, c.text)
            for key, score in fused
            if (c := by_key.get(key)) is not None and _is_committed(c, committed)
        ]

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
            return self._delete_locked(knowledge_base, record)

    def _delete_locked(self, knowledge_base: str, record: DocumentRecord) -> int:
        self.store.remove_document(knowledge_base, record.document_id)  # invisible from here on
        self._committed[knowledge_base].pop(record.document_id, None)
        self._lexical[knowledge_base].remove(
            chunk_key(record.document_id, record.generation, i) for i in range(record.chunks)
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
            self._lexical.pop(knowledge_base, None)
            return len(docs)

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
        """Bring the cache and the lexical index in line with the manifest (other writers, or first use)."""
        records = {r.document_id: r for r in self.store.documents(knowledge_base)}
        known = self._committed.get(knowledge_base, {})
        index = self._lexical[knowledge_base]
        gone = [r for doc_id, r in known.items() if records.get(doc_id) != r]
        index.remove(chunk_key(r.document_id, r.generation, i) for r in gone for i in range(r.chunks))
        added = [r for doc_id, r in records.items() if known.get(doc_id) != r]
        if added:
            wanted = {chunk_key(r.document_id, r.generation, i) for r in added for i in range(r.chunks)}
            rows = self.store.scan_chunks(knowledge_base, [r.document_id for r in added])
            index.add((row["pk"], row["terms"].split()) for row in rows if row["pk"] in wanted)
        self._committed[knowledge_base] = records


def dense_leg_weight(unknown_fraction: float) -> float:
    """How much the dense leg's ranking counts, from the share of the query the model cannot read.

    Squared because meaning degrades faster than the token count: with half of a
    Chinese question [UNK] to the English default model, its ranking is mostly
    noise (recall@3 0.27 alone on the Chinese set; see bench/results)."""
    return (1.0 - unknown_fraction) ** 2


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
