"""Every RPC the bridge makes (each with its deadline), on its one channel to the servers (channel.py).

Handlers call these methods, never the stub: the auth to forward and the time limits
live here only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.bridge.channel import upstream_channel
from chatllm.proto import SERVICE_NAME, pb, pb_grpc

MODEL_ID_TTL_S = 60.0
# Deadlines of the calls that do not generate (those take --request-timeout).
QUICK_RPC_S = 10.0  # answered from memory: models, server info, tokenize
LIST_RPC_S = 30.0  # knowledge-base listings read the store
DELETE_RPC_S = 120.0  # deleting a knowledge base rewrites the store
HEALTH_RPC_S = 2.0

Metadata = tuple[tuple[str, str], ...]


class Upstream:
    """Stubs on one channel; each call forwards the `authorization` its handler gives it
    (middleware.upstream_authorization: the token the bridge accepted, or the client's own header
    when the bridge checks none, so a server with tokens still decides)."""

    def __init__(self, target: str, request_timeout: float, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        self.channel = upstream_channel(target, credentials)
        self._stub = pb_grpc.ChatLLMStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout = request_timeout if request_timeout > 0 else None
        self._model_id: tuple[float, str] | None = None

    def metadata(self, authorization: str | None) -> Metadata:
        # gRPC metadata values must be printable ASCII; anything else cannot be a valid token anyway.
        if not authorization or not (authorization.isascii() and authorization.isprintable()):
            return ()
        return (("authorization", authorization),)

    def generate(self, request: pb.GenerateRequest, authorization: str | None) -> grpc.aio.UnaryStreamCall:
        return self._stub.Generate(request, metadata=self.metadata(authorization), timeout=self.timeout)

    def ingest(self, requests: AsyncIterator[pb.IngestRequest], authorization: str | None) -> grpc.aio.StreamUnaryCall:
        """An Ingest call that sends `requests` (the header, then the file's chunks)."""
        return self._stub.Ingest(requests, metadata=self.metadata(authorization), timeout=self.timeout)

    async def list_documents(self, knowledge_base: str, authorization: str | None) -> pb.ListDocumentsResponse:
        request = pb.ListDocumentsRequest(knowledge_base=knowledge_base)
        return await self._stub.ListDocuments(request, metadata=self.metadata(authorization), timeout=LIST_RPC_S)

    async def delete_document(
        self, knowledge_base: str, document_id: str, authorization: str | None
    ) -> pb.DeleteDocumentResponse:
        request = pb.DeleteDocumentRequest(knowledge_base=knowledge_base, document_id=document_id)
        return await self._stub.DeleteDocument(request, metadata=self.metadata(authorization), timeout=DELETE_RPC_S)

    async def list_knowledge_bases(self, authorization: str | None) -> pb.ListKnowledgeBasesResponse:
        request = pb.ListKnowledgeBasesRequest()
        return await self._stub.ListKnowledgeBases(request, metadata=self.metadata(authorization), timeout=LIST_RPC_S)

    async def delete_knowledge_base(
        self, knowledge_base: str, authorization: str | None
    ) -> pb.DeleteKnowledgeBaseResponse:
        request = pb.DeleteKnowledgeBaseRequest(knowledge_base=knowledge_base)
        return await self._stub.DeleteKnowledgeBase(
            request, metadata=self.metadata(authorization), timeout=DELETE_RPC_S
        )

    async def server_info(self, authorization: str | None) -> pb.ServerInfo:
        request = pb.GetServerInfoRequest()
        return await self._stub.GetServerInfo(request, metadata=self.metadata(authorization), timeout=QUICK_RPC_S)

    async def list_models(self, authorization: str | None) -> pb.ListModelsResponse:
        """The served models (base and adapters) and the catalogue."""
        request = pb.ListModelsRequest()
        return await self._stub.ListModels(request, metadata=self.metadata(authorization), timeout=QUICK_RPC_S)

    async def tokenize(self, request: pb.TokenizeRequest, authorization: str | None) -> pb.TokenizeResponse:
        return await self._stub.Tokenize(request, metadata=self.metadata(authorization), timeout=QUICK_RPC_S)

    async def detokenize(self, request: pb.DetokenizeRequest, authorization: str | None) -> pb.DetokenizeResponse:
        return await self._stub.Detokenize(request, metadata=self.metadata(authorization), timeout=QUICK_RPC_S)

    async def embed(self, request: pb.EmbedRequest, authorization: str | None) -> pb.EmbedResponse:
        return await self._stub.Embed(request, metadata=self.metadata(authorization), timeout=self.timeout)

    async def model_id(self, authorization: str | None) -> str:
        """The base model's name (cached for a minute: it only changes when the server restarts)."""
        now = time.monotonic()
        if self._model_id is not None and now - self._model_id[0] < MODEL_ID_TTL_S:
            return self._model_id[1]
        models = (await self.list_models(authorization)).models
        name = models[0].id if models else "unknown"
        self._model_id = (now, name)
        return name

    async def readiness(self) -> tuple[bool, str]:
        """(ready, why) from the server's standard health service."""
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            reply = await self._health.Check(request, timeout=HEALTH_RPC_S)
        except grpc.aio.AioRpcError as exc:
            return False, f"upstream {self.target}: {exc.code().name}: {exc.details()}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return reply.status == health_pb2.HealthCheckResponse.SERVING, f"upstream {self.target}: {status}"

    async def close(self) -> None:
        await self.channel.close()
