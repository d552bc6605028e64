"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions (SSE ending in
`data: [DONE]` when streamed), /v1/models, /v1/embeddings, and vLLM's /tokenize and
/detokenize, so the `openai` client, LangChain and LlamaIndex work against the bridge.
Bodies are the pydantic models of request.py; shapes are shapes.py; the answer pipeline
(chatllm.bridge.answer) does the rest."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from aiohttp import web
from pydantic import BaseModel

from chatllm.bridge import errors
from chatllm.bridge.answer.pipeline import http_stream, whole_answer
from chatllm.bridge.answer.relay import relay, request_id
from chatllm.bridge.errors import ApiError
from chatllm.bridge.middleware import upstream_authorization
from chatllm.bridge.openai.request import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from chatllm.bridge.openai.shapes import ChatShape, CompletionShape, OpenAIStream, Shape, whole_body
from chatllm.bridge.priority import apply_header
from chatllm.bridge.state import CONFIG, STATE, UPSTREAM
from chatllm.bridge.validation import json_object, parse
from chatllm.proto import pb

OWNER = "chatllm-serve"
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


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
    """OpenAI's model object (+ vLLM's `parent`: an adapter's base model, null for the base)."""
    card = {"id": model.id, "object": "model", "created": int(model.created_unix), "owned_by": OWNER}
    return {**card, "parent": model.parent or None}


async def _models(request: web.Request) -> pb.ListModelsResponse:
    _require_api(request)
    try:
        return await request.app[UPSTREAM].list_models(upstream_authorization(request))
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc(exc) from None


def _require_api(request: web.Request) -> None:
    if request.app[CONFIG].bridge.no_api:
        raise web.HTTPNotFound(text="the API is disabled on this server (--no-api)")


async def _complete(
    request: web.Request, body: ChatCompletionRequest | CompletionRequest, shape: Shape
) -> web.StreamResponse:
    rid = request_id(request.headers.get("X-Request-Id"))
    upstream, authorization = request.app[UPSTREAM], upstream_authorization(request)
    # "model" comes with the server's first message (the model that answers, as named or the base model).
    envelope = {"id": f"{shape.id_prefix}-{rid}", "created": int(time.time())}
    generate = body.to_generate_request(rid)
    apply_header(generate, request.headers)
    updates = relay(upstream, generate, "openai", authorization, request.app[STATE].calls)
    headers = {"X-Request-Id": rid}
    if not body.stream:
        progress = await whole_answer(updates, body.client_field)
        return web.json_response(whole_body(shape, envelope, progress), headers=headers)
    encoder = OpenAIStream(shape, envelope, body.n or 1, body.include_usage, body.continuous_usage)
    return await http_stream(request, updates, encoder, "text/event-stream", headers, body.client_field)


async def _unary(request: web.Request, model: type[M], call: Callable[[M, str | None], Awaitable[R]]) -> tuple[M, R]:
    """Parse the body as `model` and make one upstream call with it (errors mapped, fields renamed)."""
    _require_api(request)
    body = parse(model, json_object(await request.read()))
    try:
        return body, await call(body, upstream_authorization(request))
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc(exc) from None


async def embeddings(request: web.Request) -> web.Response:
    """The knowledge base's embedder, OpenAI's shape (`float` lists, or `base64` of little-endian float32)."""
    upstream = request.app[UPSTREAM]
    body, reply = await _unary(request, EmbeddingRequest, lambda b, auth: upstream.embed(b.to_embed_request(), auth))
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(list(e.values), body.encoding_format)}
        for i, e in enumerate(reply.embeddings)
    ]
    usage = {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens}
    return web.json_response({"object": "list", "data": data, "model": reply.model, "usage": usage})


def _encode(values: list[float], encoding: str | None) -> list[float] | str:
    if encoding != "base64":
        return values
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


async def tokenize(request: web.Request) -> web.Response:
    """vLLM's /tokenize: {count, max_model_len, tokens, token_strs}."""
    upstream = request.app[UPSTREAM]
    body, reply = await _unary(request, TokenizeRequest, lambda b, auth: upstream.tokenize(b.to_pb(), auth))
    out: dict[str, Any] = {"count": reply.count, "max_model_len": reply.max_model_len, "tokens": list(reply.tokens)}
    out["token_strs"] = list(reply.token_strs) if body.return_token_strs else None
    return web.json_response(out)


async def detokenize(request: web.Request) -> web.Response:
    """vLLM's /detokenize: {prompt}."""
    upstream = request.app[UPSTREAM]
    _, reply = await _unary(request, DetokenizeRequest, lambda b, auth: upstream.detokenize(b.to_pb(), auth))
    return web.json_response({"prompt": reply.prompt})
