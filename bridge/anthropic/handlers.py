"""Anthropic's Messages API: POST /v1/messages (whole, or Anthropic's event stream) and
POST /v1/messages/count_tokens, so the `anthropic` SDK, langchain-anthropic and coding agents
pointed at this server's base URL work.

A request is one Generate call through the answer pipeline (chatllm.bridge.answer), like the
OpenAI routes. Auth: the token in `x-api-key` (what the SDK sends) or `Authorization`; the
`anthropic-version` and `anthropic-beta` headers are accepted. Every error on these routes is
Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`), 401s included.
"""

from __future__ import annotations

import grpc
from aiohttp import web

from chatllm.bridge import errors
from chatllm.bridge.answer.pipeline import http_stream, whole_answer
from chatllm.bridge.answer.relay import relay, request_id
from chatllm.bridge.anthropic.request import CountTokensRequest, MessagesRequest
from chatllm.bridge.anthropic.shapes import MessageMeta, MessagesStream, error_response
from chatllm.bridge.errors import ApiError
from chatllm.bridge.middleware import Handler, upstream_authorization
from chatllm.bridge.state import CONFIG, STATE, UPSTREAM
from chatllm.bridge.validation import json_object, parse

PATHS = ("/v1/messages", "/v1/messages/count_tokens")


def _require_api(request: web.Request) -> None:
    if request.app[CONFIG].bridge.no_api:
        raise web.HTTPNotFound(text="the API is disabled on this server (--no-api)")


async def create_message(request: web.Request) -> web.StreamResponse:
    _require_api(request)
    body = parse(MessagesRequest, json_object(await request.read()))
    rid = request_id(request.headers.get("X-Request-Id"))
    generate = body.to_generate_request(rid)
    upstream, authorization = request.app[UPSTREAM], upstream_authorization(request)
    updates = relay(upstream, generate, "anthropic", authorization, request.app[STATE].calls)
    meta = MessageMeta(body.model, body.stop_sequences or [])
    headers = {"X-Request-Id": rid, "request-id": rid}
    if not body.stream:
        progress = await whole_answer(updates, body.client_field)
        return web.json_response(meta.whole(progress), headers=headers)
    return await http_stream(request, updates, MessagesStream(meta), "text/event-stream", headers, body.client_field)


async def count_tokens(request: web.Request) -> web.Response:
    _require_api(request)
    body = parse(CountTokensRequest, json_object(await request.read()))
    try:
        reply = await request.app[UPSTREAM].tokenize(body.to_pb(), upstream_authorization(request))
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc(exc, body.client_field) from None
    return web.json_response({"input_tokens": reply.count})


@web.middleware
async def anthropic_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the Messages routes, errors (the token check's 401 included) leave in Anthropic's shape."""
    if request.path not in PATHS:
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(errors.from_http_exception(exc))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", create_message, name="anthropic_messages")
    app.router.add_post("/v1/messages/count_tokens", count_tokens, name="anthropic_count_tokens")
