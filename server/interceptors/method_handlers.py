"""What the server's interceptors share: they act on the chatllm.v1.ChatLLM methods only (health and
reflection stay grpcio's own), and each returns the method's handler with its behaviour wrapped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from chatllm.proto import SERVICE_NAME

Behaviour = Callable[..., Any]
Wrap = Callable[[Behaviour], Behaviour]
PREFIX = f"/{SERVICE_NAME}/"


class ChatLLMInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor of the ChatLLM methods: `intercept` gets each one's handler (and the call's details)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not (details.method or "").startswith(PREFIX):
            return handler
        return self.intercept(handler, details)

    def intercept(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        raise NotImplementedError


def rewrapped(
    handler: grpc.RpcMethodHandler,
    *,
    unary_unary: Wrap,
    unary_stream: Wrap,
    stream_unary: Wrap,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped by the wrapper of its kind (the API has no stream-stream method)."""
    kwargs = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_unary(handler.unary_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(unary_stream(handler.unary_stream), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(stream_unary(handler.stream_unary), **kwargs)
    return handler
