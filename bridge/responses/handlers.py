"""OpenAI's Responses API: POST /v1/responses, GET / DELETE /v1/responses/{id},
POST /v1/responses/{id}/cancel, GET /v1/responses/{id}/input_items.

The routes are in routes.py. A request becomes one Generate call through the answer pipeline
(chatllm.bridge.answer), like /v1/chat/completions: its conversation is the stored chain of
`previous_response_id` (inputs and outputs, tool calls and their outputs included) followed by its
own input. Stored responses live
in the response store (store.py), so any bridge on the same state store can continue or read them;
only with the token that stored them (`owner`): another token's responses are a 404.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from chatllm.bridge import errors
from chatllm.bridge.answer.pipeline import HttpSink, stream_answer, whole_answer
from chatllm.bridge.answer.relay import relay, request_id
from chatllm.bridge.errors import ApiError
from chatllm.bridge.middleware import upstream_authorization
from chatllm.bridge.responses.items import item_json, to_messages
from chatllm.bridge.responses.replies import InputItemList, ResponseDeleted, ResponseObject
from chatllm.bridge.responses.request import ResponseCreateRequest
from chatllm.bridge.responses.service import ResponsesService
from chatllm.bridge.responses.shapes import ResponseMeta
from chatllm.bridge.responses.store import open_response_store
from chatllm.bridge.responses.stream import ResponsesStream
from chatllm.bridge.routes import JsonReply
from chatllm.bridge.state import CALLER, CONFIG, STATE, STATE_STORE, UPSTREAM

RESPONSES = web.AppKey("responses", ResponsesService)
INPUT_ITEMS_DEFAULT_LIMIT = 20
INPUT_ITEMS_MAX_LIMIT = 100


def owner(request: web.Request) -> str:
    """Whose responses a request may read and continue: the name of the token the bridge accepted; when the
    bridge checks none (the servers do), a digest of the credential presented; "" with no credential."""
    caller = request.get(CALLER)
    if caller is not None:
        return f"token:{caller.name}"
    presented = upstream_authorization(request)
    return "digest:" + hashlib.sha256(presented.encode()).hexdigest() if presented else ""


def _service(request: web.Request) -> ResponsesService:
    return request.app[RESPONSES]


async def create(request: web.Request, body: ResponseCreateRequest) -> JsonReply | web.StreamResponse:
    service = _service(request)
    who = owner(request)
    earlier = await service.conversation(body.previous_response_id, who) if body.previous_response_id else []
    input_items = [item_json(item) for item in body.input_items()]
    rid = request_id(request.headers.get("X-Request-Id"))
    upstream, authorization = request.app[UPSTREAM], upstream_authorization(request)
    model = body.model or await errors.rpc_reply(upstream.model_id(authorization))
    meta = ResponseMeta(body, model, who)
    generate = body.to_generate_request(rid, to_messages([*earlier, *input_items]))
    updates = relay(upstream, generate, "responses", authorization, request.app[STATE].calls)
    headers = {"X-Request-Id": rid}
    if body.background:
        queued = meta.response("queued")
        await service.save(queued, input_items, who)
        service.start_background(meta, input_items, updates, body.client_field)
        return JsonReply(ResponseObject.model_validate(queued), headers=headers)
    if body.stream:
        return await _stream(request, service, meta, input_items, updates, headers)
    response = meta.finished(await whole_answer(updates, body.client_field))
    if body.stored:
        await service.keep(response, input_items, who)
    return JsonReply(ResponseObject.model_validate(response), headers=headers)


async def _stream(
    request: web.Request,
    service: ResponsesService,
    meta: ResponseMeta,
    input_items: list[dict[str, Any]],
    updates: AsyncIterator[Any],
    headers: dict[str, str],
) -> web.StreamResponse:
    encoder = ResponsesStream(meta)
    sink = HttpSink(request, "text/event-stream", headers)
    try:
        await stream_answer(updates, encoder, sink, meta.body.client_field)
        if encoder.result is not None:
            if meta.body.stored:
                try:
                    await service.keep(encoder.result, input_items, meta.owner)
                except ApiError as err:  # --state-store-failure closed: the answer fails with the store
                    await sink.send(encoder.failure(err))
            await sink.send([encoder.last_event()])
        await sink.response.write_eof()
    except ConnectionResetError:
        pass  # the client left; the pipeline cancelled the gRPC call
    return sink.response


async def retrieve(request: web.Request) -> ResponseObject:
    _no_query(request)
    record = await _service(request).load(request.match_info["response_id"], owner(request))
    return ResponseObject.model_validate(record["response"])


async def delete(request: web.Request) -> ResponseDeleted:
    response_id = request.match_info["response_id"]
    await _service(request).delete(response_id, owner(request))
    return ResponseDeleted(id=response_id, object="response.deleted", deleted=True)


async def cancel(request: web.Request) -> ResponseObject:
    cancelled = await _service(request).cancel(request.match_info["response_id"], owner(request))
    return ResponseObject.model_validate(cancelled)


async def input_items(request: web.Request) -> InputItemList:
    """OpenAI's list: `limit` (1-100, default 20), `order` (desc by default), `after` (an item id)."""
    query = request.query
    unknown = set(query) - {"limit", "order", "after", "include", "include[]"}
    if unknown:
        raise errors.bad_request(sorted(unknown)[0], "not a supported query parameter", code="unsupported_field")
    if query.getall("include", []) or query.getall("include[]", []):
        raise errors.bad_request("include", "not supported: input items are listed as they were sent")
    limit = _limit(query.get("limit"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise errors.bad_request("order", "must be asc or desc")
    items = (await _service(request).load(request.match_info["response_id"], owner(request)))["input"]
    if order == "desc":
        items = items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise errors.bad_request("after", f"no input item {after!r} in this response")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return InputItemList(
        object="list",
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(items) > limit,
    )


def _limit(value: str | None) -> int:
    if value is None:
        return INPUT_ITEMS_DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= INPUT_ITEMS_MAX_LIMIT:
        raise errors.bad_request("limit", f"must be an integer from 1 to {INPUT_ITEMS_MAX_LIMIT}")
    return int(value)


def _no_query(request: web.Request) -> None:
    """GET /v1/responses/{id}?stream=true (resuming a background stream) is not offered: a 400, not ignored."""
    for name in request.query:
        raise errors.bad_request(name, "not supported: a stored response is fetched whole (poll it)")


async def responses_service(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the state store's): background responses get the shutdown grace on the way out."""
    settings = app[CONFIG]
    state = app[STATE_STORE]
    store = open_response_store(state, settings.state.responses_ttl, settings.state.responses_max_bytes)
    service = ResponsesService(store, settings.limits.shutdown_grace, state.policy.fail_closed)
    app[RESPONSES] = service
    yield
    await service.close()
