"""What the knowledge-base routes answer, as pydantic models."""

from __future__ import annotations

from pydantic import Field

from chatllm.bridge.errors import Error
from chatllm.bridge.reply_parts import Body


class KnowledgeBaseSize(Body):
    name: str
    documents: int
    chunks: int


class KnowledgeBaseList(Body):
    knowledge_bases: list[KnowledgeBaseSize]


class Document(Body):
    id: str = Field(description="64-character hex content hash")
    filename: str
    chunks: int
    size_bytes: int
    created_unix: float


class DocumentList(Body):
    knowledge_base: str
    documents: list[Document]


class IngestedDocument(Body):
    filename: str
    document_id: str
    chunks: int
    unchanged: bool = Field(description="the same bytes were already stored")
    replaced_document_ids: list[str]
    characters: int


class UploadResult(Body):
    knowledge_base: str
    documents: list[IngestedDocument]


class UploadError(Error):
    documents: list[IngestedDocument] = Field(
        default_factory=list, description="files stored before the failing one (absent when none was read)"
    )


class DeletedDocument(Body):
    knowledge_base: str
    deleted: str
    chunks_deleted: int


class DeletedKnowledgeBase(Body):
    knowledge_base: str
    documents_deleted: int
