"""The gRPC servicer: protobuf in, services, protobuf out. What every call needs besides (the token,
malformed bytes, metrics, errors as statuses) is done by the interceptors (chatllm.server.interceptors),
so each method is the answer alone."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc

from chatllm.kernel.access import ANONYMOUS_CALLER, Caller, TokenRegistry
from chatllm.kernel.state.usage import UsageLedger
from chatllm.proto import pb, pb_grpc
from chatllm.server import catalog, metrics
from chatllm.server.admission import Admission
from chatllm.server.embeddings import EmbeddingService
from chatllm.server.engines.base import Engine
from chatllm.server.errors import (
    NotReady,
    PermissionDenied,
    Reason,
    Unauthenticated,
)
from chatllm.server.generation import GenerateService
from chatllm.server.models import ServedModels
from chatllm.server.tokenization import TokenizationService
from chatllm.server.usage import usage_report


class KnowledgeRPCs(Protocol):
    """What the knowledge base offers the servicer (see chatllm.server.knowledge)."""

    async def ingest(self, requests: AsyncIterator[pb.IngestRequest]) -> pb.IngestResponse: ...
    async def retrieve(self, request: pb.RetrieveRequest) -> pb.RetrieveResponse: ...
    async def list_documents(self, request: pb.ListDocumentsRequest) -> pb.ListDocumentsResponse: ...
    async def delete_document(self, request: pb.DeleteDocumentRequest) -> pb.DeleteDocumentResponse: ...
    async def list_knowledge_bases(self) -> pb.ListKnowledgeBasesResponse: ...
    async def delete_knowledge_base(self, request: pb.DeleteKnowledgeBaseRequest) -> pb.DeleteKnowledgeBaseResponse: ...


class ServerState:
    """Everything the RPCs need; filled in as start-up progresses (engine last)."""

    def __init__(self, admission: Admission, auth_required: bool, version: str) -> None:
        self.started = time.monotonic()
        self.admission = admission
        self.auth_required = auth_required
        self.access = TokenRegistry()  # the accepted tokens (the auth interceptor refused any other)
        self.version = version
        self.engine: Engine | None = None
        self.models: ServedModels | None = None
        self.generate: GenerateService | None = None
        self.tokens: TokenizationService | None = None
        self.knowledge: KnowledgeRPCs | None = None
        self.embeddings: EmbeddingService | None = None
        self.usage: UsageLedger | None = None  # the state store's usage (GetUsage)


def server_info(state: ServerState) -> pb.ServerInfo:
    """Load, limits and cache figures (GetServerInfo, and the HTTP side's /load and /v1/loads)."""
    admission = state.admission
    stats = state.engine.stats() if state.engine is not None else None
    return pb.ServerInfo(
        active_requests=stats.running if stats else 0,
        waiting_requests=admission.waiting + (stats.waiting if stats else 0),
        uptime_seconds=time.monotonic() - state.started,
        version=state.version,
        model=state.models.base if state.models is not None else None,
        draining=admission.draining,
        kv_cache_usage=stats.kv_cache_usage if stats else 0.0,
        max_concurrent=admission.max_concurrent,
        max_queue=admission.max_queue,
        knowledge_base_enabled=state.knowledge is not None,
        auth_required=state.auth_required,
        kv_cache_tokens=stats.kv_cache_tokens if stats else 0,
        prompt_tokens=metrics.PROMPTS.prompt_tokens,
        cached_prompt_tokens=metrics.PROMPTS.cached_prompt_tokens,
    )


class ChatLLMServicer(pb_grpc.ChatLLMServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """Whose token the call carries (the interceptor already refused calls without an accepted one)."""
        access = self.state.access
        if not access.required:
            return ANONYMOUS_CALLER
        metadata = dict(context.invocation_metadata() or ())
        caller = access.identify(metadata.get("authorization"))
        if caller is None:  # removed from the token file since the interceptor looked
            raise Unauthenticated("missing or wrong authorization token (metadata 'authorization: <token>')")
        return caller

    def _generate_service(self) -> GenerateService:
        if self.state.generate is None:
            raise NotReady("the model is still loading; retry shortly", Reason.LOADING)
        return self.state.generate

    def _tokens(self) -> TokenizationService:
        if self.state.tokens is None:
            raise NotReady("the model is still loading; retry shortly", Reason.LOADING)
        return self.state.tokens

    def _embeddings(self) -> EmbeddingService:
        if self.state.embeddings is None:
            raise NotReady("embeddings come from the knowledge base, which is off here", Reason.KNOWLEDGE_BASE_DISABLED)
        return self.state.embeddings

    def _knowledge(self) -> KnowledgeRPCs:
        if self.state.knowledge is None:
            raise NotReady("the knowledge base is not enabled on this server", Reason.KNOWLEDGE_BASE_DISABLED)
        return self.state.knowledge

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        async with contextlib.aclosing(self._generate_service().stream(request, self.caller(context))) as responses:
            async for response in responses:
                yield response

    async def Ingest(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> pb.IngestResponse:
        return await self._knowledge().ingest(request_iterator)

    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext) -> pb.RetrieveResponse:
        return await self._knowledge().retrieve(request)

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDocumentsResponse:
        return await self._knowledge().list_documents(request)

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        return await self._knowledge().delete_document(request)

    async def ListKnowledgeBases(
        self, request: pb.ListKnowledgeBasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListKnowledgeBasesResponse:
        return await self._knowledge().list_knowledge_bases()

    async def DeleteKnowledgeBase(
        self, request: pb.DeleteKnowledgeBaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteKnowledgeBaseResponse:
        return await self._knowledge().delete_knowledge_base(request)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        models = self.state.models.all() if self.state.models is not None else []
        reply = pb.ListModelsResponse(models=models, catalog=catalog.catalog_pb())
        if self.state.embeddings is not None:
            reply.embedding_model = self.state.embeddings.name
            reply.embedding_dimensions = self.state.embeddings.dimension
        return reply

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        return self._tokens().tokenize(request)

    async def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetokenizeResponse:
        return self._tokens().detokenize(request)

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        return await self._embeddings().embed(request)

    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext) -> pb.GetUsageResponse:
        if self.state.access.required and not self.caller(context).admin:
            raise PermissionDenied("usage is for tokens marked `admin` in the token file")
        if self.state.usage is None:
            raise NotReady("the server is still starting; retry shortly", Reason.LOADING)
        return await usage_report(self.state.usage, request)

    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext) -> pb.ServerInfo:
        return server_info(self.state)
