"""The knowledge-base RPCs: protobuf in, chatllm.retrieval in worker threads, protobuf out.

The library (chatllm.retrieval) blocks: parsing, embedding and Milvus calls run
in threads so the event loop keeps streaming tokens for other requests. This
module owns the validation of RPC input, the mapping of library errors to the
server's error types, and the ingest/retrieval metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from chatllm.kernel.config import KnowledgeConfig
from chatllm.proto import pb
from chatllm.retrieval.dense import HnswParams
from chatllm.retrieval.embedder import Embedder
from chatllm.retrieval.errors import (
    DocumentError,
    EmbeddingMismatch,
    RetrievalError,
    UnknownDocument,
    UnknownKnowledgeBase,
)
from chatllm.retrieval.isolation import IsolatedParser, ParseLimits
from chatllm.retrieval.knowledge_bases import KnowledgeBases, RetrievedChunk
from chatllm.retrieval.lexical import initialise_segmenter
from chatllm.retrieval.loaders import clean_filename, document_extension
from chatllm.retrieval.search_indexes import RetrievalSettings
from chatllm.retrieval.splitter import DocumentSplitter, SplitterSettings
from chatllm.retrieval.store import DocumentRecord, MilvusStore, is_server_uri
from chatllm.server import metrics
from chatllm.server.chat import Retrieved
from chatllm.server.errors import InvalidArgument, NotFound, Reason, StartupError
from chatllm.server.validation import MAX_RETRIEVAL_TOP_K, knowledge_base_name

log = logging.getLogger(__name__)

MAX_CHUNK_SIZE = 16_000  # characters; 4 bytes each stays under Milvus' 65535-byte VARCHAR
MAX_FILENAME = 255
MAX_QUERY_CHARS = 10_000
DOCUMENT_ID_LENGTH = 64
# A refused upload's remaining messages are read and dropped for at most this long before the refusal
# is sent (see _drain_refused_upload).
REFUSED_UPLOAD_DRAIN_S = 10.0


def milvus_uri(config: KnowledgeConfig, kb_dir: Path) -> str:
    """A Milvus server when --milvus-uri is given, else a milvus-lite database under the data dir."""
    return config.milvus_uri or str(kb_dir / "milvus.db")


def index_folder(config: KnowledgeConfig, kb_dir: Path, uri: str) -> Path:
    """Where the search indexes and the ingest journal of a store are saved: --kb-index-dir, else beside
    a milvus-lite database, or under the data dir (one folder per server address) for a Milvus server."""
    if config.kb_index_dir:
        return Path(config.kb_index_dir).expanduser()
    if is_server_uri(uri):
        address = re.sub(r"[^A-Za-z0-9.-]+", "_", uri.split("://", 1)[1])
        return kb_dir / "indexes" / address
    return Path(uri).with_name(Path(uri).name + ".indexes")


def retrieval_settings(config: KnowledgeConfig) -> RetrievalSettings:
    return RetrievalSettings(
        min_score=config.kb_min_score,
        hnsw=HnswParams(config.hnsw_m, config.hnsw_ef_construction, config.hnsw_ef_search),
    )


def open_knowledge_bases(config: KnowledgeConfig, kb_dir: Path, embedder: Embedder | None = None) -> KnowledgeBases:
    """Load the embedder (unless given), open the store, load the search indexes and recover from
    interrupted writes (blocking, seconds)."""
    if config.chunk_size > MAX_CHUNK_SIZE:
        raise StartupError(f"--chunk-size must be at most {MAX_CHUNK_SIZE} characters")
    started = time.perf_counter()
    initialise_segmenter()
    try:
        embedder = embedder or Embedder(
            config.embedding_model,
            precision=config.embedding_precision,
            question_runtime=config.embedding_question_runtime,
        )
    except RetrievalError as exc:
        raise StartupError(str(exc)) from None
    uri = milvus_uri(config, kb_dir)
    settings = retrieval_settings(config)
    try:
        store = MilvusStore(
            uri, embedder.dimension, hnsw=settings.hnsw, shards=config.milvus_shards, replicas=config.milvus_replicas
        )
    except RetrievalError as exc:  # a server without a feature the knowledge base uses
        raise StartupError(str(exc)) from None
    except Exception as exc:  # pymilvus raises its own types for locked files and unreachable servers
        raise StartupError(f"cannot open the knowledge base store {uri}: {exc}") from None
    library = KnowledgeBases(
        store,
        embedder,
        DocumentSplitter(SplitterSettings(config.chunk_size, config.chunk_overlap)),
        parser=IsolatedParser(ParseLimits(timeout_seconds=config.parse_timeout)),
        settings=settings,
        index_folder=index_folder(config, kb_dir, uri),
    )
    report = library.recover()
    log.info(
        "knowledge base ready in %.1fs: %s, embeddings %s (%d dims, %s; questions on %s); indexes loaded for %d "
        "knowledge bases, "
        "rebuilt for %d; recovery removed %d orphaned chunks, %d superseded documents",
        time.perf_counter() - started,
        uri,
        embedder.name,
        embedder.dimension,
        embedder.precision,
        embedder.question_runtime,
        len(report.loaded_snapshots),
        len(report.rebuilt_indexes),
        report.orphaned_chunks,
        len(report.superseded_documents),
    )
    return library


@contextlib.contextmanager
def library_errors() -> Iterator[None]:
    """Library errors -> the server's error types (which the servicer maps to gRPC codes)."""
    try:
        yield
    except DocumentError as exc:
        raise InvalidArgument("filename", str(exc)) from None
    except (UnknownDocument, UnknownKnowledgeBase) as exc:
        reason = Reason.DOCUMENT_NOT_FOUND if isinstance(exc, UnknownDocument) else Reason.KNOWLEDGE_BASE_NOT_FOUND
        raise NotFound(str(exc), reason) from None
    except EmbeddingMismatch as exc:
        raise InvalidArgument("knowledge_base", str(exc)) from None


def document_pb(record: DocumentRecord) -> pb.Document:
    return pb.Document(
        id=record.document_id,
        filename=record.filename,
        chunks=record.chunks,
        size_bytes=record.size_bytes,
        created_unix=record.created_unix,
    )


def source_pb(chunk: RetrievedChunk) -> pb.Source:
    return pb.Source(
        document_id=chunk.document_id, file=chunk.file, chunk=chunk.chunk, score=chunk.score, text=chunk.text
    )


async def _drain_refused_upload(requests: AsyncIterator[pb.IngestRequest]) -> None:
    """Read and drop what the client still sends of a refused upload, then let the refusal go out.

    A grpc.aio client still writing when the server ends the call can lose the server's status to a
    bare INTERNAL "Internal error from Core" (grpc/grpc#36066); the bridge relays uploads that way.
    Bounded in time: a client that keeps sending longer gets the refusal anyway."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_exhaust(requests), REFUSED_UPLOAD_DRAIN_S)


async def _exhaust(requests: AsyncIterator[pb.IngestRequest]) -> None:
    async for _ in requests:
        pass


class KnowledgeService:
    """Implements the servicer's KnowledgeRPCs and GenerateService's Retriever."""

    def __init__(self, config: KnowledgeConfig, library: KnowledgeBases, max_upload_bytes: int) -> None:
        self.config = config
        self.max_upload_bytes = max_upload_bytes
        self.library = library

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, config: KnowledgeConfig, kb_dir: Path, max_upload_bytes: int
    ) -> AsyncIterator[KnowledgeService]:
        library = await asyncio.to_thread(open_knowledge_bases, config, kb_dir)
        try:
            yield cls(config, library, max_upload_bytes)
        finally:
            await asyncio.to_thread(library.close)

    # --- ingest ------------------------------------------------------------------
    async def ingest(self, requests: AsyncIterator[pb.IngestRequest]) -> pb.IngestResponse:
        header, data = await self._receive(requests)
        knowledge_base = knowledge_base_name(header.knowledge_base, "header.knowledge_base")
        filename = clean_filename(header.filename)
        started = time.perf_counter()
        with library_errors():
            result = await asyncio.to_thread(self.library.ingest, knowledge_base, filename, data, header.mime_type)
        metrics.INGEST_LATENCY.observe(time.perf_counter() - started)
        if not result.unchanged:
            metrics.INGEST_CHUNKS.inc(result.chunks)
        log.info(
            "ingest %s into %s: %s, %d chunks%s",
            filename,
            knowledge_base,
            result.document_id[:12],
            result.chunks,
            " (unchanged)" if result.unchanged else "",
        )
        return pb.IngestResponse(
            document_id=result.document_id,
            chunks=result.chunks,
            unchanged=result.unchanged,
            replaced_document_ids=result.replaced_document_ids,
            characters=result.characters,
        )

    async def _receive(self, requests: AsyncIterator[pb.IngestRequest]) -> tuple[pb.IngestHeader, bytes]:
        """The header and the whole file, within --max-upload-bytes."""
        try:
            return await self._read_upload(requests)
        except InvalidArgument:
            await _drain_refused_upload(requests)
            raise

    async def _read_upload(self, requests: AsyncIterator[pb.IngestRequest]) -> tuple[pb.IngestHeader, bytes]:
        header: pb.IngestHeader | None = None
        parts: list[bytes] = []
        size = 0
        limit = self.max_upload_bytes
        async for request in requests:
            if request.HasField("header"):
                if header is not None:
                    raise InvalidArgument("header", "only the first message may be a header")
                header = request.header
                _check_filename(header.filename)
                with library_errors():  # an unsupported type fails before the upload, not after
                    document_extension(clean_filename(header.filename), header.mime_type)
                continue
            if header is None:
                raise InvalidArgument("header", "the first message must be the header (knowledge base, filename)")
            size += len(request.chunk)
            if size > limit:
                raise InvalidArgument(
                    "chunk",
                    f"{clean_filename(header.filename)}: larger than the {limit}-byte "
                    "upload limit (--max-upload-bytes)",
                    Reason.UPLOAD_TOO_LARGE,
                )
            parts.append(request.chunk)
        if header is None:
            raise InvalidArgument("header", "missing: send a header, then the file's bytes")
        if size == 0:
            raise InvalidArgument("chunk", f"{clean_filename(header.filename)}: the file is empty")
        return header, b"".join(parts)

    # --- retrieval ---------------------------------------------------------------
    async def retrieve(self, request: pb.RetrieveRequest) -> pb.RetrieveResponse:
        if not request.query.strip():
            raise InvalidArgument("query", "must not be empty")
        if request.top_k > MAX_RETRIEVAL_TOP_K:
            raise InvalidArgument("top_k", f"at most {MAX_RETRIEVAL_TOP_K}")
        knowledge_base = knowledge_base_name(request.knowledge_base)
        chunks = await self._retrieve(knowledge_base, request.query, request.top_k or self.config.retrieval_top_k)
        return pb.RetrieveResponse(sources=[source_pb(c) for c in chunks])

    async def retrieve_chunks(self, knowledge_base: str, query: str, top_k: int) -> list[Retrieved]:
        """For Generate with use_knowledge_base: the top_k chunks as prompt context."""
        chunks = await self._retrieve(knowledge_base, query, top_k)
        return [Retrieved(c.document_id, c.file, c.chunk, c.score, c.text) for c in chunks]

    async def _retrieve(self, knowledge_base: str, query: str, top_k: int) -> list[RetrievedChunk]:
        if len(query) > MAX_QUERY_CHARS:
            query = query[:MAX_QUERY_CHARS]  # a long prompt still retrieves on its beginning
        started = time.perf_counter()
        with library_errors():
            chunks = await asyncio.to_thread(self.library.retrieve, knowledge_base, query, top_k)
        metrics.RETRIEVAL_LATENCY.observe(time.perf_counter() - started)
        return chunks

    # --- documents and knowledge bases -------------------------------------------
    async def list_documents(self, request: pb.ListDocumentsRequest) -> pb.ListDocumentsResponse:
        knowledge_base = knowledge_base_name(request.knowledge_base)
        with library_errors():
            records = await asyncio.to_thread(self.library.list_documents, knowledge_base)
        return pb.ListDocumentsResponse(documents=[document_pb(r) for r in records])

    async def delete_document(self, request: pb.DeleteDocumentRequest) -> pb.DeleteDocumentResponse:
        knowledge_base = knowledge_base_name(request.knowledge_base)
        document_id = request.document_id.strip().lower()
        if len(document_id) != DOCUMENT_ID_LENGTH or any(c not in "0123456789abcdef" for c in document_id):
            raise InvalidArgument("document_id", "a 64-character hex id from Ingest or ListDocuments is required")
        with library_errors():
            chunks = await asyncio.to_thread(self.library.delete_document, knowledge_base, document_id)
        return pb.DeleteDocumentResponse(chunks_deleted=chunks)

    async def list_knowledge_bases(self) -> pb.ListKnowledgeBasesResponse:
        summaries = await asyncio.to_thread(self.library.knowledge_bases)
        return pb.ListKnowledgeBasesResponse(
            knowledge_bases=[pb.KnowledgeBase(name=s.name, documents=s.documents, chunks=s.chunks) for s in summaries]
        )

    async def delete_knowledge_base(self, request: pb.DeleteKnowledgeBaseRequest) -> pb.DeleteKnowledgeBaseResponse:
        if not request.knowledge_base:
            raise InvalidArgument("knowledge_base", "required (deleting one by default would be a surprise)")
        knowledge_base = knowledge_base_name(request.knowledge_base)
        with library_errors():
            documents = await asyncio.to_thread(self.library.delete_knowledge_base, knowledge_base)
        return pb.DeleteKnowledgeBaseResponse(documents_deleted=documents)


def _check_filename(filename: str) -> None:
    name = clean_filename(filename)
    if not name:
        raise InvalidArgument("header.filename", "required (its extension picks the loader)")
    if len(name) > MAX_FILENAME:
        raise InvalidArgument("header.filename", f"at most {MAX_FILENAME} characters")
