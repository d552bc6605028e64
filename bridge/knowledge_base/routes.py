"""The knowledge-base routes, as route table entries."""

from __future__ import annotations

from chatllm.bridge.errors import UPSTREAM_ERRORS
from chatllm.bridge.knowledge_base import handlers
from chatllm.bridge.knowledge_base.replies import (
    DeletedDocument,
    DeletedKnowledgeBase,
    DocumentList,
    KnowledgeBaseList,
    UploadError,
    UploadResult,
)
from chatllm.bridge.routes import JSON, Json, Raw, Reply, RequestBody, Route

TAG = "knowledge-base"
KB_ERRORS = (400, 404, 413, *UPSTREAM_ERRORS)
UPLOAD_FORM = {
    "type": "object",
    "properties": {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "description": "one or more files: .txt .md .docx .pdf",
        }
    },
    "required": ["file"],
}
ROUTES = (
    Route(
        "GET",
        "/api/kb",
        "kb_list",
        handlers.list_knowledge_bases,
        "listKnowledgeBases",
        TAG,
        "Knowledge bases with their sizes",
        {200: Reply("the knowledge bases", {JSON: Json(KnowledgeBaseList)})},
        UPSTREAM_ERRORS,
    ),
    Route(
        "DELETE",
        "/api/kb/{kb}",
        "kb_delete",
        handlers.delete_knowledge_base,
        "deleteKnowledgeBase",
        TAG,
        "Delete a whole knowledge base",
        {200: Reply("what was deleted", {JSON: Json(DeletedKnowledgeBase)})},
        KB_ERRORS,
    ),
    Route(
        "POST",
        "/api/kb/{kb}/documents",
        "kb_upload",
        handlers.upload_documents,
        "uploadDocuments",
        TAG,
        "Upload documents (multipart fields named `file`); each file is stored whole or not at all",
        {200: Reply("the stored documents", {JSON: Json(UploadResult)})},
        KB_ERRORS,
        error_model=UploadError,
        body=RequestBody({"multipart/form-data": Raw(UPLOAD_FORM)}),
    ),
    Route(
        "GET",
        "/api/kb/{kb}/documents",
        "kb_documents",
        handlers.list_documents,
        "listDocuments",
        TAG,
        "The documents of a knowledge base",
        {200: Reply("the documents", {JSON: Json(DocumentList)})},
        KB_ERRORS,
    ),
    Route(
        "DELETE",
        "/api/kb/{kb}/documents/{id}",
        "kb_delete_document",
        handlers.delete_document,
        "deleteDocument",
        TAG,
        "Delete one document",
        {200: Reply("what was deleted", {JSON: Json(DeletedDocument)})},
        KB_ERRORS,
    ),
)
