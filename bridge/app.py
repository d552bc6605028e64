"""The aiohttp application: the route table (route_table.py), middlewares, the upstream channel's and
the state store's lifetimes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
from aiohttp import web
from aiohttp.typedefs import Middleware

from chatllm.bridge.anthropic import handlers as anthropic
from chatllm.bridge.channel import channel_credentials
from chatllm.bridge.cors import add_cors_headers
from chatllm.bridge.middleware import MIDDLEWARES, render_errors
from chatllm.bridge.responses.handlers import responses_service
from chatllm.bridge.route_table import ROUTES
from chatllm.bridge.routes import add_routes
from chatllm.bridge.routing.picker import routing_rules
from chatllm.bridge.settings import BridgeSettings
from chatllm.bridge.state import ACCESS, CONFIG, STATE, STATE_STORE, UPSTREAM, BridgeState
from chatllm.bridge.upstream import Upstream
from chatllm.clients.core import LocalGenerate
from chatllm.kernel.access import TokenRegistry
from chatllm.kernel.state.connection import open_state_store


def build_app(
    config: BridgeSettings,
    upstream_target: str,
    access: TokenRegistry | None = None,
    local_generate: LocalGenerate | None = None,
) -> web.Application:
    """The bridge for `upstream_target` (host:port, a list of them, or dns:///name:port: see routing/);
    `local_generate`: that target is the server in this process (`chatllm serve`).

    Raises TokenFileError / CertificateError for a token file or upstream TLS file that cannot be used."""
    security = config.security
    app = web.Application(client_max_size=config.limits.max_body_bytes, middlewares=_middlewares())
    app[CONFIG] = config
    app[STATE] = BridgeState()
    app[ACCESS] = access or TokenRegistry(security.token, security.token_file)
    credentials = channel_credentials(security, upstream_target)
    app.cleanup_ctx.append(_upstream_channel(config, upstream_target, credentials, local_generate))
    app.cleanup_ctx.append(_state_store)
    app.cleanup_ctx.append(responses_service)  # after the state store, which it uses
    app.on_response_prepare.append(add_cors_headers)
    app.on_shutdown.append(_drain_websockets)
    add_routes(app, ROUTES)
    return app


def _middlewares() -> list[Middleware]:
    """The bridge's own, with Anthropic's error shape just inside the error renderer (so the token
    check's 401 on /v1/messages is Anthropic's shape too)."""
    middlewares = list(MIDDLEWARES)
    middlewares.insert(middlewares.index(render_errors) + 1, anthropic.anthropic_errors)
    return middlewares


def _upstream_channel(
    config: BridgeSettings,
    target: str,
    credentials: grpc.ChannelCredentials | None,
    local_generate: LocalGenerate | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def channel(app: web.Application) -> AsyncIterator[None]:
        rules = routing_rules(config.bridge)
        timeout = config.limits.request_timeout
        upstream = Upstream(target, timeout, credentials, rules, config.security.token, local_generate)
        await upstream.start()
        app[UPSTREAM] = upstream
        yield
        await upstream.close()

    return channel


async def _state_store(app: web.Application) -> AsyncIterator[None]:
    """The fleet's shared state (--state-store), open while the app runs (the stored responses live there)."""
    settings = app[CONFIG]
    async with open_state_store(settings.state, settings.common.data_path) as store:
        app[STATE_STORE] = store
        yield


async def _drain_websockets(app: web.Application) -> None:
    """On shutdown: no new work; each WebSocket finishes its current answer, then closes with 1001."""
    state = app[STATE]
    state.draining = True
    for session in list(state.websockets):
        session.drain()
