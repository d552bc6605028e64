"""OpenAI-compatible handlers: /v1/chat/completions, /v1/completions (SSE ending in
`data: [DONE]` when streamed), /v1/models, /v1/embeddings, and vLLM's /tokenize and
/detokenize, so the `openai` client, LangChain and LlamaIndex work against the bridge.
Bodies are the pydantic models of request.py (parsed by the route layer, routes.py); whole
replies are the models of replies.py; shapes.py builds both kinds of answer; the answer
pipeline (chatllm.bridge.answer) does the rest."""

from __future__ import annotations

import base64
import time

import numpy as np
from aiohttp import web

from chatllm.bridge import errors
from chatllm.bridge.answer.pipeline import http_stream, whole_answer
from chatllm.bridge.answer.relay import relay, request_id
from chatllm.bridge.errors import ApiError
from chatllm.bridge.middleware import upstream_authorization
from chatllm.bridge.openai.replies import (
    DetokenizeResult,
    EmbeddingItem,
    EmbeddingList,
    EmbeddingUsage,
    Model,
    ModelList,
    TokenizeResult,
)
from chatllm.bridge.openai.request import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from chatllm.bridge.openai.shapes import ChatShape, CompletionShape, OpenAIStream, Shape, whole_body
from chatllm.bridge.priority import apply_header
from chatllm.bridge.routes import JsonReply
from chatllm.bridge.state import STATE, UPSTREAM
from chatllm.proto import pb

OWNER = "chatllm-serve"


async def chat_completions(request: web.Request, body: ChatCompletionRequest) -> JsonReply | web.StreamResponse:
    return await _complete(request, body, ChatShape(logprobs=bool(body.logprobs)))


async def completions(request: web.Request, body: CompletionRequest) -> JsonReply | web.StreamResponse:
    return await _complete(request, body, CompletionShape(body.logprobs is not None, body.text if body.echo else ""))


async def list_models(request: web.Request) -> ModelList:
    return ModelList(object="list", data=[model_card(m) for m in (await _models(request)).models])


async def get_model(request: web.Request) -> Model:
    wanted = request.match_info["model"]
    for model in (await _models(request)).models:
        if model.id == wanted:
            return model_card(model)
    raise ApiError(
        404, f"model: {wanted!r} is not served here", "not_found_error", param="model", code="model_not_found"
    )


def model_card(model: pb.ModelInfo) -> Model:
    """OpenAI's model object (+ vLLM's `parent`: an adapter's base model, null for the base)."""
    return Model(
        id=model.id, object="model", created=int(model.created_unix), owned_by=OWNER, parent=model.parent or None
    )


async def _models(request: web.Request) -> pb.ListModelsResponse:
    return await errors.rpc_reply(request.app[UPSTREAM].list_models(upstream_authorization(request)))


async def unknown_v1_route(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound(text=f"no such OpenAI-compatible route: {request.method} {request.path}")


async def _complete(
    request: web.Request, body: ChatCompletionRequest | CompletionRequest, shape: Shape
) -> JsonReply | web.StreamResponse:
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
        return JsonReply(whole_body(shape, envelope, progress), headers=headers)
    encoder = OpenAIStream(shape, envelope, body.n or 1, body.include_usage, body.continuous_usage)
    return await http_stream(request, updates, encoder, "text/event-stream", headers, body.client_field)


async def embeddings(request: web.Request, body: EmbeddingRequest) -> EmbeddingList:
    """The knowledge base's embedder, OpenAI's shape (`float` lists, or `base64` of little-endian float32)."""
    call = request.app[UPSTREAM].embed(body.to_embed_request(), upstream_authorization(request))
    reply = await errors.rpc_reply(call)
    data = [
        EmbeddingItem(object="embedding", index=i, embedding=_encode(list(e.values), body.encoding_format))
        for i, e in enumerate(reply.embeddings)
    ]
    usage = EmbeddingUsage(prompt_tokens=reply.prompt_tokens, total_tokens=reply.prompt_tokens)
    return EmbeddingList(object="list", data=data, model=reply.model, usage=usage)


def _encode(values: list[float], encoding: str | None) -> list[float] | str:
    if encoding != "base64":
        return values
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


async def tokenize(request: web.Request, body: TokenizeRequest) -> TokenizeResult:
    """vLLM's /tokenize: {count, max_model_len, tokens, token_strs}."""
    reply = await errors.rpc_reply(request.app[UPSTREAM].tokenize(body.to_pb(), upstream_authorization(request)))
    return TokenizeResult(
        count=reply.count,
        max_model_len=reply.max_model_len,
        tokens=list(reply.tokens),
        token_strs=list(reply.token_strs) if body.return_token_strs else None,
    )


async def detokenize(request: web.Request, body: DetokenizeRequest) -> DetokenizeResult:
    """vLLM's /detokenize: {prompt}."""
    reply = await errors.rpc_reply(request.app[UPSTREAM].detokenize(body.to_pb(), upstream_authorization(request)))
    return DetokenizeResult(prompt=reply.prompt)
