"""The knowledge-base library on a real Milvus store (milvus-lite, and a Milvus server inside a network
namespace: see tests/milvus_backends.py) with the real embedder: atomic writes, recovery after
interrupted writes, saved search indexes, the relevance threshold, and several writers sharing one store."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatllm.retrieval.embedder import Embedder
from chatllm.retrieval.index_snapshots import PendingIngest
from chatllm.retrieval.knowledge_bases import KnowledgeBases, document_id_of
from chatllm.retrieval.lexical import initialise_segmenter, join_terms, tokenize
from chatllm.retrieval.loaders import load_document
from chatllm.retrieval.search_indexes import RetrievalSettings
from chatllm.retrieval.splitter import DocumentSplitter, SplitterSettings
from chatllm.retrieval.store import ChunkRow, DocumentRecord, MilvusStore, collection_name
from tests.milvus_backends import BACKENDS, milvus_uri_for

pytestmark = pytest.mark.model  # the real embedder

TEA = "龙井茶的最佳冲泡水温是八十五度，冲泡时间为两分钟。".encode()
PEARS = b"The Larkspur orchard grows seventeen varieties of pears."
SPLITTER = DocumentSplitter(SplitterSettings(chunk_size=120, chunk_overlap=10))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    initialise_segmenter()
    return Embedder()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Iterator[MilvusStore]:
    opened = MilvusStore(milvus_uri_for(request.param, tmp_path), embedder.dimension)
    yield opened
    opened.close()


def library(
    store: MilvusStore, embedder: Embedder, shared: bool = False, indexes: Path | None = None
) -> KnowledgeBases:
    knowledge = KnowledgeBases(store, embedder, SPLITTER, shared_store=shared, index_folder=indexes)
    knowledge.recover()
    return knowledge


def restarted(
    previous: KnowledgeBases, store: MilvusStore, embedder: Embedder, indexes: Path
) -> tuple[KnowledgeBases, object]:
    """A new library on the same store and index folder, as after a kill and a restart: the previous one
    stops saving snapshots, without saving what it had marked (the process it stands for is gone)."""
    if previous._saver is not None:
        previous._saver.close(flush=False)
    knowledge = KnowledgeBases(store, embedder, SPLITTER, index_folder=indexes)
    return knowledge, knowledge.recover()


def write_uncommitted(knowledge: KnowledgeBases, kb: str, filename: str, data: bytes) -> tuple[str, int]:
    """What a process killed between writing chunks and committing leaves behind."""
    chunks = knowledge.splitter.split(load_document(filename, data).text)
    vectors = knowledge.embedder.encode(chunks)
    document_id, generation = document_id_of(data), uuid.uuid4().hex
    rows = [
        ChunkRow(document_id, generation, i, filename, text, join_terms(tokenize(text, for_index=True)), vector)
        for i, (text, vector) in enumerate(zip(chunks, vectors, strict=True))
    ]
    knowledge.store.insert_chunks(kb, rows)
    knowledge.store.flush(kb)
    return document_id, len(rows)


def stored_documents(store: MilvusStore, kb: str) -> set[str]:
    return {row["document_id"] for row in store.scan_chunks(kb)}


def test_uncommitted_chunks_are_invisible_and_removed_by_recovery(store: MilvusStore, embedder: Embedder) -> None:
    knowledge = library(store, embedder)
    kept = knowledge.ingest("kb", "pears.txt", PEARS)
    orphan_id, orphan_chunks = write_uncommitted(knowledge, "kb", "tea.txt", TEA)
    assert stored_documents(store, "kb") == {kept.document_id, orphan_id}

    for question in ("龙井茶用多少度的水冲泡？", "pears"):
        assert {c.document_id for c in knowledge.retrieve("kb", question, 5, min_score=0)} == {kept.document_id}
    assert [d.document_id for d in knowledge.list_documents("kb")] == [kept.document_id]

    report = KnowledgeBases(store, embedder, SPLITTER).recover()
    assert report.orphaned_chunks == orphan_chunks
    assert stored_documents(store, "kb") == {kept.document_id}


def test_a_write_that_fails_midway_leaves_nothing(store: MilvusStore, embedder: Embedder) -> None:
    knowledge = library(store, embedder)
    knowledge.ingest("kb", "pears.txt", PEARS)
    real_commit = store.commit_document

    def disk_full(record: DocumentRecord) -> None:
        raise OSError("No space left on device")

    store.commit_document = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError, match="No space left"):
        knowledge.ingest("kb", "tea.txt", TEA * 20)
    store.commit_document = real_commit  # type: ignore[method-assign]

    assert [d.filename for d in knowledge.list_documents("kb")] == ["pears.txt"]
    assert len(stored_documents(store, "kb")) == 1
    assert all(c.file == "pears.txt" for c in knowledge.retrieve("kb", "龙井茶的水温", 5, min_score=0))
    assert not knowledge.ingest("kb", "tea.txt", TEA * 20).unchanged  # a retry really ingests


def test_recovery_keeps_only_the_newest_document_of_a_filename(store: MilvusStore, embedder: Embedder) -> None:
    knowledge = library(store, embedder)
    old = knowledge.ingest("kb", "menu.txt", b"Soup of the day: plum.")
    # Killed after committing the replacement but before deleting the old version.
    new_id, chunks = write_uncommitted(knowledge, "kb", "menu.txt", b"Soup of the day: lentil.")
    generation = next(r["generation"] for r in store.scan_chunks("kb") if r["document_id"] == new_id)
    store.commit_document(DocumentRecord("kb", new_id, generation, "menu.txt", chunks, 24, 24, time.time() + 1))

    report = KnowledgeBases(store, embedder, SPLITTER).recover()
    assert report.superseded_documents == [old.document_id]
    restarted = library(store, embedder)
    assert [d.document_id for d in restarted.list_documents("kb")] == [new_id]
    assert stored_documents(store, "kb") == {new_id}


def test_records_of_a_dropped_knowledge_base_are_removed(store: MilvusStore, embedder: Embedder) -> None:
    knowledge = library(store, embedder)
    knowledge.ingest("doomed", "pears.txt", PEARS)
    store.drop_knowledge_base("doomed")  # killed between dropping the collection and the records
    assert KnowledgeBases(store, embedder, SPLITTER).recover().dangling_records == 1
    assert store.documents() == []


def test_concurrent_ingests_of_the_same_bytes_store_one_copy(store: MilvusStore, embedder: Embedder) -> None:
    knowledge = library(store, embedder)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(knowledge.ingest("kb", "tea.txt", TEA))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.unchanged for r in results) == [False, True, True]
    assert sum(1 for _ in store.scan_chunks("kb")) == results[0].chunks


def test_replicas_sharing_a_store_see_each_others_writes(store: MilvusStore, embedder: Embedder) -> None:
    writer = library(store, embedder, shared=True)
    reader = library(store, embedder, shared=True)
    tea = writer.ingest("kb", "tea.txt", TEA)
    writer.ingest("kb", "pears.txt", PEARS)
    top = reader.retrieve("kb", "龙井茶用多少度的水冲泡？", 1)
    assert top[0].document_id == tea.document_id  # found through the reader's own lexical index
    writer.delete_document("kb", tea.document_id)
    assert all(
        c.document_id != tea.document_id for c in reader.retrieve("kb", "龙井茶用多少度的水冲泡？", 5, min_score=0)
    )
    assert [d.filename for d in reader.list_documents("kb")] == ["pears.txt"]


def test_indexes_are_saved_and_loaded_at_the_next_start(store: MilvusStore, embedder: Embedder, tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    knowledge = library(store, embedder, indexes=indexes)
    tea = knowledge.ingest("kb", "tea.txt", TEA)
    pears = knowledge.ingest("kb", "pears.txt", PEARS)
    knowledge.save_snapshot("kb")

    again, report = restarted(knowledge, store, embedder, indexes)
    assert report.loaded_snapshots == ["kb"] and report.rebuilt_indexes == []  # type: ignore[attr-defined]
    assert again.retrieve("kb", "龙井茶用多少度的水冲泡？", 1)[0].document_id == tea.document_id  # lexical leg
    assert again.retrieve("kb", "How many kinds of pears grow in the orchard?", 1)[0].document_id == pears.document_id


def test_a_stale_snapshot_is_caught_up_from_the_manifest(
    store: MilvusStore, embedder: Embedder, tmp_path: Path
) -> None:
    indexes = tmp_path / "indexes"
    knowledge = library(store, embedder, indexes=indexes)
    tea = knowledge.ingest("kb", "tea.txt", TEA)
    knowledge.save_snapshot("kb")
    # Then, without a snapshot being saved (a kill before the delayed save): one added, one deleted.
    pears = knowledge.ingest("kb", "pears.txt", PEARS)
    knowledge.delete_document("kb", tea.document_id)

    again, report = restarted(knowledge, store, embedder, indexes)
    assert report.loaded_snapshots == ["kb"]  # type: ignore[attr-defined]
    assert {k.split(":")[0] for k in again.indexes("kb").lexical.keys()} == {pears.document_id}
    assert {c.document_id for c in again.retrieve("kb", "龙井茶用多少度的水冲泡？", 5, min_score=0)} == {
        pears.document_id
    }
    assert again.retrieve("kb", "pear varieties in the orchard", 1)[0].document_id == pears.document_id


def test_a_damaged_snapshot_means_a_rebuild_from_the_store(
    store: MilvusStore, embedder: Embedder, tmp_path: Path
) -> None:
    indexes = tmp_path / "indexes"
    knowledge = library(store, embedder, indexes=indexes)
    tea = knowledge.ingest("kb", "tea.txt", TEA)
    knowledge.save_snapshot("kb")
    current = indexes / collection_name("kb") / (indexes / collection_name("kb") / "CURRENT").read_text()
    (current / "lexical.npz").write_bytes(b"cut short by a crash")

    again, report = restarted(knowledge, store, embedder, indexes)
    assert report.rebuilt_indexes == ["kb"] and report.loaded_snapshots == []  # type: ignore[attr-defined]
    assert again.retrieve("kb", "龙井茶用多少度的水冲泡？", 1)[0].document_id == tea.document_id


def test_journalled_leftovers_are_removed_without_reading_every_chunk(
    store: MilvusStore, embedder: Embedder, tmp_path: Path
) -> None:
    indexes = tmp_path / "indexes"
    knowledge = library(store, embedder, indexes=indexes)
    kept = knowledge.ingest("kb", "pears.txt", PEARS)
    knowledge.save_snapshot("kb")
    # Killed after writing some rows of the next ingest: its journal entry names them.
    orphan_id, orphan_chunks = write_uncommitted(knowledge, "kb", "tea.txt", TEA)
    generation = next(r["generation"] for r in store.scan_chunks("kb") if r["document_id"] == orphan_id)
    assert knowledge.snapshots is not None
    knowledge.snapshots.begin_ingest(PendingIngest(generation, "kb", orphan_id))

    again, report = restarted(knowledge, store, embedder, indexes)
    assert report.loaded_snapshots == ["kb"] and report.orphaned_chunks == orphan_chunks  # type: ignore[attr-defined]
    assert stored_documents(store, "kb") == {kept.document_id}
    assert again.snapshots is not None and again.snapshots.pending_ingests() == []


def test_a_failed_ingest_leaves_no_journal_entry_and_no_rows(
    store: MilvusStore, embedder: Embedder, tmp_path: Path
) -> None:
    knowledge = library(store, embedder, indexes=tmp_path / "indexes")
    knowledge.ingest("kb", "pears.txt", PEARS)

    def disk_full(record: DocumentRecord) -> None:
        raise OSError("No space left on device")

    store.commit_document = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError):
        knowledge.ingest("kb", "tea.txt", TEA * 30)
    assert knowledge.snapshots is not None and knowledge.snapshots.pending_ingests() == []
    assert len(stored_documents(store, "kb")) == 1


def test_nothing_is_retrieved_below_the_threshold(store: MilvusStore, embedder: Embedder) -> None:
    knowledge = KnowledgeBases(store, embedder, SPLITTER, settings=RetrievalSettings(min_score=0.34))
    knowledge.recover()
    knowledge.ingest("kb", "tea.txt", TEA)
    knowledge.ingest("kb", "pears.txt", PEARS)
    assert knowledge.retrieve("kb", "What is the capital of Peru?", 3) == []
    assert knowledge.retrieve("kb", "秘鲁的首都是哪座城市？", 3) == []
    on_topic = knowledge.retrieve("kb", "How many varieties of pears does the orchard grow?", 3)
    assert [c.file for c in on_topic] == ["pears.txt"] and on_topic[0].score >= 0.34
    everything = knowledge.retrieve("kb", "What is the capital of Peru?", 3, min_score=0)
    assert len(everything) == 2 and all(0 <= c.score < 0.34 for c in everything)


def test_with_milvus_lite_a_question_reads_nothing_from_the_store(
    store: MilvusStore, embedder: Embedder, tmp_path: Path
) -> None:
    """The texts of the answer come from beside the indexes, and follow ingest, delete and restart."""
    indexes = tmp_path / "indexes"
    knowledge = library(store, embedder, indexes=indexes)
    tea = knowledge.ingest("kb", "tea.txt", TEA)
    pears = knowledge.ingest("kb", "pears.txt", PEARS)
    knowledge.save_snapshot("kb")
    knowledge.delete_document("kb", tea.document_id)  # after the snapshot: a restart must catch it up
    again, _ = restarted(knowledge, store, embedder, indexes)
    if store.is_server:  # a server answers the dense leg with the texts of its hits instead
        assert again.indexes("kb").texts is None
        return

    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("a question read chunks from the store")

    store.get_chunks = no_reads  # type: ignore[method-assign]
    store.get_vectors = no_reads  # type: ignore[method-assign]
    found = again.retrieve("kb", "How many varieties of pears does the orchard grow?", 3, min_score=0)
    assert [(c.document_id, c.file, c.chunk, c.text) for c in found] == [
        (pears.document_id, "pears.txt", 0, PEARS.decode())
    ]
    deleted_before_the_restart = again.retrieve("kb", "龙井茶用多少度的水冲泡？", 3, min_score=0)
    assert tea.document_id not in {c.document_id for c in deleted_before_the_restart}


def test_milvus_lite_ingest_writes_go_to_its_engine_and_read_back_through_pymilvus(
    store: MilvusStore, embedder: Embedder
) -> None:
    """With milvus-lite, chunk rows and the commit row skip pymilvus and lite's loopback gRPC server;
    what they write is what pymilvus reads back (one engine), and a server keeps the pymilvus path."""
    assert store.writes_in_process is not store.is_server
    knowledge = library(store, embedder)
    result = knowledge.ingest("kb", "pears.txt", PEARS)
    rows = list(store.scan_chunks("kb", [result.document_id], with_vectors_and_texts=True))
    assert [(r["text"], len(r["vector"])) for r in rows] == [(PEARS.decode(), embedder.dimension)]
    assert [(d.document_id, d.chunks) for d in store.documents("kb")] == [(result.document_id, 1)]
