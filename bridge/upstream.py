"""The bridge's gRPC stubs on its one channel to the servers (built in channel.py)."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.bridge.channel import upstream_channel
from chatllm.proto import SERVICE_NAME, pb, pb_grpc

MODEL_ID_TTL_S = 60.0


class Upstream:
    """Stubs on one channel plus the auth to forward.

    When the bridge has its own token it checks clients against it and forwards
    it; without one, it forwards the client's Authorization header unchanged so a
    server with a token still decides."""

    def __init__(self, target: str, token: str | None, request_timeout: float) -> None:
        self.target = target
        self.channel = upstream_channel(target)
        self.stub = pb_grpc.ChatLLMStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._token = token
        self.timeout = request_timeout if request_timeout > 0 else None
        self._model_id: tuple[float, str] | None = None

    def metadata(self, client_authorization: str | None) -> tuple[tuple[str, str], ...]:
        token = self._token or client_authorization
        # gRPC metadata values must be printable ASCII; anything else cannot be a valid token anyway.
        if not token or not (token.isascii() and token.isprintable()):
            return ()
        return (("authorization", token),)

    def generate(self, request: pb.GenerateRequest, client_authorization: str | None) -> grpc.aio.UnaryStreamCall:
        return self.stub.Generate(request, metadata=self.metadata(client_authorization), timeout=self.timeout)

    async def list_models(self, client_authorization: str | None) -> pb.ListModelsResponse:
        return await self.stub.ListModels(
            pb.ListModelsRequest(), metadata=self.metadata(client_authorization), timeout=10
        )

    async def model_id(self, client_authorization: str | None) -> str:
        """The served model's name (cached for a minute: it only changes when the server restarts)."""
        now = time.monotonic()
        if self._model_id is not None and now - self._model_id[0] < MODEL_ID_TTL_S:
            return self._model_id[1]
        models = (await self.list_models(client_authorization)).models
        name = models[0].id if models else "unknown"
        self._model_id = (now, name)
        return name

    async def readiness(self, timeout: float = 2.0) -> tuple[bool, str]:
        """(ready, why) from the server's standard health service."""
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            reply = await self._health.Check(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return False, f"upstream {self.target}: {exc.code().name}: {exc.details()}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return reply.status == health_pb2.HealthCheckResponse.SERVING, f"upstream {self.target}: {status}"

    async def close(self) -> None:
        await self.channel.close()
