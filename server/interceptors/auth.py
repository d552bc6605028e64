"""gRPC token auth: the `authorization` metadata must carry an accepted token (`--token`, or
one of `--token-file`'s; see chatllm.kernel.access). Tokens are never logged: a refusal logs
the peer and the method, a caller is known by its token's name."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from chatllm.kernel.access import TokenRegistry
from chatllm.proto import SERVICE_NAME
from chatllm.server.errors import Reason, rich_status

log = logging.getLogger(__name__)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires the token on every chatllm.v1.ChatLLM method; health and
    reflection stay open so probes and tooling work without it."""

    def __init__(self, access: TokenRegistry) -> None:
        self._access = access
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
        if self._access.identify(metadata.get("authorization")) is not None:
            return handler
        return _denying(handler, method)


def _denying(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    message = "missing or wrong authorization token (metadata 'authorization: <token>')"
    status = rich_status(grpc.StatusCode.UNAUTHENTICATED, message, Reason.UNAUTHENTICATED)

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        log.info("refused %s from %s: missing or wrong token", method, context.peer())
        await context.abort_with_status(status)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        log.info("refused %s from %s: missing or wrong token", method, context.peer())
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
