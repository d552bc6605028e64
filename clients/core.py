"""The one gRPC client core: every RPC of `chatllm.v1.ChatLLM` and the standard health check on one
grpc.aio channel, each call with the metadata it sends (`authorization`) and its deadline.

Everything that talks to a server uses it: AsyncChatClient (the core behind a friendlier surface),
ChatClient (the same, run on a background event loop: a thin blocking facade) and the bridge, which
keeps one core (one channel) per replica (chatllm.bridge.routing) and calls it from its upstream
with per-call deadlines and each client's `authorization`, and from its gRPC front door as bytes
(`passthrough`). A core may take its Generate calls from an in-process server instead of the channel
(`local_generate`: `chatllm serve`, whose bridge and server share one process); everything else still
goes over the channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.kernel.tls import channel_credentials
from chatllm.proto import SERVICE_NAME, pb, pb_grpc

Metadata = tuple[tuple[str, str | bytes], ...]  # gRPC metadata: `-bin` keys carry bytes
PathLike = str | Path


class StreamCall(Protocol):
    """A Generate call as its reader sees it (grpc.aio.UnaryStreamCall, or an in-process call)."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    def cancel(self) -> bool: ...


class LocalGenerate(Protocol):
    """Generate served in this process: (request, metadata, timeout) -> a call with gRPC's semantics
    (AioRpcError on failure, `cancel()`, the deadline), as chatllm.server.local_generate makes them."""

    def __call__(self, request: pb.GenerateRequest, metadata: Metadata = (), timeout: float | None = None) -> Any: ...


def authorization_metadata(authorization: str | None) -> Metadata:
    """The call's `authorization` metadata; none for a value gRPC cannot send (metadata is printable
    ASCII, which any real token is)."""
    if not authorization or not (authorization.isascii() and authorization.isprintable()):
        return ()
    return (("authorization", authorization),)


def credentials(
    tls: bool = False, tls_ca: PathLike | None = None, tls_cert: PathLike | None = None, tls_key: PathLike | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials when any TLS option is given (None: plaintext). Raises CertificateError for a bad file."""
    if not (tls or tls_ca or tls_cert or tls_key):
        return None
    return channel_credentials(tls_ca, tls_cert, tls_key)


def open_channel(
    target: str, secure: grpc.ChannelCredentials | None = None, options: Iterable[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: TLS when `secure` is given, else plaintext."""
    if secure is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, secure, options=list(options))


class ChatLLMCore:
    """The ChatLLM service and its health check on one channel. Each method is one RPC with the call's
    `metadata` (authorization_metadata(token)) and `timeout`, its deadline in seconds (None: none)."""

    def __init__(
        self, channel: grpc.aio.Channel, target: str = "", local_generate: LocalGenerate | None = None
    ) -> None:
        self.channel = channel
        self.target = target
        self.stub = pb_grpc.ChatLLMStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._local_generate = local_generate

    def generate(
        self, request: pb.GenerateRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> StreamCall:
        """The Generate call: iterate it for GenerateResponse messages; `cancel()` aborts the answer."""
        if self._local_generate is not None:
            return self._local_generate(request, metadata, timeout)  # type: ignore[no-any-return]
        return self.stub.Generate(request, metadata=metadata, timeout=timeout)

    def ingest(
        self,
        requests: AsyncIterable[pb.IngestRequest] | Iterable[pb.IngestRequest],
        metadata: Metadata = (),
        timeout: float | None = None,
    ) -> grpc.aio.StreamUnaryCall:
        """The Ingest call that sends `requests` (the header, then the file's chunks); await it for the reply."""
        return self.stub.Ingest(requests, metadata=metadata, timeout=timeout)

    async def retrieve(
        self, request: pb.RetrieveRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.RetrieveResponse:
        return await self.stub.Retrieve(request, metadata=metadata, timeout=timeout)

    async def list_documents(
        self, request: pb.ListDocumentsRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.ListDocumentsResponse:
        return await self.stub.ListDocuments(request, metadata=metadata, timeout=timeout)

    async def delete_document(
        self, request: pb.DeleteDocumentRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.DeleteDocumentResponse:
        return await self.stub.DeleteDocument(request, metadata=metadata, timeout=timeout)

    async def list_knowledge_bases(
        self, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.ListKnowledgeBasesResponse:
        request = pb.ListKnowledgeBasesRequest()
        return await self.stub.ListKnowledgeBases(request, metadata=metadata, timeout=timeout)

    async def delete_knowledge_base(
        self, request: pb.DeleteKnowledgeBaseRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.DeleteKnowledgeBaseResponse:
        return await self.stub.DeleteKnowledgeBase(request, metadata=metadata, timeout=timeout)

    async def list_models(self, metadata: Metadata = (), timeout: float | None = None) -> pb.ListModelsResponse:
        """The served models (base and adapters) and the catalogue."""
        request = pb.ListModelsRequest()
        return await self.stub.ListModels(request, metadata=metadata, timeout=timeout)

    async def server_info(self, metadata: Metadata = (), timeout: float | None = None) -> pb.ServerInfo:
        request = pb.GetServerInfoRequest()
        return await self.stub.GetServerInfo(request, metadata=metadata, timeout=timeout)

    async def tokenize(
        self, request: pb.TokenizeRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.TokenizeResponse:
        return await self.stub.Tokenize(request, metadata=metadata, timeout=timeout)

    async def detokenize(
        self, request: pb.DetokenizeRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.DetokenizeResponse:
        return await self.stub.Detokenize(request, metadata=metadata, timeout=timeout)

    async def embed(
        self, request: pb.EmbedRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.EmbedResponse:
        return await self.stub.Embed(request, metadata=metadata, timeout=timeout)

    async def usage(
        self, request: pb.GetUsageRequest, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.GetUsageResponse:
        return await self.stub.GetUsage(request, metadata=metadata, timeout=timeout)

    async def health(self, service: str = SERVICE_NAME, timeout: float | None = None) -> int:
        """The standard health service's status of `service` (`chatllm.v1.ChatLLM`: readiness), a
        HealthCheckResponse.ServingStatus."""
        reply = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return reply.status

    def watch_health(self, service: str = SERVICE_NAME) -> grpc.aio.UnaryStreamCall:
        """The health service's Watch of `service`: a status now, then one on every change."""
        return self._health.Watch(health_pb2.HealthCheckRequest(service=service))

    def passthrough(
        self, path: str, kind: Literal["unary_unary", "unary_stream", "stream_unary"]
    ) -> grpc.aio.UnaryUnaryMultiCallable | grpc.aio.UnaryStreamMultiCallable | grpc.aio.StreamUnaryMultiCallable:
        """The method at `path` (`/chatllm.v1.ChatLLM/Name`) without (de)serializers: messages go out and
        come back as bytes, for a proxy that passes them on undecoded (the bridge's gRPC front door)."""
        return getattr(self.channel, kind)(path)

    async def close(self) -> None:
        """Close the channel (cancels calls in flight)."""
        await self.channel.close()
