"""Every route of the bridge, in the order the router tries them.

Adding a route is one `Route` entry (in its protocol's routes module, see chatllm.bridge.routes) plus
its handler; a new protocol's entries join the tuple below, before the catch-alls. Then regenerate
the OpenAPI document (`python -m chatllm.bridge.openapi`)."""

from __future__ import annotations

from chatllm.bridge import gateway_probes, health, usage, web_page
from chatllm.bridge.anthropic import routes as anthropic
from chatllm.bridge.knowledge_base import routes as knowledge_base
from chatllm.bridge.legacy.routes import LEGACY_POST
from chatllm.bridge.openai import routes as openai
from chatllm.bridge.responses import routes as responses
from chatllm.bridge.routes import Route

ROUTES: tuple[Route, ...] = (
    *health.ROUTES,
    *gateway_probes.ROUTES,
    *usage.ROUTES,
    *openai.ROUTES,
    *responses.ROUTES,
    *anthropic.ROUTES,
    *knowledge_base.ROUTES,
    *web_page.ROUTES,
    # Catch-alls: each takes every path under its prefix, so they come last.
    openai.UNKNOWN_V1_ROUTE,
    web_page.PAGE_OR_WEBSOCKET,
    LEGACY_POST,
)
