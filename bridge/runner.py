"""Running the bridge (`chatllm bridge`; `chatllm serve` runs it beside the gRPC server in
one event loop, see chatllm.clients.cli_server), with a graceful drain on SIGTERM/SIGINT.

Drain: readiness flips to 503, the listening socket closes, each WebSocket
finishes its current answer and closes with 1001, HTTP streams get
--shutdown-grace seconds to finish, then whatever is left is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from chatllm.bridge.app import build_app
from chatllm.bridge.keys import STATE, BridgeSettings
from chatllm.clients.config import Config

log = logging.getLogger(__name__)
LEFTOVER_TIMEOUT_S = 1.0  # after the grace period: how long cancelled handlers get to unwind


class BridgeServer:
    def __init__(self, config: Config, upstream_target: str) -> None:
        self.settings = BridgeSettings.of(config)
        self.upstream_target = upstream_target
        self.app = build_app(self.settings, upstream_target)
        # handler_cancellation: a client that disconnects cancels its handler, and so its gRPC call.
        # The grace period is ours (stop()); aiohttp's own shutdown only cancels what is left.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=LEFTOVER_TIMEOUT_S)
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.bridge.host, self.settings.bridge.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("HTTP listening on %s:%d (upstream %s)", self.settings.bridge.host, self.port, self.upstream_target)

    async def stop(self) -> None:
        """Drain (see the module docstring) and release the upstream channel."""
        state = self.app[STATE]
        state.draining = True
        for site in list(self._runner.sites):
            await site.stop()  # no new connections
        for session in list(state.websockets):
            session.drain()
        grace = self.settings.limits.shutdown_grace
        if state.active:
            try:
                await asyncio.wait_for(state.idle.wait(), grace)
                log.info("bridge drained: all streams finished")
            except TimeoutError:
                cut = state.calls.cut_all()  # each stream ends with an error its client can read
                log.info("bridge grace of %gs over: cut %d answers", grace, cut)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.idle.wait(), LEFTOVER_TIMEOUT_S)
        await self._runner.cleanup()  # cancels what is left, closes idle keep-alive connections
        log.info("bridge stopped")


def loopback_target(grpc_host: str, port: int) -> str:
    """Where a bridge in the same process reaches the gRPC server."""
    host = "127.0.0.1" if grpc_host in ("", "0.0.0.0", "::", "[::]") else grpc_host
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
    """`chatllm bridge`: serve until SIGTERM/SIGINT, then drain."""
    stop = stop_event()
    bridge = BridgeServer(config, upstream_target)
    await bridge.start()
    try:
        await stop.wait()
        log.info("shutdown requested: draining")
    finally:
        await bridge.stop()
