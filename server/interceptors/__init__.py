"""The gRPC server's interceptors, which do for every chatllm.v1.ChatLLM method what would otherwise be
written in each: the access token (auth), malformed request bytes (malformed_requests), and each call's
metrics and error status (outcomes). Health and reflection are left to grpcio."""

from __future__ import annotations

import grpc

from chatllm.kernel.access import TokenRegistry
from chatllm.server.interceptors.auth import TokenAuthInterceptor
from chatllm.server.interceptors.malformed_requests import MalformedRequestInterceptor
from chatllm.server.interceptors.outcomes import OutcomeInterceptor

__all__ = ["MalformedRequestInterceptor", "OutcomeInterceptor", "TokenAuthInterceptor", "server_interceptors"]


def server_interceptors(access: TokenRegistry) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: the token is checked first (an unauthenticated caller learns nothing about its
    bytes), then the bytes; a call that passes both is counted and its errors mapped."""
    interceptors: list[grpc.aio.ServerInterceptor] = [TokenAuthInterceptor(access)] if access.required else []
    return [*interceptors, MalformedRequestInterceptor(), OutcomeInterceptor(access)]
