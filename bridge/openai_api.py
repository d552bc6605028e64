"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions (SSE ending in
`data: [DONE]` when streamed) and /v1/models, so the `openai` client and
LangChain's OpenAI classes work against the bridge."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from aiohttp import web

from chatllm.bridge import errors, fields
from chatllm.bridge.errors import ApiError
from chatllm.bridge.keys import CONFIG, STATE, UPSTREAM
from chatllm.bridge.openai_request import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    OpenAIRequest,
    RequestBuilder,
    chat_request,
    completion_request,
)
from chatllm.bridge.relay import Progress, relay, request_id

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
OWNER = "chatllm-serve"


def _finish(progress: Progress) -> str | None:
    """OpenAI knows stop and length; an aborted answer ended early, which clients read as stop."""
    reason = progress.finish_reason
    return None if reason is None else ("length" if reason == "length" else "stop")


class ChatShape:
    object_name, chunk_name, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"
    fields: Mapping[str, str] = CHAT_FIELDS
    build: RequestBuilder = staticmethod(chat_request)  # type: ignore[assignment]

    @staticmethod
    def whole(progress: Progress, echo: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": progress.text}
        return {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(progress)}

    @staticmethod
    def piece(text: str | None, finish: str | None, first: bool) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": "assistant", "content": text or ""} if first else {}
        if text and not first:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


class CompletionShape:
    object_name, chunk_name, id_prefix = "text_completion", "text_completion", "cmpl"
    fields: Mapping[str, str] = COMPLETION_FIELDS
    build: RequestBuilder = staticmethod(completion_request)  # type: ignore[assignment]

    @staticmethod
    def whole(progress: Progress, echo: str) -> dict[str, Any]:
        return {"index": 0, "text": echo + progress.text, "logprobs": None, "finish_reason": _finish(progress)}

    @staticmethod
    def piece(text: str | None, finish: str | None, first: bool) -> dict[str, Any]:
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}


Shape = type[ChatShape] | type[CompletionShape]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, ChatShape)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, CompletionShape)


async def list_models(request: web.Request) -> web.Response:
    data = [_model_card(m.id) for m in (await _models(request)).models]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    wanted = request.match_info["model"]
    for model in (await _models(request)).models:
        if model.id == wanted:
            return web.json_response(_model_card(model.id))
    raise ApiError(
        404, f"model: {wanted!r} is not served here", "not_found_error", param="model", code="model_not_found"
    )


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": OWNER}


async def _models(request: web.Request) -> Any:
    _require_api(request)
    try:
        return await request.app[UPSTREAM].list_models(request.headers.get("Authorization"))
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc(exc) from None


def _require_api(request: web.Request) -> None:
    if request.app[CONFIG].bridge.no_api:
        raise web.HTTPNotFound(text="the API is disabled on this server (--no-api)")


async def _complete(request: web.Request, shape: Shape) -> web.StreamResponse:
    _require_api(request)
    rid = request_id(request.headers.get("X-Request-Id"))
    spec = shape.build(fields.json_object(await request.read()), rid)
    upstream, authorization = request.app[UPSTREAM], request.headers.get("Authorization")
    try:
        model = await upstream.model_id(authorization)
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc(exc) from None
    created = int(time.time())
    whole_envelope = {"id": f"{shape.id_prefix}-{rid}", "object": shape.object_name, "created": created, "model": model}
    chunk_envelope = {**whole_envelope, "object": shape.chunk_name}
    updates = relay(upstream, spec.generate, "openai", authorization, request.app[STATE].calls)
    async with contextlib.aclosing(updates):
        try:
            progress = await anext(updates)
            if not spec.stream:
                async for progress in updates:  # noqa: B007 - the last one is the answer
                    pass
                body = {
                    **whole_envelope,
                    "choices": [shape.whole(progress, spec.echo)],
                    "usage": progress.usage(),
                }
                return web.json_response(body, headers={"X-Request-Id": rid})
        except StopAsyncIteration:
            raise ApiError(502, "the upstream server ended the answer early", "upstream_error") from None
        except grpc.aio.AioRpcError as exc:
            raise errors.from_rpc(exc, shape.fields) from None
        response = web.StreamResponse(headers={**STREAM_HEADERS, "X-Request-Id": rid})
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # client gone: leaving `async with` cancels the call
            await _stream(response, updates, progress, shape, spec, chunk_envelope)
        return response


async def _stream(
    response: web.StreamResponse,
    updates: AsyncIterator[Progress],
    progress: Progress,
    shape: Shape,
    spec: OpenAIRequest,
    envelope: dict[str, Any],
) -> None:
    usage_field = {"usage": None} if spec.include_usage else {}

    async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
        event = {**envelope, "choices": choices, **usage_field, **extra}
        await response.write(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")

    await send([shape.piece(spec.echo, None, first=True)])
    try:
        while True:
            if progress.delta:
                await send([shape.piece(progress.delta, None, first=False)])
            if progress.final is not None:
                await send([shape.piece(None, _finish(progress), first=False)])
                if spec.include_usage:
                    await send([], usage=progress.usage())
                break
            progress = await anext(updates)
    except grpc.aio.AioRpcError as exc:
        error = errors.from_rpc(exc, shape.fields)
        await response.write(b"data: " + json.dumps(error.body(), ensure_ascii=False).encode() + b"\n\n")
    except StopAsyncIteration:
        pass
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
