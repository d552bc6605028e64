"""The gRPC server's own HTTP side (for `chatllm server`; in `chatllm serve` the bridge serves the
same): /metrics, and the probes serving gateways read (kernel/load_report.py): /health, /load,
/v1/loads, /version. /metrics and the loads are open by default; with --protect-metrics they
require an accepted token, as the API does (/health and /version stay open for probes). With
--tls-cert it is HTTPS (same certificate, same client-certificate rule, re-read on SIGHUP)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chatllm.kernel.access import TokenRegistry
from chatllm.kernel.config import SecurityConfig
from chatllm.kernel.load_report import LoadSnapshot, sglang_loads, vllm_load
from chatllm.kernel.tls import HttpsContext

log = logging.getLogger(__name__)


# (readiness SERVING, this server's GetServerInfo)
Status = Callable[[], tuple[bool, Any]]


def metrics_app(access: TokenRegistry, protect: bool, status: Status | None = None) -> web.Application:
    def refused(request: web.Request) -> web.Response | None:
        if protect and access.required and access.identify(request.headers.get("Authorization")) is None:
            return web.json_response(
                {"error": {"message": "missing or wrong token", "type": "authentication_error", "status": 401}},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="chatllm"'},
            )
        return None

    async def metrics(request: web.Request) -> web.Response:
        return refused(request) or web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    if status is None:
        return app

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if status()[0] else 503)

    async def load(request: web.Request) -> web.Response:
        return refused(request) or web.json_response(vllm_load([LoadSnapshot.of(status()[1])]))

    async def loads(request: web.Request) -> web.Response:
        info = status()[1]
        return refused(request) or web.json_response(sglang_loads([LoadSnapshot.of(info)], info.version))

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": status()[1].version})

    for path, handler in (("/health", health), ("/load", load), ("/v1/loads", loads), ("/version", version)):
        app.router.add_get(path, handler)
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
        status: Status | None = None,
    ) -> None:
        access = access or TokenRegistry(security.token, security.token_file)
        self._runner = web.AppRunner(metrics_app(access, security.protect_metrics, status), access_log=None)
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
