"""Every ChatLLM call's outcome, kept in one place: the call counted in the metrics (in flight, by status
code, by the caller's token name), and an exception turned into the gRPC status the error table gives
it (`errors.status_of`: code, message, google.rpc details). The servicer's methods only say what they
answer."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from chatllm.kernel.access import TokenRegistry
from chatllm.server import metrics
from chatllm.server.errors import ChatLLMError, grpc_code, status_of
from chatllm.server.interceptors.method_handlers import PREFIX, ChatLLMInterceptor, rewrapped

log = logging.getLogger(__name__)


class _Outcome:
    """One call's bookkeeping: in flight until `done`, then counted with its status code."""

    def __init__(self, method: str, caller_name: str | None, code: grpc.StatusCode) -> None:
        self.method, self.caller_name, self.code = method, caller_name, code
        metrics.IN_FLIGHT.labels(method).inc()

    async def failed(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        """Record why the call failed; answer an exception with its status (abort raises)."""
        if isinstance(exc, grpc.aio.AbortError):
            self.code = context.code() or grpc.StatusCode.UNKNOWN
        elif isinstance(exc, Exception):
            self.code = grpc_code(exc)
            if not isinstance(exc, ChatLLMError):
                log.exception("unexpected error in %s", self.method)
            await context.abort_with_status(status_of(exc))

    def done(self) -> None:
        metrics.IN_FLIGHT.labels(self.method).dec()
        metrics.REQUESTS.labels(self.method, self.code.name).inc()
        if self.caller_name is not None:
            metrics.TOKEN_REQUESTS.labels(self.caller_name, self.method, self.code.name).inc()


class OutcomeInterceptor(ChatLLMInterceptor):
    """Counts every ChatLLM call and answers its exceptions with their statuses."""

    def __init__(self, access: TokenRegistry) -> None:
        self._access = access

    def intercept(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = (details.method or "").removeprefix(PREFIX)
        caller = self._access.identify(dict(details.invocation_metadata or ()).get("authorization"))
        name = caller.name if caller is not None else None
        answer = functools.partial(_answer, method=method, name=name)
        stream = functools.partial(_stream, method=method, name=name)
        return rewrapped(handler, unary_unary=answer, stream_unary=answer, unary_stream=stream)


def _answer(behaviour: Callable[..., Awaitable[Any]], method: str, name: str | None) -> Callable[..., Awaitable[Any]]:
    async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
        outcome = _Outcome(method, name, grpc.StatusCode.OK)
        try:
            return await behaviour(request, context)
        except BaseException as exc:
            await outcome.failed(exc, context)
            raise
        finally:
            outcome.done()

    return answer


def _stream(behaviour: Callable[..., AsyncGenerator[Any, None]], method: str, name: str | None) -> Callable[..., Any]:
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        outcome = _Outcome(method, name, grpc.StatusCode.CANCELLED)  # until it completes or fails
        try:
            # aclosing: when grpc closes this generator (the client left), the engine request is aborted now
            async with contextlib.aclosing(behaviour(request, context)) as responses:
                async for response in responses:
                    yield response
            outcome.code = grpc.StatusCode.OK
        except BaseException as exc:
            await outcome.failed(exc, context)
            raise
        finally:
            outcome.done()

    return stream
