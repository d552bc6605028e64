"""The knowledge-base HTTP API: multipart upload, listing and deletion, relayed to the gRPC server.

    POST   /api/kb/{kb}/documents        multipart/form-data, one or more `file` fields
    GET    /api/kb/{kb}/documents        the documents of a knowledge base
    DELETE /api/kb/{kb}/documents/{id}   one document
    GET    /api/kb                       the knowledge bases with their sizes
    DELETE /api/kb/{kb}                  a whole knowledge base

Uploads are streamed: each file's bytes go to the server's Ingest call as they
arrive, never held whole in the bridge. A file over --max-upload-bytes is a 413
and its Ingest call is cancelled, so the server stores nothing of it. Files are
ingested one after another and each is atomic; when one fails, the error names
it and the reply also lists the files stored before it. The same token as every
other API route is required (see middleware.require_token). These routes serve
the web page too, so they stay on with --no-api (which turns off the legacy and
OpenAI routes only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from chatllm.bridge import errors
from chatllm.bridge.errors import ApiError
from chatllm.bridge.knowledge_base.replies import (
    DeletedDocument,
    DeletedKnowledgeBase,
    Document,
    DocumentList,
    IngestedDocument,
    KnowledgeBaseList,
    KnowledgeBaseSize,
    UploadError,
    UploadResult,
)
from chatllm.bridge.middleware import upstream_authorization
from chatllm.bridge.routes import JsonReply
from chatllm.bridge.state import CONFIG, UPSTREAM
from chatllm.proto import pb

UPLOAD_CHUNK_BYTES = 256 * 1024
FILE_FIELD = "file"
KB_FIELDS = {
    "knowledge_base": "kb",
    "header.knowledge_base": "kb",
    "header.filename": FILE_FIELD,
    "filename": FILE_FIELD,
    "chunk": FILE_FIELD,
    "document_id": "id",
}


def client_field(server_field: str) -> str:
    """A field named by the server as this API's clients know it (the path's kb and id, the form's file)."""
    return KB_FIELDS.get(server_field, server_field)


def _authorization(request: web.Request) -> str | None:
    return upstream_authorization(request)


def ingested_reply(filename: str, response: pb.IngestResponse) -> IngestedDocument:
    return IngestedDocument(
        filename=filename,
        document_id=response.document_id,
        chunks=response.chunks,
        unchanged=response.unchanged,
        replaced_document_ids=list(response.replaced_document_ids),
        characters=response.characters,
    )


def too_large(filename: str, limit: int) -> ApiError:
    return ApiError(
        413,
        f"{FILE_FIELD}: {filename}: larger than the {limit}-byte upload limit (--max-upload-bytes)",
        "request_too_large",
        param=FILE_FIELD,
        code="file_too_large",
    )


@contextlib.contextmanager
def multipart_errors() -> Iterator[None]:
    """aiohttp's multipart parser raises ValueError / HttpProcessingError on a broken body
    (no boundary, a bad part header, a body cut short): the client's fault, a 400."""
    try:
        yield
    except (ValueError, HttpProcessingError) as exc:
        reason = str(exc).replace("\n", " ")[:200]
        raise errors.bad_request(
            FILE_FIELD, f"malformed multipart/form-data body: {reason}", code="invalid_multipart"
        ) from None


def utf8_header(value: str, what: str) -> str:
    """aiohttp decodes header bytes that are not UTF-8 as surrogates, which protobuf cannot send."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.bad_request(FILE_FIELD, f"the part's {what} is not valid UTF-8", code="invalid_encoding") from None
    return value


def rpc_error(exc: grpc.aio.AioRpcError) -> ApiError:
    return errors.from_rpc(exc, client_field)


async def upload_documents(request: web.Request) -> UploadResult | JsonReply:
    knowledge_base = request.match_info["kb"]
    if not request.content_type.startswith("multipart/"):
        raise errors.bad_request(FILE_FIELD, "send the documents as multipart/form-data in fields named 'file'")
    stored: list[IngestedDocument] = []
    try:
        with multipart_errors():
            reader = await request.multipart()
        while True:
            with multipart_errors():
                part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or part.name != FILE_FIELD:
                continue  # other form fields are not ours to judge
            filename = utf8_header(part.filename or "", "filename")
            response = await _ingest_part(request, knowledge_base, filename, part)
            stored.append(ingested_reply(filename, response))
    except ApiError as err:
        body = UploadError.model_validate({**err.body(), "documents": stored})
        return JsonReply(body, status=err.status, headers=err.reply_headers())
    if not stored:
        raise errors.bad_request(FILE_FIELD, "no file in the upload (multipart field 'file' with a filename)")
    return UploadResult(knowledge_base=knowledge_base, documents=stored)


async def _ingest_part(
    request: web.Request, knowledge_base: str, filename: str, part: BodyPartReader
) -> pb.IngestResponse:
    """Relay one file part to Ingest as it arrives; cancel the call when it grows past the limit.

    The bytes go as the call's request iterator, not through call.write(): when the server ends
    the call while a write is in flight (its own --max-upload-bytes is smaller, say), grpc.aio's
    write reports a bare INTERNAL "Internal error from Core" and the server's own status can be
    lost; the iterator path stops writing and keeps the server's status.
    """
    upstream = request.app[UPSTREAM]
    limit = request.app[CONFIG].limits.max_upload_bytes
    mime_type = utf8_header(part.headers.get("Content-Type", ""), "Content-Type")
    header = pb.IngestHeader(knowledge_base=knowledge_base, filename=filename, mime_type=mime_type)
    refused: list[Exception] = []  # why the bridge itself stopped reading the part (grpc cancels the call)

    async def file_requests() -> AsyncIterator[pb.IngestRequest]:
        yield pb.IngestRequest(header=header)
        size = 0
        try:
            while True:
                with multipart_errors():
                    block = await part.read_chunk(UPLOAD_CHUNK_BYTES)
                if not block:
                    if not part.at_eof():  # the body ended before this part's boundary: the file is cut short
                        raise errors.bad_request(
                            FILE_FIELD, f"{filename}: the upload ended before the file did", code="invalid_multipart"
                        )
                    return
                size += len(block)
                if size > limit:
                    raise too_large(filename, limit)
                yield pb.IngestRequest(chunk=block)
        except Exception as exc:
            refused.append(exc)
            raise  # grpc.aio cancels the call, so the server drops the half-sent file

    call = upstream.ingest(file_requests(), _authorization(request))
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if refused:
            raise refused[0] from None
        raise rpc_error(exc) from None
    except asyncio.CancelledError:
        if refused:  # the call was cancelled because of the bridge's own refusal, not this handler
            raise refused[0] from None
        raise
    finally:
        call.cancel()  # no-op when finished; otherwise the server drops the half-sent file


async def list_documents(request: web.Request) -> DocumentList:
    knowledge_base = request.match_info["kb"]
    call = request.app[UPSTREAM].list_documents(knowledge_base, _authorization(request))
    reply = await errors.rpc_reply(call, client_field)
    documents = [Document.model_validate(document, from_attributes=True) for document in reply.documents]
    return DocumentList(knowledge_base=knowledge_base, documents=documents)


async def delete_document(request: web.Request) -> DeletedDocument:
    knowledge_base, document_id = request.match_info["kb"], request.match_info["id"]
    call = request.app[UPSTREAM].delete_document(knowledge_base, document_id, _authorization(request))
    reply = await errors.rpc_reply(call, client_field)
    return DeletedDocument(knowledge_base=knowledge_base, deleted=document_id, chunks_deleted=reply.chunks_deleted)


async def list_knowledge_bases(request: web.Request) -> KnowledgeBaseList:
    reply = await errors.rpc_reply(request.app[UPSTREAM].list_knowledge_bases(_authorization(request)), client_field)
    sizes = [KnowledgeBaseSize(name=k.name, documents=k.documents, chunks=k.chunks) for k in reply.knowledge_bases]
    return KnowledgeBaseList(knowledge_bases=sizes)


async def delete_knowledge_base(request: web.Request) -> DeletedKnowledgeBase:
    knowledge_base = request.match_info["kb"]
    reply = await errors.rpc_reply(
        request.app[UPSTREAM].delete_knowledge_base(knowledge_base, _authorization(request)), client_field
    )
    return DeletedKnowledgeBase(knowledge_base=knowledge_base, documents_deleted=reply.documents_deleted)
