"""Undecodable request messages are INVALID_ARGUMENT, not a server failure.

grpcio answers a request whose bytes do not parse (corrupt wire format, a string
field that is not UTF-8) with UNKNOWN "Unexpected DecodeError", a code clients
and alerts read as the server's fault. This interceptor swaps each ChatLLM
method's deserializer for one that turns a DecodeError into a marker, and the
method's behaviour refuses the marker with INVALID_ARGUMENT naming the message type.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from chatllm.server.errors import InvalidArgument, Reason, rich_status
from chatllm.server.interceptors.method_handlers import ChatLLMInterceptor, rewrapped


class Undecodable:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return deserialize


def _invalid(request: Undecodable) -> grpc.Status:
    description = f"not a valid protobuf message ({request.reason})"
    return rich_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request: {description}",
        Reason.UNDECODABLE_REQUEST,
        "request",
        description,
    )


def _unary_unary(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await context.abort_with_status(_invalid(request))
        return await behaviour(request, context)

    return checked


def _unary_stream(behaviour: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., AsyncIterator[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await context.abort_with_status(_invalid(request))
        # aclosing: when grpc closes this generator, the servicer's own cleanup (abort the engine request) runs now
        async with contextlib.aclosing(behaviour(request, context)) as responses:
            async for response in responses:
                yield response

    return checked


def _stream_unary(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked_messages(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                raise InvalidArgument(
                    "request", f"not a valid protobuf message ({request.reason})", Reason.UNDECODABLE_REQUEST
                )
            yield request

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return await behaviour(checked_messages(requests), context)

    return checked


class MalformedRequestInterceptor(ChatLLMInterceptor):
    """Request bytes that do not parse are INVALID_ARGUMENT naming the request."""

    def intercept(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        return rewrapped(
            handler,
            unary_unary=_unary_unary,
            unary_stream=_unary_stream,
            stream_unary=_stream_unary,
            request_deserializer=tolerant(handler.request_deserializer),
        )
