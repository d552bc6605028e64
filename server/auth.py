"""gRPC token auth: the `authorization` metadata must carry the token (see
chatllm.clients.auth). The token is never logged: only whether a check passed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from chatllm.clients.auth import token_matches
from chatllm.proto import SERVICE_NAME
from chatllm.server.errors import Reason, rich_status


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires the token on every chatllm.v1.ChatLLM method; health and
    reflection stay open so probes and tooling work without it."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._prefix = f"/{SERVICE_NAME}/"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method or ""
        if handler is None or not method.startswith(self._prefix):
            return handler
        metadata = dict(details.invocation_metadata or ())
        if token_matches(metadata.get("authorization"), self._token):
            return handler
        return _denying(handler)


def _denying(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    message = "missing or wrong authorization token (metadata 'authorization: <token>')"
    status = rich_status(grpc.StatusCode.UNAUTHENTICATED, message, Reason.UNAUTHENTICATED)

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort_with_status(status)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort_with_status(status)
        yield  # pragma: no cover - makes this an async generator

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
