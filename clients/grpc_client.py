"""Python clients of the gRPC API: `AsyncChatClient` (asyncio) and `ChatClient` (blocking), both on the
one client core (core.py): the blocking client runs the async one on a private event loop.

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
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, TypedDict, cast

import grpc
from grpc_health.v1 import health_pb2
from typing_extensions import Unpack

from chatllm.clients.core import ChatLLMCore, PathLike, authorization_metadata, credentials, open_channel
from chatllm.clients.wire import ChatResult, _ingest_messages, _result, build_request
from chatllm.proto import pb

CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin")]
READY_TIMEOUT_S = 5.0


class ClientOptions(TypedDict, total=False):
    """How a client reaches its server: `token` goes with every call, `timeout` is each call's deadline
    (seconds), the TLS options as in the module docstring."""

    token: str | None
    timeout: float | None
    tls: bool
    tls_ca: PathLike | None
    tls_cert: PathLike | None
    tls_key: PathLike | None


class AsyncChatClient:
    """asyncio client. `target` is host:port (or any gRPC target such as dns:///name:port); the options
    are ClientOptions' (token, timeout, tls, tls_ca, tls_cert, tls_key)."""

    def __init__(self, target: str = "localhost:50051", **options: Unpack[ClientOptions]) -> None:
        secure = credentials(
            options.get("tls", False), options.get("tls_ca"), options.get("tls_cert"), options.get("tls_key")
        )
        self.core = ChatLLMCore(open_channel(target, secure, CHANNEL_OPTIONS), target)
        self.metadata = authorization_metadata(options.get("token"))
        self.timeout = options.get("timeout")

    @property
    def channel(self) -> grpc.aio.Channel:
        """The gRPC channel (for raw calls)."""
        return self.core.channel

    @property
    def stub(self) -> Any:
        """The generated ChatLLM stub on the channel (for raw calls)."""
        return self.core.stub

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (cancels calls in flight)."""
        await self.core.close()

    def stream(self, prompt: str = "", **kwargs: Any) -> grpc.aio.UnaryStreamCall:
        """The raw Generate call: iterate it for GenerateResponse messages; `.cancel()` aborts."""
        timeout = kwargs.pop("timeout", self.timeout)
        call = self.core.generate(build_request(prompt, **kwargs), self.metadata, timeout)
        return cast(grpc.aio.UnaryStreamCall, call)  # a client's own channel: always a gRPC call

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
        return _result([r async for r in self.stream(prompt, **kwargs)])

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
        return await self.ingest_messages(_ingest_messages(data, filename, knowledge_base, mime_type))

    async def ingest_messages(self, messages: Iterable[pb.IngestRequest]) -> pb.IngestResponse:
        """Ingest from your own messages: an IngestRequest with the header, then ones with the file's bytes."""
        return await self.core.ingest(messages, self.metadata, self.timeout)

    async def retrieve(self, query: str, knowledge_base: str = "default", top_k: int = 0) -> list[pb.Source]:
        """The chunks closest to `query`, best first."""
        request = pb.RetrieveRequest(query=query, knowledge_base=knowledge_base, top_k=top_k)
        return list((await self.core.retrieve(request, self.metadata, self.timeout)).sources)

    async def list_documents(self, knowledge_base: str = "default") -> list[pb.Document]:
        """Documents stored in a knowledge base."""
        request = pb.ListDocumentsRequest(knowledge_base=knowledge_base)
        return list((await self.core.list_documents(request, self.metadata, self.timeout)).documents)

    async def delete_document(self, document_id: str, knowledge_base: str = "default") -> int:
        """Delete a document; returns the number of chunks removed."""
        request = pb.DeleteDocumentRequest(knowledge_base=knowledge_base, document_id=document_id)
        return (await self.core.delete_document(request, self.metadata, self.timeout)).chunks_deleted

    async def list_knowledge_bases(self) -> list[pb.KnowledgeBase]:
        """All knowledge bases with document and chunk counts."""
        return list((await self.core.list_knowledge_bases(self.metadata, self.timeout)).knowledge_bases)

    async def delete_knowledge_base(self, knowledge_base: str) -> int:
        """Delete a knowledge base; returns the number of documents removed."""
        request = pb.DeleteKnowledgeBaseRequest(knowledge_base=knowledge_base)
        return (await self.core.delete_knowledge_base(request, self.metadata, self.timeout)).documents_deleted

    async def models(self) -> pb.ListModelsResponse:
        """The served model and the catalogue of known models."""
        return await self.core.list_models(self.metadata, self.timeout)

    async def server_info(self) -> pb.ServerInfo:
        """Load, uptime and model of the server."""
        return await self.core.server_info(self.metadata, self.timeout)

    async def usage(self, start: str = "", end: str = "", token: str = "") -> pb.GetUsageResponse:
        """Tokens used per token name, model and UTC day (YYYY-MM-DD bounds, both included; an admin token)."""
        request = pb.GetUsageRequest(start=start, end=end, token=token)
        return await self.core.usage(request, self.metadata, self.timeout)

    async def ready(self) -> bool:
        """True when the readiness health check says SERVING."""
        try:
            status = await self.core.health(timeout=READY_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING
