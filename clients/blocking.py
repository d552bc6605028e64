"""`ChatClient`: the blocking facade of AsyncChatClient. It runs one AsyncChatClient (and so the client
core) on a private event loop in a daemon thread and waits for each call, so both clients behave alike;
a failed call raises the same grpc.RpcError (grpc.aio.AioRpcError)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from chatllm.clients.grpc_client import AsyncChatClient
from chatllm.clients.wire import ChatResult
from chatllm.proto import pb

Metadata = grpc.aio.Metadata

T = TypeVar("T")


class BlockingCall:
    """A Generate call for a thread: iterate it for GenerateResponse messages; `cancel()` aborts the answer."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, client: ChatClient) -> None:
        self._call = call
        self._client = client

    def __iter__(self) -> Iterator[pb.GenerateResponse]:
        return self

    def __next__(self) -> pb.GenerateResponse:
        response = self._client.wait(_read(self._call))
        if response is grpc.aio.EOF:
            raise StopIteration
        return response

    def cancel(self) -> None:
        """Abort the call (the server aborts the answer)."""
        self._client.loop.call_soon_threadsafe(self._call.cancel)


class ChatClient:
    """Blocking client with the same methods as AsyncChatClient; `options` are its ClientOptions (token,
    timeout, tls, tls_ca, tls_cert, tls_key)."""

    def __init__(self, target: str = "localhost:50051", **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chatllm-client", daemon=True)
        self._thread.start()
        try:
            self.client = self.wait(_open(target, options))
        except BaseException:
            self._stop_loop()
            raise

    def wait(self, work: Awaitable[T]) -> T:
        """Run `work` on the client's event loop and wait for its result."""

        async def run() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the client's event loop."""
        if self.loop.is_closed():
            return
        try:
            self.wait(self.client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def stream(self, prompt: str = "", **kwargs: Any) -> BlockingCall:
        """The raw Generate call: iterate it for GenerateResponse messages; `.cancel()` aborts."""
        return BlockingCall(self.wait(_started(self.client, prompt, kwargs)), self)

    def generate(self, prompt: str, **kwargs: Any) -> Iterator[str]:
        """Yield the answer's text deltas as they arrive."""
        call = self.stream(prompt, **kwargs)
        try:
            yield from (response.text for response in call if response.text)
        finally:
            call.cancel()

    def chat(self, prompt: str = "", **kwargs: Any) -> ChatResult:
        """The whole answer with finish reason, usage, timings and sources."""
        return self.wait(self.client.chat(prompt, **kwargs))

    def ingest(self, path: str | Path | None = None, **kwargs: Any) -> pb.IngestResponse:
        """Add a document (a file path, or `data` + `filename`) to a knowledge base."""
        return self.wait(self.client.ingest(path, **kwargs))

    def ingest_messages(self, messages: Iterable[pb.IngestRequest]) -> pb.IngestResponse:
        """Ingest from your own messages (read on the client's thread as gRPC sends them)."""
        return self.wait(self.client.ingest_messages(messages))

    def retrieve(self, query: str, knowledge_base: str = "default", top_k: int = 0) -> list[pb.Source]:
        """The chunks closest to `query`, best first."""
        return self.wait(self.client.retrieve(query, knowledge_base, top_k))

    def list_documents(self, knowledge_base: str = "default") -> list[pb.Document]:
        """Documents stored in a knowledge base."""
        return self.wait(self.client.list_documents(knowledge_base))

    def delete_document(self, document_id: str, knowledge_base: str = "default") -> int:
        """Delete a document; returns the number of chunks removed."""
        return self.wait(self.client.delete_document(document_id, knowledge_base))

    def list_knowledge_bases(self) -> list[pb.KnowledgeBase]:
        """All knowledge bases with document and chunk counts."""
        return self.wait(self.client.list_knowledge_bases())

    def delete_knowledge_base(self, knowledge_base: str) -> int:
        """Delete a knowledge base; returns the number of documents removed."""
        return self.wait(self.client.delete_knowledge_base(knowledge_base))

    def models(self) -> pb.ListModelsResponse:
        """The served model and the catalogue of known models."""
        return self.wait(self.client.models())

    def server_info(self) -> pb.ServerInfo:
        """Load, uptime and model of the server."""
        return self.wait(self.client.server_info())

    def usage(self, start: str = "", end: str = "", token: str = "") -> pb.GetUsageResponse:
        """Tokens used per token name, model and UTC day (an admin token)."""
        return self.wait(self.client.usage(start, end, token))

    def ready(self) -> bool:
        """True when the readiness health check says SERVING."""
        return self.wait(self.client.ready())


async def _read(call: grpc.aio.UnaryStreamCall) -> Any:
    """The next message; a call cancelled meanwhile (by another thread) is an RpcError, as grpc's own
    blocking calls say it, not an asyncio cancellation leaking into the caller's thread."""
    try:
        return await call.read()
    except asyncio.CancelledError:
        if not call.cancelled():
            raise
    raise grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, Metadata(), Metadata(), "Locally cancelled by application!")


async def _open(target: str, options: dict[str, Any]) -> AsyncChatClient:
    return AsyncChatClient(target, **options)  # on the loop it will run on


async def _started(client: AsyncChatClient, prompt: str, kwargs: dict[str, Any]) -> grpc.aio.UnaryStreamCall:
    return client.stream(prompt, **kwargs)
