"""Anthropic's Messages API: POST /v1/messages (whole, or Anthropic's event stream) and
POST /v1/messages/count_tokens, so the `anthropic` SDK, langchain-anthropic and coding agents
pointed at this server's base URL work (the routes: routes.py).

A request is one Generate call through the answer pipeline (chatllm.bridge.answer), like the
OpenAI routes. Auth: the token in `x-api-key` (what the SDK sends) or `Authorization`; the
`anthropic-version` and `anthropic-beta` headers are accepted. Every error on these routes is
Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`), 401s included.
"""

from __future__ import annotations

from aiohttp import web

from chatllm.bridge import errors
from chatllm.bridge.answer.pipeline import http_stream, whole_answer
from chatllm.bridge.answer.relay import relay, request_id
from chatllm.bridge.anthropic.replies import AnthropicError, AnthropicMessage, TokenCount
from chatllm.bridge.anthropic.request import CountTokensRequest, MessagesRequest
from chatllm.bridge.anthropic.shapes import MessageMeta, MessagesStream, error_response
from chatllm.bridge.errors import ApiError
from chatllm.bridge.middleware import Handler, upstream_authorization
from chatllm.bridge.routes import JsonReply, route_of
from chatllm.bridge.state import STATE, UPSTREAM


async def create_message(request: web.Request, body: MessagesRequest) -> JsonReply | web.StreamResponse:
    rid = request_id(request.headers.get("X-Request-Id"))
    generate = body.to_generate_request(rid)
    upstream, authorization = request.app[UPSTREAM], upstream_authorization(request)
    updates = relay(upstream, generate, "anthropic", authorization, request.app[STATE].calls)
    meta = MessageMeta(body.model, body.stop_sequences or [])
    headers = {"X-Request-Id": rid, "request-id": rid}
    if not body.stream:
        progress = await whole_answer(updates, body.client_field)
        return JsonReply(AnthropicMessage.model_validate(meta.whole(progress)), headers=headers)
    return await http_stream(request, updates, MessagesStream(meta), "text/event-stream", headers, body.client_field)


async def count_tokens(request: web.Request, body: CountTokensRequest) -> TokenCount:
    call = request.app[UPSTREAM].tokenize(body.to_pb(), upstream_authorization(request))
    reply = await errors.rpc_reply(call, body.client_field)
    return TokenCount(input_tokens=reply.count)


@web.middleware
async def anthropic_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the routes whose error model is Anthropic's (the Messages routes), errors (the token check's 401
    included) leave in that shape."""
    route = route_of(request)
    if route is None or route.error_model is not AnthropicError:
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(errors.from_http_exception(exc))
