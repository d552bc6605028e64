"""The gRPC server's own /metrics over HTTP (for `chatllm server`; in `chatllm serve` the
bridge's /metrics shows the same registry). Open by default; with --protect-metrics it
requires the same token as the API."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chatllm.clients.auth import token_matches
from chatllm.clients.config import SecurityConfig

log = logging.getLogger(__name__)


def metrics_app(security: SecurityConfig) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        if security.protect_metrics and security.token:
            if not token_matches(request.headers.get("Authorization"), security.token):
                return web.json_response(
                    {"error": {"message": "missing or wrong token", "type": "authentication_error", "status": 401}},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="chatllm"'},
                )
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


class MetricsEndpoint:
    """Started and stopped with the server; `port` 0 picks a free one (tests)."""

    def __init__(self, security: SecurityConfig, host: str, port: int) -> None:
        self._runner = web.AppRunner(metrics_app(security), access_log=None)
        self._host = host
        self._requested_port = port
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._requested_port
        log.info("metrics listening on %s:%d/metrics", self._host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
