"""Probes and metrics: /healthz (the process is alive), /readyz (the upstream gRPC
server reports `chatllm.v1.ChatLLM` SERVING and the bridge is not draining),
/metrics (this process's default Prometheus registry)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chatllm.bridge.reply_parts import Body
from chatllm.bridge.state import STATE, UPSTREAM


class Alive(Body):
    status: Literal["alive"]


class Readiness(Body):
    status: Literal["ready", "not ready", "draining"]
    detail: str


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        return web.json_response({"status": "draining", "detail": "the bridge is shutting down"}, status=503)
    ready, detail = await request.app[UPSTREAM].readiness()
    return web.json_response(
        {"status": "ready" if ready else "not ready", "detail": detail}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
