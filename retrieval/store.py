"""Milvus through pymilvus: a milvus-lite directory by default, a Milvus server for http(s):// URIs.

Layout: one chunk collection per knowledge base (`kb_<escaped name>`), plus one
manifest collection (`chatllm_documents`) with a row per committed document.
The manifest row is the commit point of an ingest: chunk rows are written first
under a fresh `generation` id, and only chunks whose (document, generation)
pair has a manifest row are ever returned. Anything else is a leftover of an
ingest that failed or was killed, and `orphaned_chunks` finds it for clean-up.

Known milvus-lite behaviours handled here: a reopened collection must be
loaded before it is searched; only the sync client creates indexes; `delete`
returns the deleted ids on lite but a `{"delete_count": n}` dict on a server.

Writes on the ingest path (chunk rows, the manifest's commit row) go straight to
milvus-lite's engine when it runs in this process, as milvus-lite 3 does behind a
loopback gRPC server of its own: the round trip through pymilvus's row packing,
protobuf and that server's threads cost twice the write itself (11 rows: 2.4 ms
against 0.85 ms). Everything else, and every write to a server, goes through pymilvus.

Vector indexes: a server gets an explicit HNSW index with the configured build and
search parameters and answers the dense leg. milvus-lite gets a FLAT index only
(it needs one to load a collection): its search walks every row in Python
(see chatllm.retrieval.dense), so the dense leg searches an in-process FAISS HNSW
index instead, and an HNSW build per flushed segment would only cost CPU.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatllm.retrieval.dense import HnswParams
from chatllm.retrieval.errors import EmbeddingMismatch, RetrievalError, UnknownKnowledgeBase

log = logging.getLogger(__name__)

MANIFEST = "chatllm_documents"
CHUNK_PREFIX = "kb_"
MAX_VARCHAR = 65535
INSERT_BATCH = 256
SCAN_BATCH = 2000
LITE_SCAN_LIMIT = 1 << 40
CHUNK_FIELDS = ["pk", "document_id", "generation", "chunk", "file", "text"]
MANIFEST_FIELDS = [
    "knowledge_base",
    "document_id",
    "generation",
    "filename",
    "chunks",
    "size_bytes",
    "characters",
    "created_unix",
]
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_-]*$")
# What this module needs of a Milvus server, and the release that brought it.
SERVER_FEATURES = {
    "the COSINE metric": (2, 3),
    "upsert": (2, 3),
    "query iterators": (2, 3),
}


@dataclass(frozen=True)
class DocumentRecord:
    knowledge_base: str
    document_id: str
    generation: str
    filename: str
    chunks: int
    size_bytes: int
    characters: int
    created_unix: float


@dataclass(frozen=True)
class ChunkRow:
    document_id: str
    generation: str
    chunk: int
    file: str
    text: str
    terms: str
    vector: np.ndarray

    @property
    def key(self) -> str:
        return chunk_key(self.document_id, self.generation, self.chunk)


@dataclass(frozen=True)
class StoredChunk:
    key: str
    document_id: str
    generation: str
    chunk: int
    file: str
    text: str
    score: float = 0.0


def chunk_key(document_id: str, generation: str, chunk: int) -> str:
    return f"{document_id}:{generation}:{chunk}"


def parse_chunk_key(key: str) -> tuple[str, str, int]:
    """(document id, generation, chunk number) of a `chunk_key`."""
    document_id, generation, chunk = key.split(":")
    return document_id, generation, int(chunk)


def collection_name(knowledge_base: str) -> str:
    """Milvus names allow [A-Za-z0-9_]; knowledge-base names also allow '-'. Escaping keeps it reversible."""
    return CHUNK_PREFIX + knowledge_base.replace("_", "__").replace("-", "_d")


def knowledge_base_of(collection: str) -> str:
    escaped = collection.removeprefix(CHUNK_PREFIX)
    return re.sub(r"_(.)", lambda m: "_" if m.group(1) == "_" else "-", escaped)


def quoted(value: str) -> str:
    """A string literal for a filter; only ids and names we validated ever reach here."""
    if not SAFE_VALUE.match(value):
        raise ValueError(f"unsafe filter value {value!r}")
    return f'"{value}"'


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://"))


def missing_server_features(version: str) -> list[str]:
    """Features of SERVER_FEATURES that a server of `version` (e.g. "v2.3.5-lite") lacks."""
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if match is None:
        return []  # an unknown version string: let the calls themselves fail
    found = (int(match.group(1)), int(match.group(2)))
    return [name for name, needed in SERVER_FEATURES.items() if found < needed]


class MilvusStore:
    """All Milvus access of the knowledge base. Methods block; call them from a worker thread."""

    def __init__(
        self,
        uri: str,
        dimension: int,
        token: str = "",
        hnsw: HnswParams | None = None,
        shards: int = 1,
        replicas: int = 1,
    ) -> None:
        from pymilvus import MilvusClient

        self.uri = uri
        self.dimension = dimension
        self.hnsw = hnsw or HnswParams()
        self.shards = shards  # a server's chunk collections: shards at creation, in-memory replicas at load
        self.replicas = replicas
        self.is_server = is_server_uri(uri)
        if not self.is_server:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"token": token} if token else {}
        if not self.is_server:
            # lite's in-process gRPC server allows a ping every 5 minutes; pymilvus pings every 10 s
            # and gets "GOAWAY too_many_pings" errors in the log for it.
            options["grpc_options"] = {"grpc.keepalive_time_ms": 600_000, "grpc.keepalive_permit_without_calls": 0}
        self._client = MilvusClient(uri=uri, **options)
        self._engine = None if self.is_server else lite_engine(uri)
        self._loaded: set[str] = set()
        self._opening = threading.Lock()
        if self.is_server:
            self._check_server()
        self._ensure_manifest()

    def _check_server(self) -> None:
        version = str(self._client.get_server_version())
        missing = missing_server_features(version)
        if missing:
            self._client.close()
            raise RetrievalError(
                f"the Milvus server at {self.uri} runs {version}, which lacks {', '.join(missing)}; "
                "the knowledge base needs Milvus 2.3 or newer"
            )

    def close(self) -> None:
        self._client.close()

    # --- collections -------------------------------------------------------------
    def _ensure_manifest(self) -> None:
        from pymilvus import DataType

        if not self._client.has_collection(MANIFEST):
            schema = self._client.create_schema(auto_id=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=256)
            for name in ("knowledge_base", "document_id", "generation"):
                schema.add_field(name, DataType.VARCHAR, max_length=128)
            schema.add_field("filename", DataType.VARCHAR, max_length=2048)
            for name in ("chunks", "size_bytes", "characters"):
                schema.add_field(name, DataType.INT64)
            schema.add_field("created_unix", DataType.DOUBLE)
            # Milvus wants a vector field in every collection; the manifest has no use for one.
            schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
            self._create(MANIFEST, schema, "placeholder")
        self._load(MANIFEST)

    def _create(self, name: str, schema: Any, vector_field: str) -> None:
        index = self._client.prepare_index_params()
        if self.is_server and vector_field == "vector":
            params = {"M": self.hnsw.m, "efConstruction": self.hnsw.ef_construction}
            index.add_index(vector_field, index_type="HNSW", metric_type="COSINE", params=params)
        else:
            index.add_index(vector_field, index_type="FLAT", metric_type="COSINE")
        options = {"num_shards": self.shards} if self.is_server and vector_field == "vector" else {}
        self._client.create_collection(name, schema=schema, consistency_level="Strong", **options)
        # sync=False: waiting calls AllocTimestamp, which lite lacks (it logs an error per collection);
        # loading the collection afterwards waits for the index anyway.
        self._client.create_index(name, index, sync=False)

    def _load(self, name: str) -> None:
        if name not in self._loaded:
            # A reopened collection is not searchable until loaded; a cluster may hold several replicas.
            options = {"replica_number": self.replicas} if self.is_server and self.replicas > 1 else {}
            self._client.load_collection(name, **options)
            self._loaded.add(name)

    def knowledge_bases(self) -> list[str]:
        names = self._client.list_collections()
        return sorted(knowledge_base_of(n) for n in names if n.startswith(CHUNK_PREFIX))

    def has_knowledge_base(self, knowledge_base: str) -> bool:
        return bool(self._client.has_collection(collection_name(knowledge_base)))

    def open_knowledge_base(self, knowledge_base: str, create: bool) -> str:
        """The chunk collection's name, loaded; created when `create`, else UnknownKnowledgeBase."""

        name = collection_name(knowledge_base)
        if name in self._loaded:
            return name
        with self._opening:  # concurrent first ingests into a new knowledge base create it once
            return self._open_locked(knowledge_base, name, create)

    def _open_locked(self, knowledge_base: str, name: str, create: bool) -> str:
        from pymilvus import DataType

        if name in self._loaded:
            return name
        if not self._client.has_collection(name):
            if not create:
                raise UnknownKnowledgeBase(f"no knowledge base named {knowledge_base!r}")
            schema = self._client.create_schema(auto_id=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=256)
            schema.add_field("document_id", DataType.VARCHAR, max_length=128)
            schema.add_field("generation", DataType.VARCHAR, max_length=128)
            schema.add_field("chunk", DataType.INT64)
            schema.add_field("file", DataType.VARCHAR, max_length=2048)
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
            schema.add_field("terms", DataType.VARCHAR, max_length=MAX_VARCHAR)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dimension)
            self._create(name, schema, "vector")
        self._check_dimension(knowledge_base, name)
        self._load(name)
        return name

    def _check_dimension(self, knowledge_base: str, name: str) -> None:
        fields = self._client.describe_collection(name)["fields"]
        dim = next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")
        if dim != self.dimension:
            raise EmbeddingMismatch(
                f"knowledge base {knowledge_base!r} holds {dim}-dimensional vectors but the embedding model "
                f"makes {self.dimension}; use the model it was built with, or delete and re-ingest it"
            )

    def drop_knowledge_base(self, knowledge_base: str) -> None:
        name = collection_name(knowledge_base)
        self._loaded.discard(name)
        self._client.drop_collection(name)

    # --- chunks ------------------------------------------------------------------
    def insert_chunks(self, knowledge_base: str, rows: Sequence[ChunkRow]) -> None:
        name = self.open_knowledge_base(knowledge_base, create=True)
        for start in range(0, len(rows), INSERT_BATCH):
            batch = rows[start : start + INSERT_BATCH]
            records = [
                {
                    "pk": r.key,
                    "document_id": r.document_id,
                    "generation": r.generation,
                    "chunk": r.chunk,
                    "file": r.file,
                    "text": r.text,
                    "terms": r.terms,
                    "vector": r.vector.tolist(),
                }
                for r in batch
            ]
            if self._engine is not None:
                self._engine.get_collection(name).insert(records)
            else:
                self._client.insert(name, records)

    def flush(self, knowledge_base: str) -> None:
        self._flush(collection_name(knowledge_base))

    def _flush(self, name: str) -> None:
        """lite: seal the rows into a segment file (its WAL already survives a kill). A server makes
        writes durable and visible (Strong consistency) on its own, and rate-limits explicit flushes,
        so there it is skipped."""
        if not self.is_server:
            self._client.flush(name)

    def delete_chunks(self, knowledge_base: str, document_id: str, generation: str | None = None) -> int:
        name = self.open_knowledge_base(knowledge_base, create=False)
        expr = f"document_id == {quoted(document_id)}"
        if generation is not None:
            expr += f" and generation == {quoted(generation)}"
        return deleted_count(self._client.delete(name, filter=expr))

    def search(
        self, knowledge_base: str, vector: np.ndarray, limit: int, exclude_generations: Sequence[str] = ()
    ) -> list[StoredChunk]:
        name = self.open_knowledge_base(knowledge_base, create=False)
        expr = f"generation not in [{', '.join(quoted(g) for g in exclude_generations)}]" if exclude_generations else ""
        results = self._client.search(
            name,
            data=[vector.tolist()],
            anns_field="vector",
            limit=limit,
            filter=expr,
            output_fields=CHUNK_FIELDS,
            search_params={"metric_type": "COSINE", "params": {"ef": max(self.hnsw.ef_search, limit)}},
        )
        return [_stored(hit["entity"], float(hit["distance"])) for hit in results[0]]

    def get_vectors(self, knowledge_base: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        name = self.open_knowledge_base(knowledge_base, create=False)
        rows = self._client.get(name, ids=list(keys), output_fields=["pk", "vector"])
        return {row["pk"]: np.asarray(row["vector"], dtype=np.float32) for row in rows}

    def get_chunks(self, knowledge_base: str, keys: Sequence[str]) -> list[StoredChunk]:
        if not keys:
            return []
        name = self.open_knowledge_base(knowledge_base, create=False)
        return [_stored(row) for row in self._client.get(name, ids=list(keys), output_fields=CHUNK_FIELDS)]

    def scan_chunks(
        self, knowledge_base: str, document_ids: Sequence[str] = (), with_vectors_and_texts: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Key, document, generation and terms (and vector and text) of every chunk row (of `document_ids`
        when given)."""
        name = self.open_knowledge_base(knowledge_base, create=False)
        expr = f"document_id in [{', '.join(quoted(d) for d in document_ids)}]" if document_ids else 'pk != ""'
        fields = ["pk", "document_id", "generation", "terms"] + (["vector", "text"] if with_vectors_and_texts else [])
        return self._scan(name, expr, fields)

    def _scan(self, name: str, expr: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """All rows matching expr. A server caps one query at 16384 rows, so it pages with an iterator;
        lite has no such cap but no iterator timestamps either (it logs an error per scan), so one query."""
        if not self.is_server:
            yield from self._client.query(name, filter=expr, output_fields=fields, limit=LITE_SCAN_LIMIT)
            return
        iterator = self._client.query_iterator(name, batch_size=SCAN_BATCH, filter=expr, output_fields=fields)
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()

    def delete_chunk_keys(self, knowledge_base: str, keys: Sequence[str]) -> int:
        name = self.open_knowledge_base(knowledge_base, create=False)
        return sum(
            deleted_count(self._client.delete(name, ids=list(keys[i : i + 1000]))) for i in range(0, len(keys), 1000)
        )

    # --- manifest ----------------------------------------------------------------
    def commit_document(self, record: DocumentRecord) -> None:
        """The commit point: after this returns, the document is visible."""
        row = asdict(record) | {
            "pk": _manifest_key(record.knowledge_base, record.document_id),
            "placeholder": [1.0, 0.0],
        }
        # The upsert is in milvus-lite's WAL (replayed after a kill) or durable on a server when it returns;
        # a flush per document here cost ~6% of the ingest rate.
        if self._engine is not None:
            self._engine.get_collection(MANIFEST).upsert([row])
        else:
            self._client.upsert(MANIFEST, [row])

    @property
    def writes_in_process(self) -> bool:
        """True when ingest writes call milvus-lite's engine directly (see the module's docstring)."""
        return self._engine is not None

    def remove_document(self, knowledge_base: str, document_id: str) -> None:
        self._client.delete(MANIFEST, ids=[_manifest_key(knowledge_base, document_id)])

    def documents(self, knowledge_base: str | None = None) -> list[DocumentRecord]:
        expr = f"knowledge_base == {quoted(knowledge_base)}" if knowledge_base is not None else 'pk != ""'
        rows = self._scan(MANIFEST, expr, MANIFEST_FIELDS)
        records = [DocumentRecord(**{f: row[f] for f in MANIFEST_FIELDS}) for row in rows]
        return sorted(records, key=lambda r: (r.created_unix, r.filename))


def lite_engine(uri: str) -> Any | None:
    """The MilvusLite engine that pymilvus started in this process for the milvus-lite path `uri`, or
    None where this milvus-lite does not run one here (then every write goes through pymilvus).

    milvus-lite 3 keeps one engine per data directory in its server manager, and its gRPC servicer
    calls that same engine (`get_collection` returns one cached Collection per name), so a direct
    write and a pymilvus read see the same memtable and write-ahead log."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return None
    servers = getattr(server_manager_instance, "_servers", None)
    entry = servers.get(os.path.abspath(uri)) if isinstance(servers, dict) else None
    if not entry or len(entry) < 2 or not hasattr(entry[1], "get_collection"):
        log.info("milvus-lite: no in-process engine for %s; ingest writes go through pymilvus", uri)
        return None
    return entry[1]


def _manifest_key(knowledge_base: str, document_id: str) -> str:
    return f"{knowledge_base}/{document_id}"


def _stored(row: dict[str, Any], score: float = 0.0) -> StoredChunk:
    return StoredChunk(
        key=row["pk"],
        document_id=row["document_id"],
        generation=row["generation"],
        chunk=int(row["chunk"]),
        file=row["file"],
        text=row["text"],
        score=score,
    )


def deleted_count(result: Any) -> int:
    """lite returns the deleted primary keys; a server returns {"delete_count": n}."""
    if isinstance(result, dict):
        return int(result.get("delete_count", 0))
    return len(result or [])
