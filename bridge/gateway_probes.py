"""What serving gateways probe a worker for (kernel/load_report.py): /health (vLLM's rule: 200 or 503,
no body), vLLM's /load, SGLang's /v1/loads (one rank per serving replica, from the load reports the
bridge polls) and /version, so a `chatllm serve` (or a bridge with its replicas) can be a worker
behind SMG, vLLM Router or llm-d. SMG refuses a worker whose /health is 404."""

from __future__ import annotations

import importlib.metadata

from aiohttp import web

from chatllm.bridge.reply_parts import Body
from chatllm.bridge.routes import JSON, Auth, Json, Reply, Route
from chatllm.bridge.state import STATE, UPSTREAM
from chatllm.kernel.load_report import LoadSnapshot, sglang_loads, vllm_load

TAG = "operations"


class ServerLoad(Body):
    server_load: int


class LoadRank(Body):
    dp_rank: int
    num_running_reqs: int
    num_waiting_reqs: int
    num_total_reqs: int
    num_used_tokens: int
    max_total_num_tokens: int
    token_usage: float
    cache_hit_rate: float
    max_running_requests: int


class WorkerLoads(Body):
    timestamp: str
    version: str
    dp_rank_count: int
    loads: list[LoadRank]


class Version(Body):
    version: str


def _snapshots(request: web.Request) -> list[LoadSnapshot]:
    return [LoadSnapshot.of(r.info) for r in request.app[UPSTREAM].replicas.serving() if r.info is not None]


def _version() -> str:
    try:
        return importlib.metadata.version("chatllm-serve")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def health(request: web.Request) -> web.Response:
    ready, _ = await request.app[UPSTREAM].readiness()
    return web.Response(status=200 if ready and not request.app[STATE].draining else 503)


async def load(request: web.Request) -> ServerLoad:
    return ServerLoad.model_validate(vllm_load(_snapshots(request)))


async def loads(request: web.Request) -> WorkerLoads:
    return WorkerLoads.model_validate(sglang_loads(_snapshots(request), _version()))


async def version(request: web.Request) -> Version:
    return Version(version=_version())


INCLUDE = {
    "include": {"description": "sections asked for (every section it has is sent)", "schema": {"type": "string"}}
}
ROUTES = (
    Route(
        "GET",
        "/health",
        "health",
        health,
        "workerHealth",
        TAG,
        "For serving gateways (SMG, vLLM Router, llm-d): 200 while a replica serves, else 503; no body",
        {200: Reply("serving"), 503: Reply("not serving, or draining")},
        auth=Auth.PUBLIC,
    ),
    Route(
        "GET",
        "/load",
        "load",
        load,
        "workerLoad",
        TAG,
        "vLLM's load endpoint: requests running or waiting on the serving replicas",
        {200: Reply("the load", {JSON: Json(ServerLoad)})},
        (401,),
        auth=Auth.METRICS,
    ),
    Route(
        "GET",
        "/v1/loads",
        "loads",
        loads,
        "workerLoads",
        TAG,
        "SGLang's load document, one rank per serving replica (SMG's load-aware policies read it)",
        {200: Reply("the loads", {JSON: Json(WorkerLoads)})},
        (401,),
        auth=Auth.METRICS,
        query=INCLUDE,
    ),
    Route(
        "GET",
        "/version",
        "version",
        version,
        "version",
        TAG,
        "The package version",
        {200: Reply("the version", {JSON: Json(Version)})},
        auth=Auth.PUBLIC,
    ),
)
