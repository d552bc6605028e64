"""`POST /` (on any path): the legacy HTTP protocol.

Non-stream: one JSON object `{"response", "history", "usage"}`. Stream
(`use_stream_chat` true): the same objects with the cumulative `response`, each
followed by one NUL byte, or as SSE `data:` events when the client accepts
`text/event-stream`. Nothing is buffered: each upstream delta is written (and
the socket drained) as it arrives. A failure before the first token keeps its
HTTP status; a failure mid-stream is sent as a last `{"error": ...}` object.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from aiohttp import web

from chatllm.bridge import errors
from chatllm.bridge.errors import ApiError
from chatllm.bridge.keys import CONFIG, STATE, UPSTREAM
from chatllm.bridge.legacy_request import LEGACY_FIELDS, LegacyRequest, from_http_body
from chatllm.bridge.relay import Progress, relay, request_id

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering either


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def reply_object(legacy: LegacyRequest, history: list[tuple[str, str]], progress: Progress) -> dict[str, Any]:
    """The legacy reply: the answer so far, the history including this round, usage (+ sources)."""
    reply: dict[str, Any] = {
        "response": progress.text,
        "history": [[q, a] for q, a in history] + [[legacy.prompt, progress.text]],
        "usage": progress.usage(),
    }
    if progress.final is not None and (progress.final.sources or legacy.knowledge_base is not None):
        reply["sources"] = progress.sources()  # [] with `langchain` when nothing passed --kb-min-score
    return reply


def nul_delimited(obj: dict[str, Any]) -> bytes:
    return dumps(obj).encode() + b"\0"


def server_sent_event(obj: dict[str, Any]) -> bytes:
    return b"data: " + dumps(obj).encode() + b"\n\n"  # json.dumps never emits a raw newline


async def handle_post(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    if config.no_api:
        raise web.HTTPNotFound(text="the API is disabled on this server (--no-api)")
    legacy = from_http_body(await request.read(), request.content_type)
    wants_sse = "text/event-stream" in request.headers.get("Accept", "")
    # No `use_stream_chat`: one JSON reply, which the seed's curl and LangChain's PaiEasEndpoint
    # expect; asking for SSE in Accept is asking for a stream.
    stream = legacy.stream if legacy.stream is not None else wants_sse
    history = legacy.history or []
    rid = request_id(request.headers.get("X-Request-Id"))
    protocol = "sse" if stream and wants_sse else "http"
    grpc_request = legacy.to_grpc("http", rid, history)
    authorization = request.headers.get("Authorization")
    updates = relay(request.app[UPSTREAM], grpc_request, protocol, authorization, request.app[STATE].calls)
    async with contextlib.aclosing(updates):
        try:
            progress = await _first(updates)
            if not stream:
                async for progress in updates:  # noqa: B007 - the last one is the answer
                    pass
                body = dumps(reply_object(legacy, history, progress))
                return web.Response(text=body, content_type="application/json", headers={"X-Request-Id": rid})
        except grpc.aio.AioRpcError as exc:
            raise errors.from_rpc(exc, LEGACY_FIELDS) from None
        encode = server_sent_event if protocol == "sse" else nul_delimited
        response = web.StreamResponse(headers={**STREAM_HEADERS, "X-Request-Id": rid})
        response.content_type = "text/event-stream" if protocol == "sse" else "text/plain"
        response.charset = "utf-8"
        await response.prepare(request)
        return await _stream(response, updates, progress, encode, lambda p: reply_object(legacy, history, p))


async def _first(updates: AsyncIterator[Progress]) -> Progress:
    try:
        return await anext(updates)
    except StopAsyncIteration:
        raise ApiError(502, "the upstream server ended the answer without a final message", "upstream_error") from None


async def _stream(
    response: web.StreamResponse,
    updates: AsyncIterator[Progress],
    first: Progress,
    encode: Callable[[dict[str, Any]], bytes],
    shape: Callable[[Progress], dict[str, Any]],
) -> web.StreamResponse:
    try:
        try:
            await response.write(encode(shape(first)))
            async for progress in updates:
                await response.write(encode(shape(progress)))
        except grpc.aio.AioRpcError as exc:
            await response.write(encode(errors.from_rpc(exc, LEGACY_FIELDS).body()))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left; leaving the caller's `async with` cancels the gRPC call
    return response
