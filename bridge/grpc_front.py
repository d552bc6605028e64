"""The bridge's gRPC front door (`chatllm bridge --grpc-port`): `chatllm.v1.ChatLLM`, health and
reflection on one address for the whole fleet.

Every ChatLLM method is forwarded, streams included, to the replica the picker chooses, as bytes:
the bridge decodes nothing it only passes on (generic handlers with no (de)serializers, the method
list read from the proto's descriptor, so a new RPC is forwarded without code here). Generate's
request is decoded once to route it by its prefix, then the original bytes go upstream; the stream
moves to another replica while nothing was answered (routing/routed_call.py), as it does for HTTP.
The caller's metadata (`authorization` included) and remaining deadline go along; a failure
comes back with its code, message and `google.rpc` details untouched.

Health: service "" is SERVING while the bridge runs; `chatllm.v1.ChatLLM` while any replica serves
(NOT_SERVING when none does, and from the start of a drain). With `--token`/`--token-file` the
bridge checks the token itself first, as its HTTP side does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from chatllm.bridge.errors import ERROR_DOMAIN
from chatllm.bridge.routing.routed_call import RoutedCall, forwarded_call
from chatllm.bridge.upstream import Upstream
from chatllm.kernel.access import TokenRegistry
from chatllm.proto import SERVICE_NAME, pb

log = logging.getLogger(__name__)
READINESS_POLL_S = 0.5
# Metadata gRPC itself sets on each hop; everything else the caller sent goes upstream.
HOP_BY_HOP = ("grpc-", ":")
HOP_KEYS = {"user-agent", "content-type", "te", "host"}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if key not in HOP_KEYS and not key.startswith(HOP_BY_HOP)
    )


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


async def _fail(context: grpc.aio.ServicerContext, exc: grpc.aio.AioRpcError) -> None:
    await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))


class ForwardingHandler(grpc.GenericRpcHandler):
    """One handler per ChatLLM method, built from the service's descriptor."""

    def __init__(self, upstream: Upstream, access: TokenRegistry) -> None:
        self._upstream = upstream
        self._access = access
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in pb.DESCRIPTOR.services_by_name["ChatLLM"].methods:
            path = f"/{SERVICE_NAME}/{method.name}"
            if method.name == "Generate":
                self._handlers[path] = grpc.unary_stream_rpc_method_handler(self._generate)
            elif method.client_streaming and not method.server_streaming:
                self._handlers[path] = grpc.stream_unary_rpc_method_handler(self._stream_unary(path))
            elif not method.client_streaming and not method.server_streaming:
                self._handlers[path] = grpc.unary_unary_rpc_method_handler(self._unary(path))
            else:
                raise TypeError(f"the front door cannot forward {path} (streams both ways)")

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method or "")

    async def _check_token(self, context: grpc.aio.ServicerContext) -> None:
        if not self._access.required:
            return
        metadata = dict(context.invocation_metadata() or ())
        if self._access.identify(metadata.get("authorization")) is None:
            await context.abort_with_status(_unauthenticated())

    async def _generate(self, raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await self._check_token(context)
        request = pb.GenerateRequest.FromString(raw)  # read for routing only; the bytes go on as they came
        call = RoutedCall(self._upstream.replicas, request, forwarded_metadata(context), _timeout(context), raw=raw)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            await _fail(context, exc)
        finally:
            call.cancel()

    def _unary(self, path: str) -> Any:
        async def forward(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await self._check_token(context)
            try:
                return await forwarded_call(
                    self._upstream.replicas, path, raw, forwarded_metadata(context), _timeout(context)
                )
            except grpc.aio.AioRpcError as exc:
                await _fail(context, exc)
                raise  # abort raised already; keeps the type checker honest

        return forward

    def _stream_unary(self, path: str) -> Any:
        async def forward(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
            await self._check_token(context)
            replica = self._upstream.replicas.any_replica()
            method = replica.core.passthrough(path, "stream_unary")
            call = method(requests, metadata=forwarded_metadata(context), timeout=_timeout(context))
            try:
                return await call
            except grpc.aio.AioRpcError as exc:
                await _fail(context, exc)
                raise
            finally:
                call.cancel()

        return forward


def _unauthenticated() -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED", domain=ERROR_DOMAIN))
    message = "missing or wrong authorization token (metadata 'authorization: <token>')"
    status = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=message, details=[info])
    return rpc_status.to_status(status)


class GrpcFrontDoor:
    """Started and stopped with the bridge (runner.py)."""

    def __init__(
        self,
        upstream: Upstream,
        access: TokenRegistry,
        address: str,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self._upstream = upstream
        self._address = address
        self._credentials = credentials
        self.health = health_aio.HealthServicer()
        self._server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
        self._server.add_generic_rpc_handlers((ForwardingHandler(upstream, access),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server)
        self._readiness: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        if self._credentials is None:
            self.port = self._server.add_insecure_port(self._address)
        else:
            self.port = self._server.add_secure_port(self._address, self._credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {self._address} (port in use?)")
        await self._server.start()
        await self.health.set("", SERVING)
        self._readiness = asyncio.create_task(self._follow_readiness())
        host = self._address.rsplit(":", 1)[0]
        log.info("gRPC front door listening on %s:%d (upstream %s)", host, self.port, self._upstream.target)

    async def drain(self) -> None:
        """No new calls are routed here: readiness NOT_SERVING (the calls in flight go on)."""
        if self._readiness is not None:
            self._readiness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._readiness
        await self.health.set(SERVICE_NAME, NOT_SERVING)

    async def stop(self, grace: float) -> None:
        await self.drain()
        await self._server.stop(grace)

    async def _follow_readiness(self) -> None:
        while True:
            ready, _ = self._upstream.replicas.readiness()
            await self.health.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)
            await asyncio.sleep(READINESS_POLL_S)
