"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions (SSE ending in
`data: [DONE]` when streamed) and /v1/models, so the `openai` client, LangChain and
LlamaIndex work against the bridge. Bodies are the pydantic models of openai_request.py;
shapes are openai_shapes.py; the answer pipeline (chatllm.bridge.answer) does the rest."""

from __future__ import annotations

import time
from typing import Any

import grpc
from aiohttp import web

from chatllm.bridge import errors
from chatllm.bridge.answer import http_stream, whole_answer
from chatllm.bridge.errors import ApiError
from chatllm.bridge.keys import CONFIG, STATE, UPSTREAM
from chatllm.bridge.openai_request import ChatCompletionRequest, CompletionRequest
from chatllm.bridge.openai_shapes import ChatShape, CompletionShape, OpenAIStream, Shape, whole_body
from chatllm.bridge.relay import relay, request_id
from chatllm.bridge.validation import json_object, parse
from chatllm.proto import pb

OWNER = "chatllm-serve"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    _require_api(request)
    body = parse(ChatCompletionRequest, json_object(await request.read()))
    return await _complete(request, body, ChatShape(logprobs=bool(body.logprobs)))


async def completions(request: web.Request) -> web.StreamResponse:
    _require_api(request)
    body = parse(CompletionRequest, json_object(await request.read()))
    return await _complete(request, body, CompletionShape(body.logprobs is not None, body.text if body.echo else ""))


async def list_models(request: web.Request) -> web.Response:
    data = [model_card(m) for m in (await _models(request)).models]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    wanted = request.match_info["model"]
    for model in (await _models(request)).models:
        if model.id == wanted:
            return web.json_response(model_card(model))
    raise ApiError(
        404, f"model: {wanted!r} is not served here", "not_found_error", param="model", code="model_not_found"
    )


def model_card(model: pb.ModelInfo) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": int(model.created_unix), "owned_by": OWNER}


async def _models(request: web.Request) -> pb.ListModelsResponse:
    _require_api(request)
    try:
        return await request.app[UPSTREAM].list_models(request.headers.get("Authorization"))
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc(exc) from None


def _require_api(request: web.Request) -> None:
    if request.app[CONFIG].bridge.no_api:
        raise web.HTTPNotFound(text="the API is disabled on this server (--no-api)")


async def _complete(
    request: web.Request, body: ChatCompletionRequest | CompletionRequest, shape: Shape
) -> web.StreamResponse:
    rid = request_id(request.headers.get("X-Request-Id"))
    upstream, authorization = request.app[UPSTREAM], request.headers.get("Authorization")
    try:
        model = body.model or await upstream.model_id(authorization)
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc(exc) from None
    envelope = {"id": f"{shape.id_prefix}-{rid}", "created": int(time.time()), "model": model}
    generate = body.to_generate_request(rid)
    updates = relay(upstream, generate, "openai", authorization, request.app[STATE].calls)
    headers = {"X-Request-Id": rid}
    if not body.stream:
        progress = await whole_answer(updates, body.client_field)
        return web.json_response(whole_body(shape, envelope, progress), headers=headers)
    encoder = OpenAIStream(shape, envelope, body.n or 1, body.include_usage, body.continuous_usage)
    return await http_stream(request, updates, encoder, "text/event-stream", headers, body.client_field)
