"""Generate inside the process: `chatllm serve`'s bridge reaches its own server without gRPC's wire.

In `chatllm serve` the bridge and the server share one event loop. Over loopback gRPC every token was
serialized, framed, sent, received and parsed again, and that hop cost more CPU than everything else the
front end does per token. A `LocalGenerate` call runs the method handler the gRPC server runs, wrapped by
the same interceptors in the same order (the access token, the outcome metrics, the error table's
statuses), and hands the bridge the response messages themselves.

To its reader it is a grpc.aio unary-stream call, with gRPC's semantics: iterate it for the responses; a
failure is a grpc.aio.AioRpcError carrying the code, message and google.rpc details the server set;
`cancel()` (or the reader leaving) closes the answer, which aborts the engine request, and a reader
waiting for a message sees asyncio.CancelledError, as on a cancelled gRPC call; the deadline (`timeout`)
ends the call with DEADLINE_EXCEEDED; the server's stop cancels the calls still running. Health, load
reports and every other RPC stay on the gRPC port, which keeps serving services as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from chatllm.proto import SERVICE_NAME, pb, pb_grpc

GENERATE = f"/{SERVICE_NAME}/Generate"
PEER = "in-process"  # what the handler's context.peer() says (the auth interceptor logs it)
Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):  # type: ignore[misc]
    method: str
    invocation_metadata: Metadata


class _Context:
    """What the handler and the interceptors ask of grpc.aio.ServicerContext."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = metadata
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Sequence[tuple[str, str | bytes]] = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return PEER

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def abort_with_status(self, status: grpc.Status) -> None:
        self._code, self._details, self._trailing = status.code, status.details, tuple(status.trailing_metadata or ())
        raise grpc.aio.AbortError()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing_metadata
        raise grpc.aio.AbortError()

    def rpc_error(self) -> grpc.aio.AioRpcError:
        code = self._code or grpc.StatusCode.UNKNOWN
        return rpc_error(code, self._details, grpc.aio.Metadata(*self._trailing))


def rpc_error(code: grpc.StatusCode, details: str, trailing: grpc.aio.Metadata | None = None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details)


class _Handlers:
    """Collects the method handlers the generated code registers on a server."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        return None

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.methods.update({f"/{service}/{name}": handler for name, handler in handlers.items()})


HandlerFor = Callable[[_CallDetails], Awaitable[grpc.RpcMethodHandler]]


class LocalGenerate:
    """`servicer`'s Generate behind `interceptors` (outermost first, as grpc.aio.server takes them).
    Called as ChatLLMCore.generate is: (request, metadata, timeout) -> a call."""

    def __init__(self, servicer: pb_grpc.ChatLLMServicer, interceptors: Sequence[grpc.aio.ServerInterceptor]) -> None:
        handlers = _Handlers()
        pb_grpc.add_ChatLLMServicer_to_server(servicer, handlers)
        self._generate = handlers.methods[GENERATE]
        self._interceptors = tuple(interceptors)
        self.calls: set[LocalCall] = set()

    def __call__(self, request: pb.GenerateRequest, metadata: Metadata = (), timeout: float | None = None) -> LocalCall:
        details = _CallDetails(GENERATE, tuple(metadata))
        call = LocalCall(functools.partial(self._handler, self._interceptors), request, details, timeout, self.calls)
        self.calls.add(call)
        return call

    async def _handler(
        self, interceptors: tuple[grpc.aio.ServerInterceptor, ...], details: _CallDetails
    ) -> grpc.RpcMethodHandler:
        """What grpc.aio's server does per call: each interceptor's intercept_service, the first outermost."""
        if not interceptors:
            return self._generate
        continuation = functools.partial(self._handler, interceptors[1:])
        return await interceptors[0].intercept_service(continuation, details)

    def cancel_all(self) -> int:
        """Cancel every call still running (the server is stopping); how many there were."""
        running = list(self.calls)
        for call in running:
            call.cancel()
        return len(running)


class LocalCall:
    """One in-process Generate call: an async iterator of GenerateResponse, like grpc.aio's UnaryStreamCall."""

    def __init__(
        self,
        handler_for: HandlerFor,
        request: pb.GenerateRequest,
        details: _CallDetails,
        timeout: float | None,
        registry: set[LocalCall],
    ) -> None:
        self._handler_for = handler_for
        self._request = request
        self._details = details
        self._context = _Context(details.invocation_metadata)
        self._responses: AsyncGenerator[pb.GenerateResponse, None] | None = None
        self._registry = registry
        self._ended: BaseException | None = None  # why the call ended early: cancelled, deadline
        self._reader: asyncio.Task[Any] | None = None  # the task waiting in __anext__, if any
        self._closing: asyncio.Task[None] | None = None
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._expire) if timeout else None

    def __aiter__(self) -> LocalCall:
        return self

    async def __anext__(self) -> pb.GenerateResponse:
        if self._ended is not None:
            await self._close()
            raise self._ended
        self._reader = reader = asyncio.current_task()
        try:
            if self._responses is None:
                handler = await self._handler_for(self._details)
                self._responses = handler.unary_stream(self._request, self._context)
            return await self._responses.__anext__()
        except StopAsyncIteration:
            self._done()
            raise
        except grpc.aio.AbortError:
            self._done()
            raise self._context.rpc_error() from None
        except asyncio.CancelledError:
            self._done()
            if self._ended is None or reader is None or reader.uncancel() > 0:
                raise  # the reader's own task is being cancelled (too)
            raise self._ended from None  # our cancel() of the reader, turned into the call's outcome
        except Exception as exc:  # the outcome interceptor maps every error; a bare one is grpcio's UNKNOWN
            self._done()
            raise rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected error: {type(exc).__name__}: {exc}") from exc
        finally:
            self._reader = None

    def cancel(self) -> bool:
        """Cancel the call: the answer is closed (its engine request aborted); False when it had ended."""
        return self._end(asyncio.CancelledError())

    def _expire(self) -> None:
        self._end(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def _end(self, why: BaseException) -> bool:
        if self._ended is not None or self not in self._registry:
            return False
        self._ended = why
        self._done()
        if self._reader is not None:
            self._reader.cancel()  # a reader waiting for the next message wakes up with `why`
        else:
            self._closing = asyncio.ensure_future(self._close())
        return True

    async def _close(self) -> None:
        """Close the handler's generator where it stopped (its cleanup aborts the engine request)."""
        self._done()
        if self._closing is not None and self._closing is not asyncio.current_task():
            await asyncio.shield(self._closing)
        elif self._responses is not None:
            with contextlib.suppress(Exception):  # the handler's own cleanup failed: nobody is left to tell
                await self._responses.aclose()

    def _done(self) -> None:
        self._registry.discard(self)
        if self._deadline is not None:
            self._deadline.cancel()
