"""Python clients of the gRPC API: `AsyncChatClient` (grpc.aio) and `ChatClient` (blocking).

async with AsyncChatClient("localhost:50051") as client:
    async for delta in client.generate("Hello"):
        print(delta, end="")

with ChatClient("localhost:50051") as client:
    print(client.chat("Hello").text)

A server with --tls-cert: pass `tls_ca` (the CA that signed its certificate; or `tls=True` to trust
the system's root CAs), and for one with --tls-client-ca also `tls_cert` and `tls_key`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.clients.wire import ChatResult, _ingest_messages, _metadata, _result, build_request
from chatllm.kernel.tls import channel_credentials
from chatllm.proto import SERVICE_NAME, pb, pb_grpc

__all__ = ["AsyncChatClient", "ChatClient", "ChatResult", "build_request"]
CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin")]
PathLike = str | Path


def credentials(
    tls: bool = False, tls_ca: PathLike | None = None, tls_cert: PathLike | None = None, tls_key: PathLike | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials when any TLS option is given (None: plaintext). Raises CertificateError for a bad file."""
    if not (tls or tls_ca or tls_cert or tls_key):
        return None
    return channel_credentials(tls_ca, tls_cert, tls_key)


def _open_channel(api: Any, target: str, secure: grpc.ChannelCredentials | None) -> Any:
    """A channel from `api` (grpc or grpc.aio, which name their constructors alike): TLS when
    `secure` is given, else plaintext."""
    if secure is None:
        return api.insecure_channel(target, options=CHANNEL_OPTIONS)
    return api.secure_channel(target, secure, options=CHANNEL_OPTIONS)


class AsyncChatClient:
    """asyncio client. `target` is host:port (or any gRPC target such as dns:///name:port); TLS options
    as in the module docstring."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: str | None = None,
        timeout: float | None = None,
        tls: bool = False,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
    ) -> None:
        self.channel: grpc.aio.Channel = _open_channel(grpc.aio, target, credentials(tls, tls_ca, tls_cert, tls_key))
        self.stub = pb_grpc.ChatLLMStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._metadata = _metadata(token)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (cancels calls in flight)."""
        await self.channel.close()

    def stream(self, prompt: str = "", **kwargs: Any) -> grpc.aio.UnaryStreamCall:
        """The raw Generate call: iterate it for GenerateResponse messages; `.cancel()` aborts."""
        timeout = kwargs.pop("timeout", self.timeout)
        return self.stub.Generate(build_request(prompt, **kwargs), metadata=self._metadata, timeout=timeout)

    async def generate(self, prompt: str, **kwargs: Any) -> AsyncIterator[str]:
        """Yield the answer's text deltas as they arrive (kwargs as in `build_request`)."""
        call = self.stream(prompt, **kwargs)
        try:
            async for response in call:
                if response.text:
                    yield response.text
        finally:
            call.cancel()

    async def chat(self, prompt: str = "", **kwargs: Any) -> ChatResult:
        """The whole answer with finish reason, usage, timings and sources."""
        responses = [r async for r in self.stream(prompt, **kwargs)]
        return _result(responses)

    async def ingest(
        self,
        path: str | Path | None = None,
        *,
        data: bytes | None = None,
        filename: str | None = None,
        knowledge_base: str = "default",
        mime_type: str = "",
    ) -> pb.IngestResponse:
        """Add a document (a file path, or `data` + `filename`) to a knowledge base."""
        if path is not None:
            data = await asyncio.to_thread(Path(path).read_bytes)  # a big file must not stall the loop
            filename = filename or Path(path).name
        if data is None or not filename:
            raise ValueError("ingest needs a path, or data and filename")
        messages = _ingest_messages(data, filename, knowledge_base, mime_type)
        return await self.stub.Ingest(messages, metadata=self._metadata, timeout=self.timeout)

    async def retrieve(self, query: str, knowledge_base: str = "default", top_k: int = 0) -> list[pb.Source]:
        """The chunks closest to `query`, best first."""
        request = pb.RetrieveRequest(query=query, knowledge_base=knowledge_base, top_k=top_k)
        response = await self.stub.Retrieve(request, metadata=self._metadata, timeout=self.timeout)
        return list(response.sources)

    async def list_documents(self, knowledge_base: str = "default") -> list[pb.Document]:
        """Documents stored in a knowledge base."""
        request = pb.ListDocumentsRequest(knowledge_base=knowledge_base)
        return list((await self.stub.ListDocuments(request, metadata=self._metadata, timeout=self.timeout)).documents)

    async def delete_document(self, document_id: str, knowledge_base: str = "default") -> int:
        """Delete a document; returns the number of chunks removed."""
        request = pb.DeleteDocumentRequest(knowledge_base=knowledge_base, document_id=document_id)
        response = await self.stub.DeleteDocument(request, metadata=self._metadata, timeout=self.timeout)
        return response.chunks_deleted

    async def list_knowledge_bases(self) -> list[pb.KnowledgeBase]:
        """All knowledge bases with document and chunk counts."""
        request = pb.ListKnowledgeBasesRequest()
        response = await self.stub.ListKnowledgeBases(request, metadata=self._metadata, timeout=self.timeout)
        return list(response.knowledge_bases)

    async def delete_knowledge_base(self, knowledge_base: str) -> int:
        """Delete a knowledge base; returns the number of documents removed."""
        request = pb.DeleteKnowledgeBaseRequest(knowledge_base=knowledge_base)
        response = await self.stub.DeleteKnowledgeBase(request, metadata=self._metadata, timeout=self.timeout)
        return response.documents_deleted

    async def models(self) -> pb.ListModelsResponse:
        """The served model and the catalogue of known models."""
        return await self.stub.ListModels(pb.ListModelsRequest(), metadata=self._metadata, timeout=self.timeout)

    async def server_info(self) -> pb.ServerInfo:
        """Load, uptime and model of the server."""
        return await self.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=self._metadata, timeout=self.timeout)

    async def usage(self, start: str = "", end: str = "", token: str = "") -> pb.GetUsageResponse:
        """Tokens used per token name, model and UTC day (YYYY-MM-DD bounds, both included; an admin token)."""
        request = pb.GetUsageRequest(start=start, end=end, token=token)
        return await self.stub.GetUsage(request, metadata=self._metadata, timeout=self.timeout)

    async def ready(self) -> bool:
        """True when the readiness health check says SERVING."""
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        except grpc.aio.AioRpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING


class ChatClient:
    """Blocking client with the same methods as AsyncChatClient."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: str | None = None,
        timeout: float | None = None,
        tls: bool = False,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
    ) -> None:
        self.channel: grpc.Channel = _open_channel(grpc, target, credentials(tls, tls_ca, tls_cert, tls_key))
        self.stub = pb_grpc.ChatLLMStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._metadata = _metadata(token)
        self.timeout = timeout

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def stream(self, prompt: str = "", **kwargs: Any) -> Any:
        """The raw Generate call: iterate for GenerateResponse messages; `.cancel()` aborts."""
        timeout = kwargs.pop("timeout", self.timeout)
        return self.stub.Generate(build_request(prompt, **kwargs), metadata=self._metadata, timeout=timeout)

    def generate(self, prompt: str, **kwargs: Any) -> Iterator[str]:
        """Yield the answer's text deltas as they arrive."""
        call = self.stream(prompt, **kwargs)
        try:
            for response in call:
                if response.text:
                    yield response.text
        finally:
            call.cancel()

    def chat(self, prompt: str = "", **kwargs: Any) -> ChatResult:
        """The whole answer with finish reason, usage, timings and sources."""
        return _result(self.stream(prompt, **kwargs))

    def ingest(
        self,
        path: str | Path | None = None,
        *,
        data: bytes | None = None,
        filename: str | None = None,
        knowledge_base: str = "default",
        mime_type: str = "",
    ) -> pb.IngestResponse:
        """Add a document (a file path, or `data` + `filename`) to a knowledge base."""
        if path is not None:
            data = Path(path).read_bytes()
            filename = filename or Path(path).name
        if data is None or not filename:
            raise ValueError("ingest needs a path, or data and filename")
        messages = _ingest_messages(data, filename, knowledge_base, mime_type)
        return self.stub.Ingest(messages, metadata=self._metadata, timeout=self.timeout)

    def retrieve(self, query: str, knowledge_base: str = "default", top_k: int = 0) -> list[pb.Source]:
        """The chunks closest to `query`, best first."""
        request = pb.RetrieveRequest(query=query, knowledge_base=knowledge_base, top_k=top_k)
        return list(self.stub.Retrieve(request, metadata=self._metadata, timeout=self.timeout).sources)

    def list_documents(self, knowledge_base: str = "default") -> list[pb.Document]:
        """Documents stored in a knowledge base."""
        request = pb.ListDocumentsRequest(knowledge_base=knowledge_base)
        return list(self.stub.ListDocuments(request, metadata=self._metadata, timeout=self.timeout).documents)

    def delete_document(self, document_id: str, knowledge_base: str = "default") -> int:
        """Delete a document; returns the number of chunks removed."""
        request = pb.DeleteDocumentRequest(knowledge_base=knowledge_base, document_id=document_id)
        return self.stub.DeleteDocument(request, metadata=self._metadata, timeout=self.timeout).chunks_deleted

    def list_knowledge_bases(self) -> list[pb.KnowledgeBase]:
        """All knowledge bases with document and chunk counts."""
        request = pb.ListKnowledgeBasesRequest()
        return list(
            self.stub.ListKnowledgeBases(request, metadata=self._metadata, timeout=self.timeout).knowledge_bases
        )

    def delete_knowledge_base(self, knowledge_base: str) -> int:
        """Delete a knowledge base; returns the number of documents removed."""
        request = pb.DeleteKnowledgeBaseRequest(knowledge_base=knowledge_base)
        return self.stub.DeleteKnowledgeBase(request, metadata=self._metadata, timeout=self.timeout).documents_deleted

    def models(self) -> pb.ListModelsResponse:
        """The served model and the catalogue of known models."""
        return self.stub.ListModels(pb.ListModelsRequest(), metadata=self._metadata, timeout=self.timeout)

    def server_info(self) -> pb.ServerInfo:
        """Load, uptime and model of the server."""
        return self.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=self._metadata, timeout=self.timeout)

    def usage(self, start: str = "", end: str = "", token: str = "") -> pb.GetUsageResponse:
        """Tokens used per token name, model and UTC day (YYYY-MM-DD bounds, both included; an admin token)."""
        request = pb.GetUsageRequest(start=start, end=end, token=token)
        return self.stub.GetUsage(request, metadata=self._metadata, timeout=self.timeout)

    def ready(self) -> bool:
        """True when the readiness health check says SERVING."""
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        except grpc.RpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING
