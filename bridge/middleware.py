"""Request middlewares, outermost first: metrics, error rendering, token check."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from chatllm.bridge import errors, metrics
from chatllm.bridge.eas_signature import is_signed, verify
from chatllm.bridge.errors import ApiError
from chatllm.bridge.keys import CONFIG, STATE
from chatllm.clients.auth import token_matches

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALWAYS_PUBLIC = frozenset({"healthz", "readyz", "openapi"})
# Browsers cannot set headers on a WebSocket handshake: the web page sends its token
# in this cookie (SameSite=Strict), accepted on same-origin WebSocket handshakes only.
TOKEN_COOKIE = "chatllm_token"
CLIENT_CLOSED = 499  # nginx's code for "client closed the connection before the answer"


def is_websocket(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


def route_label(request: web.Request) -> str:
    """A bounded label: the route's name, never the raw path (any path takes POST)."""
    if is_websocket(request):
        return "websocket"
    route = request.match_info.route
    return route.name or "unmatched" if route is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_label(request)
    in_flight = metrics.HTTP_IN_FLIGHT.labels(route)
    in_flight.inc()
    state = request.app[STATE]
    state.started()
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_CLOSED
        raise
    finally:
        state.finished()
        in_flight.dec()
        metrics.HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        metrics.HTTP_DURATION.labels(route).observe(time.perf_counter() - started)


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as the JSON error object; nothing leaks a traceback."""
    try:
        return await handler(request)
    except ApiError as err:
        return err.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return errors.from_http_exception(exc).response()
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return errors.internal_error().response()


def _is_public(request: web.Request) -> bool:
    route = request.match_info.route
    name = route.name if route is not None else None
    if name in ALWAYS_PUBLIC:
        return True
    if name == "metrics":
        return not request.app[CONFIG].security.protect_metrics
    if name == "static":
        return True
    return name == "root" and not is_websocket(request)  # the web page itself; its API calls need the token


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def presented_token(request: web.Request) -> str | None:
    """The Authorization header, or on a same-origin WebSocket handshake the page's token cookie."""
    header = request.headers.get("Authorization")
    if header is None and is_websocket(request) and _same_origin(request):
        cookie = request.cookies.get(TOKEN_COOKIE)
        return cookie or None
    return header


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With --token, every API route and the WebSocket handshake need `Authorization: <token>` (or
    `Bearer <token>`); the legacy POST routes also take the EAS SDK's signed requests."""
    security = request.app[CONFIG].security
    if not security.token or _is_public(request):
        return await handler(request)
    presented = presented_token(request)
    if is_signed(presented):
        assert presented is not None
        if not _takes_signatures(request):
            raise errors.unauthorized("EAS signatures are accepted on the legacy POST routes; send the raw token here")
        verify(
            presented,
            [security.token],
            method=request.method,
            path=request.path,
            body=await request.read(),  # aiohttp keeps it: the handler reads the same bytes
            headers=dict(request.headers),
            skew_seconds=security.eas_clock_skew,
        )
    elif not token_matches(presented, security.token):
        raise errors.unauthorized()
    return await handler(request)


def _takes_signatures(request: web.Request) -> bool:
    route = request.match_info.route
    return route is not None and route.name == "legacy"


MIDDLEWARES = [observe, render_errors, require_token]
