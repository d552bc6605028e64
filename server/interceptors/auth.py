"""gRPC token auth: the `authorization` metadata must carry an accepted token (`--token`, or
one of `--token-file`'s; see chatllm.kernel.access). Tokens are never logged: a refusal logs
the peer and the method, a caller is known by its token's name."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from chatllm.kernel.access import TokenRegistry
from chatllm.server.errors import Reason, rich_status
from chatllm.server.interceptors.method_handlers import ChatLLMInterceptor, rewrapped

log = logging.getLogger(__name__)


class TokenAuthInterceptor(ChatLLMInterceptor):
    """Requires the token on every chatllm.v1.ChatLLM method; health and
    reflection stay open so probes and tooling work without it."""

    def __init__(self, access: TokenRegistry) -> None:
        self._access = access

    def intercept(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        metadata = dict(details.invocation_metadata or ())
        if self._access.identify(metadata.get("authorization")) is not None:
            return handler
        return _denying(handler, details.method or "")


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

    return rewrapped(
        handler, unary_unary=lambda _: deny, unary_stream=lambda _: deny_stream, stream_unary=lambda _: deny
    )
