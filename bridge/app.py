"""The aiohttp application: routes, middlewares, the upstream channel's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
from aiohttp import web
from aiohttp.typedefs import Middleware

from chatllm.bridge import health, openapi, usage, web_page
from chatllm.bridge.anthropic import handlers as anthropic
from chatllm.bridge.channel import channel_credentials
from chatllm.bridge.cors import add_cors_headers
from chatllm.bridge.knowledge_base import handlers as knowledge_base
from chatllm.bridge.legacy import handler as legacy
from chatllm.bridge.middleware import MIDDLEWARES, is_websocket, render_errors
from chatllm.bridge.openai import handlers as openai_api
from chatllm.bridge.responses import handlers as responses
from chatllm.bridge.settings import BridgeSettings
from chatllm.bridge.state import ACCESS, CONFIG, STATE, STATE_STORE, UPSTREAM, BridgeState
from chatllm.bridge.upstream import Upstream
from chatllm.bridge.websocket.session import handle_websocket
from chatllm.kernel.access import TokenRegistry
from chatllm.kernel.state.connection import open_state_store


def build_app(config: BridgeSettings, upstream_target: str, access: TokenRegistry | None = None) -> web.Application:
    """The bridge for `upstream_target` (host:port, or dns:///name:port for round-robin).

    Raises TokenFileError / CertificateError for a token file or upstream TLS file that cannot be used."""
    security = config.security
    app = web.Application(client_max_size=config.limits.max_body_bytes, middlewares=_middlewares())
    app[CONFIG] = config
    app[STATE] = BridgeState()
    app[ACCESS] = access or TokenRegistry(security.token, security.token_file)
    credentials = channel_credentials(security, upstream_target)
    app.cleanup_ctx.append(_upstream_channel(config, upstream_target, credentials))
    app.cleanup_ctx.append(_state_store)
    app.on_response_prepare.append(add_cors_headers)
    app.on_shutdown.append(_drain_websockets)
    add_routes(app)
    return app


def _middlewares() -> list[Middleware]:
    """The bridge's own, with Anthropic's error shape just inside the error renderer (so the token
    check's 401 on /v1/messages is Anthropic's shape too)."""
    middlewares = list(MIDDLEWARES)
    middlewares.insert(middlewares.index(render_errors) + 1, anthropic.anthropic_errors)
    return middlewares


def add_routes(app: web.Application) -> None:
    """Specific routes first: the last two are catch-alls (any path prefix a deployment adds)."""
    router = app.router
    router.add_get("/healthz", health.healthz, name="healthz")
    router.add_get("/readyz", health.readyz, name="readyz")
    router.add_get("/metrics", health.metrics, name="metrics")
    router.add_get("/openapi.json", openapi.openapi_json, name="openapi")
    router.add_post("/v1/chat/completions", openai_api.chat_completions, name="openai_chat")
    router.add_post("/v1/completions", openai_api.completions, name="openai_completions")
    router.add_post("/v1/embeddings", openai_api.embeddings, name="openai_embeddings")
    router.add_get("/v1/models", openai_api.list_models, name="openai_models")
    router.add_get("/v1/models/{model}", openai_api.get_model, name="openai_model")
    responses.add_routes(app)  # /v1/responses...: before the /v1 catch-all
    anthropic.add_routes(app)  # /v1/messages...
    router.add_route("*", "/v1/{tail:.*}", _unknown_v1_route, name="openai_unknown")
    router.add_post("/tokenize", openai_api.tokenize, name="tokenize")
    router.add_post("/detokenize", openai_api.detokenize, name="detokenize")
    knowledge_base.add_routes(router)  # /api/kb/...: before the catch-alls below
    usage.add_routes(app)  # /api/usage
    web_page.add_routes(app)  # /api/info, /api/chat, /static/
    router.add_get("/{tail:.*}", root, name="root")
    router.add_post("/{tail:.*}", legacy.handle_post, name="legacy")


async def root(request: web.Request) -> web.StreamResponse:
    """GET with a WebSocket Upgrade is the WebSocket API (on any path); plain GET / is the web page."""
    if is_websocket(request):
        return await handle_websocket(request)
    if request.match_info["tail"]:
        raise web.HTTPNotFound(text=f"no such page: {request.path}")
    return await web_page.index(request)


async def _unknown_v1_route(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound(text=f"no such OpenAI-compatible route: {request.method} {request.path}")


def _upstream_channel(
    config: BridgeSettings, target: str, credentials: grpc.ChannelCredentials | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def channel(app: web.Application) -> AsyncIterator[None]:
        upstream = Upstream(target, config.limits.request_timeout, credentials)
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
