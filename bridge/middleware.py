"""Request middlewares, outermost first: metrics, error rendering, token check, origin check (cors.py).

The token check knows the caller by its token's name (request[CALLER]): that name, never the
token, goes into the access log and the per-token metrics. What the bridge forwards to the
server in the `authorization` metadata is `upstream_authorization(request)`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from chatllm.bridge import errors, metrics
from chatllm.bridge.cors import check_origin, is_preflight, own_origin
from chatllm.bridge.errors import ApiError
from chatllm.bridge.legacy.eas_signature import is_signed, verify
from chatllm.bridge.routes import Auth, Route, route_of
from chatllm.bridge.state import ACCESS, CALLER, CONFIG, STATE
from chatllm.kernel.access import ANONYMOUS, Caller

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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
        metrics.TOKEN_REQUESTS.labels(token_name(request), route, str(status)).inc()


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


def _is_public(request: web.Request, route: Route | None) -> bool:
    if is_preflight(request):
        return True  # browsers send preflights without credentials; the origin check answers them
    auth = route.auth if route is not None else Auth.TOKEN
    if auth is Auth.METRICS:
        return not request.app[CONFIG].security.protect_metrics
    if auth is Auth.PAGE:
        return not is_websocket(request)  # the web page itself; its API calls need the token
    return auth is Auth.PUBLIC


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or own_origin(request, origin)


def presented_token(request: web.Request) -> str | None:
    """The Authorization header (or `x-api-key`, which Anthropic's clients send), or on a same-origin
    WebSocket handshake the page's token cookie."""
    header = request.headers.get("Authorization") or request.headers.get("x-api-key")
    if header is None and is_websocket(request) and _same_origin(request):
        cookie = request.cookies.get(TOKEN_COOKIE)
        return cookie or None
    return header


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With --token or --token-file, every API route and the WebSocket handshake need `Authorization:
    <token>` (or `Bearer <token>`) with an accepted token; the legacy POST routes also take the EAS
    SDK's signed requests, checked against each token."""
    access = request.app[ACCESS]
    route = route_of(request)
    if not access.required or _is_public(request, route):
        return await handler(request)
    presented = presented_token(request)
    if is_signed(presented):
        assert presented is not None
        if route is None or route.auth is not Auth.SIGNED:
            raise errors.unauthorized("EAS signatures are accepted on the legacy POST routes; send the raw token here")
        callers = {caller.token: caller for caller in access.callers() if caller.token is not None}
        signed_with = verify(
            presented,
            list(callers),
            method=request.method,
            path=request.path,
            body=await request.read(),  # aiohttp keeps it: the handler reads the same bytes
            headers=dict(request.headers),
            skew_seconds=request.app[CONFIG].security.eas_clock_skew,
        )
        caller: Caller | None = callers[signed_with]
    else:
        caller = access.identify(presented)
        if caller is None:
            raise errors.unauthorized()
    request[CALLER] = caller
    return await handler(request)


def token_name(request: web.Request) -> str:
    """The name of the token the request was accepted with; anonymous when the bridge checks no token."""
    caller = request.get(CALLER)
    return caller.name if caller is not None else ANONYMOUS


def upstream_authorization(request: web.Request) -> str | None:
    """What the bridge sends the server as `authorization`: the accepted token when the bridge checks
    tokens itself (so a signed request or the page's cookie reaches the server as that token, whose name
    the server then finds in its own token file), else the client's header (or the page's cookie)
    unchanged, for the server to judge."""
    caller = request.get(CALLER)
    if caller is not None and caller.token is not None:
        return caller.token
    return presented_token(request)


MIDDLEWARES = [observe, render_errors, require_token, check_origin]
