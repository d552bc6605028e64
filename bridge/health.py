"""Operations: /healthz (the process is alive), /readyz (a replica reports `chatllm.v1.ChatLLM`
SERVING and the bridge is not draining), /metrics (this process's default
Prometheus registry) and /openapi.json (the committed document, see chatllm.bridge.openapi)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chatllm.bridge.reply_parts import Body
from chatllm.bridge.routes import JSON, Auth, Json, JsonReply, Raw, Reply, Route
from chatllm.bridge.state import STATE, UPSTREAM

DOCUMENT_FILE = Path(__file__).resolve().with_name("openapi.json")
TAG = "operations"


class Alive(Body):
    status: Literal["alive"]


class Readiness(Body):
    status: Literal["ready", "not ready", "draining"]
    detail: str


async def healthz(request: web.Request) -> Alive:
    return Alive(status="alive")


async def readyz(request: web.Request) -> JsonReply:
    if request.app[STATE].draining:
        return JsonReply(Readiness(status="draining", detail="the bridge is shutting down"), status=503)
    ready, detail = await request.app[UPSTREAM].readiness()
    return JsonReply(Readiness(status="ready" if ready else "not ready", detail=detail), status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


@functools.cache
def _document_bytes() -> bytes:
    return DOCUMENT_FILE.read_bytes()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_document_bytes(), content_type="application/json")


ROUTES = (
    Route(
        "GET",
        "/healthz",
        "healthz",
        healthz,
        "liveness",
        TAG,
        "Liveness: the bridge process answers",
        {200: Reply("alive", {JSON: Json(Alive)})},
        auth=Auth.PUBLIC,
    ),
    Route(
        "GET",
        "/readyz",
        "readyz",
        readyz,
        "readiness",
        TAG,
        "Readiness: a replica reports SERVING and the bridge is not draining",
        {200: Reply("ready", {JSON: Json(Readiness)}), 503: Reply("not ready, or draining", {JSON: Json(Readiness)})},
        auth=Auth.PUBLIC,
    ),
    Route(
        "GET",
        "/metrics",
        "metrics",
        metrics,
        "metrics",
        TAG,
        "Prometheus metrics (open by default; --protect-metrics requires the token)",
        {200: Reply("text exposition format", {"text/plain": Raw({"type": "string"})})},
        (401,),
        auth=Auth.METRICS,
    ),
    Route(
        "GET",
        "/openapi.json",
        "openapi",
        openapi_json,
        "openapiDocument",
        TAG,
        "This document",
        {200: Reply("OpenAPI 3.1 document", {JSON: Raw({"type": "object"})})},
        auth=Auth.PUBLIC,
    ),
)
