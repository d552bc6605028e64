"""Cross-origin requests: which web pages, besides the bridge's own, may call the API (`--cors-origins`).

Behaves as Starlette's CORSMiddleware (what vLLM uses) does for an allowed origin: a preflight
(`OPTIONS` with `Access-Control-Request-Method`) is answered 200 with the allowed methods, the
requested headers mirrored, and `Access-Control-Max-Age`; every other response carries
`Access-Control-Allow-Origin` (the origin itself, or `*` when `--cors-origins '*'`), `Vary: Origin`
and the headers a page may read (`Retry-After`, `X-Request-Id`). No credentials mode: pages on
other origins send the token in `Authorization`, never a cookie.

Unlike those libraries, a request whose `Origin` is neither the bridge's own nor allowed is
refused with 403 (as aiohttp-cors refuses its preflight), not only left without headers: a
browser sends a "simple" cross-site POST (a form, `text/plain`, `multipart/form-data`) without
asking first, and on a bridge without a token that would run a generation or store a document
for any site the user visits. The WebSocket handshake, which browsers never preflight, is
checked the same way. Requests without `Origin` (curl, SDKs, servers) are not affected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from chatllm.bridge.errors import ApiError
from chatllm.bridge.state import CONFIG

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
EXPOSED_HEADERS = "Retry-After, X-Request-Id, WWW-Authenticate"
MAX_AGE_S = 600
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def own_origin(request: web.Request, origin: str) -> bool:
    """The page was served by this bridge: its origin names the host the request was sent to (directly,
    or through a proxy that says so in X-Forwarded-Host, a header a page on another site cannot set)."""
    netloc = urlsplit(origin).netloc
    if not netloc:
        return False
    forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    return netloc == request.host or (bool(forwarded) and netloc == forwarded)


def allowed_origin(request: web.Request, origin: str) -> bool:
    allowed: Sequence[str] = request.app[CONFIG].security.cors_origins
    return "*" in allowed or origin in allowed or own_origin(request, origin)


def origin_refused(origin: str) -> ApiError:
    return ApiError(
        403,
        f"Origin: {origin!r} may not call this API (allow it with --cors-origins)",
        "permission_error",
        param="Origin",
        code="origin_not_allowed",
    )


def preflight_response(request: web.Request) -> web.Response:
    """The answer to an allowed origin's preflight (the caller checked the origin)."""
    method = request.headers["Access-Control-Request-Method"].strip().upper()
    if method not in ALLOWED_METHODS.split(", "):
        raise ApiError(
            405,
            f"Access-Control-Request-Method: {method} is not one of {ALLOWED_METHODS}",
            "invalid_request_error",
            param="Access-Control-Request-Method",
            code="method_not_allowed",
        )
    headers = {
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Max-Age": str(MAX_AGE_S),
        "Vary": PREFLIGHT_VARY,
    }
    requested = request.headers.get("Access-Control-Request-Headers")
    if requested:
        headers["Access-Control-Allow-Headers"] = requested  # any header: the origin is what is checked
    return web.Response(status=200, text="OK", headers=headers)


@web.middleware
async def check_origin(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer preflights; refuse requests from origins that are neither the bridge's own nor allowed."""
    origin = request.headers.get("Origin")
    if origin is None:
        return await handler(request)
    if not allowed_origin(request, origin):
        raise origin_refused(origin)
    if is_preflight(request):
        return preflight_response(request)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before the headers of every response leave, streams and errors too."""
    origin = request.headers.get("Origin")
    if origin is None or isinstance(response, web.WebSocketResponse):
        return
    vary = response.headers.get("Vary")
    if "Origin" not in (vary or ""):
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    if not allowed_origin(request, origin):
        return
    star = "*" in request.app[CONFIG].security.cors_origins
    response.headers["Access-Control-Allow-Origin"] = "*" if star else origin
    response.headers.setdefault("Access-Control-Expose-Headers", EXPOSED_HEADERS)
