"""Running the bridge (`chatllm bridge`; `chatllm serve` runs it beside the gRPC server in
one event loop, see chatllm.clients.cli.serve), with a graceful drain on SIGTERM/SIGINT.

Drain: readiness flips to 503 (and the gRPC front door's to NOT_SERVING), the listening
socket closes, each WebSocket finishes its current answer and closes with 1001, HTTP streams
and front-door calls get --shutdown-grace seconds to finish, then whatever is left is cancelled.

With --tls-cert/--tls-key the bridge speaks HTTPS (and so wss), and TLS on its gRPC front door
(--grpc-port); SIGHUP re-reads the certificate files for new connections. Each request leaves one access-log line naming
its token's name (never the token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from chatllm.bridge.app import build_app
from chatllm.bridge.grpc_front import GrpcFrontDoor
from chatllm.bridge.settings import BridgeSettings
from chatllm.bridge.state import ACCESS, CALLER, STATE, UPSTREAM
from chatllm.clients.core import LocalGenerate
from chatllm.kernel.access import ANONYMOUS
from chatllm.kernel.config import Config
from chatllm.kernel.tls import CertificateError, GrpcCertificates, HttpsContext

log = logging.getLogger(__name__)
LEFTOVER_TIMEOUT_S = 1.0  # after the grace period: how long cancelled handlers get to unwind


class TokenAccessLogger(AbstractAccessLogger):
    """aiohttp's access log (logger `aiohttp.access`), with the name of the request's token."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        caller = request.get(CALLER)
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %.3fs token=%s',
            request.remote,
            request.method,
            request.path,  # not the query string: nothing secret belongs there, but nothing needs it either
            request.version.major,
            request.version.minor,
            response.status,
            time,
            caller.name if caller is not None else ANONYMOUS,
        )


class BridgeServer:
    """Raises TokenFileError / CertificateError when a token file or certificate cannot be used."""

    def __init__(
        self,
        config: Config,
        upstream_target: str,
        grpc_port: int | None = None,
        local_generate: LocalGenerate | None = None,
    ) -> None:
        """`grpc_port`: also serve the gRPC front door there (grpc_front.py; 0 picks a free port).
        `local_generate`: the upstream is the server in this process (`chatllm serve`): Generate is called
        there directly, every other RPC over the channel (chatllm.clients.core)."""
        self.settings = BridgeSettings.of(config)
        security = config.security
        self.upstream_target = upstream_target
        self.tls = None
        self.grpc_tls: GrpcCertificates | None = None
        if security.tls_cert and security.tls_key:
            self.tls = HttpsContext(security.tls_cert, security.tls_key, security.tls_client_ca)
            if grpc_port is not None:
                self.grpc_tls = GrpcCertificates(security.tls_cert, security.tls_key, security.tls_client_ca)
        self._grpc_port = grpc_port
        self.front_door: GrpcFrontDoor | None = None
        self.app = build_app(self.settings, upstream_target, local_generate=local_generate)
        # handler_cancellation: a client that disconnects cancels its handler, and so its gRPC call.
        # The grace period is ours (stop()); aiohttp's own shutdown only cancels what is left.
        self._runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            shutdown_timeout=LEFTOVER_TIMEOUT_S,
            access_log_class=TokenAccessLogger,
        )
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def start(self) -> None:
        await self._runner.setup()
        context = self.tls.context if self.tls is not None else None
        site = web.TCPSite(self._runner, self.settings.bridge.host, self.settings.bridge.port, ssl_context=context)
        try:
            await site.start()
        except OSError:
            # A busy port: close what setup() opened (the upstream channel, the state store) here, in
            # order, rather than leave its cleanup to the event loop's shutdown (a traceback on stderr).
            await self._runner.cleanup()
            raise
        self.port = self._runner.addresses[0][1]
        log.info(
            "HTTP listening on %s:%d, %s (upstream %s)",
            self.settings.bridge.host,
            self.port,
            self._transport(),
            self.upstream_target,
        )
        if self._grpc_port is not None:
            address = f"{loopback_target(self.settings.bridge.host, self._grpc_port, bind=True)}"
            credentials = self.grpc_tls.credentials if self.grpc_tls is not None else None
            self.front_door = GrpcFrontDoor(self.app[UPSTREAM], self.app[ACCESS], address, credentials)
            await self.front_door.start()

    def _transport(self) -> str:
        if self.tls is None:
            return "plaintext"
        return "HTTPS with client certificates" if self.tls.requires_client_certificate else "HTTPS"

    def reload_certificates(self) -> None:
        """SIGHUP: read the certificate files again; a bad file is logged and the current ones stay."""
        if self.tls is None:
            return
        try:
            self.tls.reload()
            if self.grpc_tls is not None:
                self.grpc_tls.reload()
        except CertificateError as exc:
            log.error("HTTPS: kept the current certificate: %s", exc)
        else:
            log.info("HTTPS: certificates re-read")

    async def stop(self) -> None:
        """Drain (see the module docstring) and release the upstream channel."""
        state = self.app[STATE]
        state.draining = True
        grace = self.settings.limits.shutdown_grace
        # The front door's calls get the same grace, at the same time (its readiness flips at once).
        front_door = asyncio.create_task(self.front_door.stop(grace)) if self.front_door is not None else None
        for site in list(self._runner.sites):
            await site.stop()  # no new connections
        for session in list(state.websockets):
            session.drain()
        if state.active:
            try:
                await asyncio.wait_for(state.idle.wait(), grace)
                log.info("bridge drained: all streams finished")
            except TimeoutError:
                cut = state.calls.cut_all()  # each stream ends with an error its client can read
                log.info("bridge grace of %gs over: cut %d answers", grace, cut)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.idle.wait(), LEFTOVER_TIMEOUT_S)
        if front_door is not None:
            await front_door
        await self._runner.cleanup()  # cancels what is left, closes idle keep-alive connections
        log.info("bridge stopped")


def loopback_target(grpc_host: str, port: int, bind: bool = False) -> str:
    """Where a bridge in the same process reaches the gRPC server (`bind`: the address to listen on)."""
    host = "127.0.0.1" if grpc_host in ("", "0.0.0.0", "::", "[::]") and not bind else grpc_host or "0.0.0.0"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def bridge_until_signal(config: Config, upstream_target: str) -> None:
    """`chatllm bridge`: serve until SIGTERM/SIGINT, then drain; SIGHUP re-reads the certificates."""
    stop = stop_event()
    bridge = BridgeServer(config, upstream_target, config.server.grpc_port)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, bridge.reload_certificates)
    await bridge.start()
    try:
        await stop.wait()
        log.info("shutdown requested: draining")
    finally:
        await bridge.stop()
