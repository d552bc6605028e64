"""Every RPC the bridge makes (each with its deadline), on the replica the picker chooses (routing/),
through that replica's client core (chatllm.clients.core).

Handlers call these methods, never a stub: the auth to forward, the time limits and the routing
live here only. Generate is routed by the request's prefix (routing/replica_set.py) and moved to
another replica while nothing was answered (routing/routed_call.py); calls that carry no prompt
go to the picker's choice for an empty key, with the same retry; Ingest streams the file once, to
one serving replica.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from chatllm.bridge.routing.picker import NoReplicaError, RoutingRules
from chatllm.bridge.routing.replica_set import ReplicaSet
from chatllm.bridge.routing.routed_call import RoutedCall, unary_call
from chatllm.clients.core import ChatLLMCore, LocalGenerate, Metadata, authorization_metadata
from chatllm.proto import pb

MODEL_ID_TTL_S = 60.0
# Deadlines of the calls that do not generate (those take --request-timeout).
QUICK_RPC_S = 10.0  # answered from memory: models, server info, tokenize
LIST_RPC_S = 30.0  # knowledge-base listings read the store
DELETE_RPC_S = 120.0  # deleting a knowledge base rewrites the store

T = TypeVar("T")


class Upstream:
    """The fleet behind the bridge; each call forwards the `authorization` its handler gives it
    (middleware.upstream_authorization: the token the bridge accepted, or the client's own header
    when the bridge checks none, so a server with tokens still decides)."""

    def __init__(
        self,
        target: str,
        request_timeout: float,
        credentials: grpc.ChannelCredentials | None = None,
        rules: RoutingRules | None = None,
        info_authorization: str | None = None,
        local_generate: LocalGenerate | None = None,
    ) -> None:
        """`local_generate`: `target` is the server in this process, whose Generate is called in process."""
        self.target = target
        local = {target: local_generate} if local_generate is not None else None
        # Load reports are polled with the bridge's own token (servers with tokens refuse them otherwise).
        info = self.metadata(info_authorization)
        self.replicas = ReplicaSet(target, rules or RoutingRules(), credentials, info, local=local)
        self.timeout = request_timeout if request_timeout > 0 else None
        self._model_id: tuple[float, str] | None = None

    async def start(self) -> None:
        await self.replicas.start()

    def metadata(self, authorization: str | None) -> Metadata:
        return authorization_metadata(authorization)

    def generate(self, request: pb.GenerateRequest, authorization: str | None) -> RoutedCall:
        return RoutedCall(self.replicas, request, self.metadata(authorization), self.timeout)

    def ingest(self, requests: AsyncIterator[pb.IngestRequest], authorization: str | None) -> grpc.aio.StreamUnaryCall:
        """An Ingest call that sends `requests` (the header, then the file's chunks)."""
        try:
            replica = self.replicas.any_replica()
        except NoReplicaError:  # none serves: let the first one's channel say so, as the other calls do
            replica = next(iter(self.replicas.replicas.values()))
        return replica.core.ingest(requests, self.metadata(authorization), self.timeout)

    async def list_documents(self, knowledge_base: str, authorization: str | None) -> pb.ListDocumentsResponse:
        request = pb.ListDocumentsRequest(knowledge_base=knowledge_base)
        return await self._call(lambda core: core.list_documents(request, self.metadata(authorization), LIST_RPC_S))

    async def delete_document(
        self, knowledge_base: str, document_id: str, authorization: str | None
    ) -> pb.DeleteDocumentResponse:
        request = pb.DeleteDocumentRequest(knowledge_base=knowledge_base, document_id=document_id)
        return await self._call(lambda core: core.delete_document(request, self.metadata(authorization), DELETE_RPC_S))

    async def list_knowledge_bases(self, authorization: str | None) -> pb.ListKnowledgeBasesResponse:
        return await self._call(lambda core: core.list_knowledge_bases(self.metadata(authorization), LIST_RPC_S))

    async def delete_knowledge_base(
        self, knowledge_base: str, authorization: str | None
    ) -> pb.DeleteKnowledgeBaseResponse:
        request = pb.DeleteKnowledgeBaseRequest(knowledge_base=knowledge_base)
        return await self._call(
            lambda core: core.delete_knowledge_base(request, self.metadata(authorization), DELETE_RPC_S)
        )

    async def server_info(self, authorization: str | None) -> pb.ServerInfo:
        return await self._call(lambda core: core.server_info(self.metadata(authorization), QUICK_RPC_S))

    async def list_models(self, authorization: str | None) -> pb.ListModelsResponse:
        """The served models (base and adapters) and the catalogue."""
        return await self._call(lambda core: core.list_models(self.metadata(authorization), QUICK_RPC_S))

    async def tokenize(self, request: pb.TokenizeRequest, authorization: str | None) -> pb.TokenizeResponse:
        return await self._call(lambda core: core.tokenize(request, self.metadata(authorization), QUICK_RPC_S))

    async def detokenize(self, request: pb.DetokenizeRequest, authorization: str | None) -> pb.DetokenizeResponse:
        return await self._call(lambda core: core.detokenize(request, self.metadata(authorization), QUICK_RPC_S))

    async def embed(self, request: pb.EmbedRequest, authorization: str | None) -> pb.EmbedResponse:
        return await self._call(lambda core: core.embed(request, self.metadata(authorization), self.timeout))

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
        """(ready, why): ready while any replica's readiness is SERVING."""
        return self.replicas.readiness()

    async def close(self) -> None:
        await self.replicas.close()

    async def _call(self, rpc: Callable[[ChatLLMCore], Awaitable[T]]) -> T:
        """`rpc` on a replica's core, the picker's choice for calls without a prompt (routed_call.unary_call)."""
        return await unary_call(self.replicas, rpc)
