"""The gRPC server's own /metrics over HTTP (for `chatllm server`; in `chatllm serve` the
bridge's /metrics shows the same registry). Open by default; with --protect-metrics it
requires an accepted token, as the API does. With --tls-cert it is HTTPS (same certificate,
same client-certificate rule, re-read on SIGHUP)."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chatllm.kernel.access import TokenRegistry
from chatllm.kernel.config import SecurityConfig
from chatllm.kernel.tls import HttpsContext

log = logging.getLogger(__name__)


def metrics_app(access: TokenRegistry, protect: bool) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        if protect and access.required and access.identify(request.headers.get("Authorization")) is None:
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

    def __init__(
        self,
        security: SecurityConfig,
        host: str,
        port: int,
        tls: HttpsContext | None = None,
        access: TokenRegistry | None = None,
    ) -> None:
        access = access or TokenRegistry(security.token, security.token_file)
        self._runner = web.AppRunner(metrics_app(access, security.protect_metrics), access_log=None)
        self._host = host
        self._requested_port = port
        self.tls = tls
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        context = self.tls.context if self.tls is not None else None
        site = web.TCPSite(self._runner, self._host, self._requested_port, ssl_context=context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._requested_port
        scheme = "https" if self.tls is not None else "http"
        log.info("metrics listening on %s://%s:%d/metrics", scheme, self._host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
