"""The web chat page: static files shipped in the package (no build step, no CDN),
`/api/info` for the model panel, and `/api/chat`, the page's WebSocket.

The page talks the legacy WebSocket protocol with `"stream_format": "events"`, so
it also gets usage, timings and sources. Its socket lives on `/api/chat` so the
page keeps working with `--no-api` (legacy routes off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel

from chatllm.bridge import errors
from chatllm.bridge.errors import UPSTREAM_ERRORS
from chatllm.bridge.middleware import is_websocket, upstream_authorization
from chatllm.bridge.routes import JSON, Auth, Json, Raw, Reply, Route, Surface, WebSocketFrames
from chatllm.bridge.state import CONFIG, UPSTREAM
from chatllm.bridge.websocket import frames
from chatllm.bridge.websocket.session import handle_websocket
from chatllm.kernel.request_rules import DEFAULT_KNOWLEDGE_BASE, KNOWLEDGE_BASE_NAME_PATTERN, KNOWLEDGE_BASE_NAME_RULE

STATIC_DIR = Path(__file__).resolve().parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}
TAG = "web"


class Info(BaseModel):
    """The served model(s), the server's state and limits, the model catalogue (ModelInfo, ServerInfo and
    CatalogModel of the gRPC API, as JSON with the proto's field names)."""

    model: dict[str, Any] | None
    models: list[dict[str, Any]]
    server: dict[str, Any]
    catalog: list[dict[str, Any]]
    rules: dict[str, Any]  # what the page checks before it asks (the server checks the same)


# The request rules the page applies as the server does (chatllm.kernel.request_rules).
PAGE_RULES = {
    "knowledge_base_name": {
        "pattern": KNOWLEDGE_BASE_NAME_PATTERN,
        "rule": KNOWLEDGE_BASE_NAME_RULE,
        "default": DEFAULT_KNOWLEDGE_BASE,
    }
}


async def root(request: web.Request) -> web.StreamResponse:
    """GET with a WebSocket Upgrade is the WebSocket API (on any path); plain GET / is the web page."""
    if is_websocket(request):
        return await handle_websocket(request)
    if request.match_info["tail"]:
        raise web.HTTPNotFound(text=f"no such page: {request.path}")
    if request.app[CONFIG].bridge.api_only:
        raise web.HTTPNotFound(text="the web page is disabled on this server (--api-only)")
    return web.FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)  # public: its API calls carry the token


async def static_file(request: web.Request) -> web.StreamResponse:
    """A file under static/. Not aiohttp's add_static: its FileResponse answers a missing file with
    an empty 404 after the middlewares ran, where every other error is the JSON error object."""
    name = request.match_info["filename"]
    path = (STATIC_DIR / name).resolve()
    if not (path.is_relative_to(STATIC_DIR) and path.is_file()):
        raise web.HTTPNotFound(text=f"no such file: /static/{name}")
    return web.FileResponse(path)


async def page_socket(request: web.Request) -> web.StreamResponse:
    if not is_websocket(request):
        raise errors.bad_request("Upgrade", "this endpoint is a WebSocket", code="websocket_required")
    return await handle_websocket(request, page=True)


def _as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


async def info(request: web.Request) -> Info:
    """The served model (`model`: the first; `models`: every one, adapters included, for the page's
    model picker), the server's state and the model catalogue, for the page's Model tab."""
    upstream, authorization = request.app[UPSTREAM], upstream_authorization(request)
    models = await errors.rpc_reply(upstream.list_models(authorization))
    server = await errors.rpc_reply(upstream.server_info(authorization))
    return Info(
        model=_as_dict(models.models[0]) if models.models else None,
        models=[_as_dict(model) for model in models.models],
        server=_as_dict(server),
        catalog=[_as_dict(entry) for entry in models.catalog],
        rules=PAGE_RULES,
    )


WEBSOCKET_ACCEPTED = Reply("WebSocket accepted", websocket=WebSocketFrames(frames.FRAMES))
ROUTES = (
    Route(
        "GET",
        "/api/info",
        "api_info",
        info,
        "serverInfo",
        TAG,
        "The served model, the server's state and limits, and the model catalogue",
        {200: Reply("info", {JSON: Json(Info)})},
        UPSTREAM_ERRORS,
    ),
    Route(
        "GET",
        "/api/chat",
        "api_chat",
        page_socket,
        "webPageSocket",
        TAG,
        "The web page's WebSocket: the legacy WebSocket protocol, kept with --no-api",
        {101: WEBSOCKET_ACCEPTED},
        (400, 401, 503),
        description=frames.PROTOCOL + " Same-origin browsers may send the token in the `chatllm_token` cookie.",
    ),
    Route(
        "GET",
        "/static/{filename:.+}",
        "static",
        static_file,
        "staticFile",
        TAG,
        "The web page's scripts and styles",
        {200: Reply("the file", {"*/*": Raw({"type": "string"})})},
        (403, 404),
        auth=Auth.PUBLIC,
        surface=Surface.PAGE,
    ),
)
# The catch-all GET (any path: the WebSocket API; `/`: the page), last in the table with the legacy POST.
PAGE_OR_WEBSOCKET = Route(
    "GET",
    "/{tail:.*}",
    "root",
    root,
    "webPageOrWebSocket",
    "legacy",
    "The web chat page at `/` (404 on other paths); with Upgrade: websocket, the WebSocket API on any path",
    {101: WEBSOCKET_ACCEPTED, 200: Reply("the web chat page", {"text/html": Raw({"type": "string"})})},
    (401, 404, 503),
    auth=Auth.PAGE,
    description=frames.PROTOCOL,
    also_at=("/",),
)
