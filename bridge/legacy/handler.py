"""`POST /` (on any path): the legacy HTTP protocol.

Non-stream: one JSON object `{"response", "history", "usage"}`. Stream
(`use_stream_chat` true): the same objects, each followed by one NUL byte, or as
SSE `data:` events when the client accepts `text/event-stream`. `response` is the
whole answer so far (`cumulative`, what the PAI-EAS ChatLLM examples read) or only
the new text (`delta`, LangChain's PAI-EAS classes): `--legacy-stream`, or the
request's `stream_mode`. `history` includes this round as generated so far in both.
The answer pipeline (chatllm.bridge.answer) owns relaying, coalescing and the failure
rules; the route (routes.py) is in the route table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from chatllm.bridge.answer.pipeline import ChoiceChange, http_stream, whole_answer
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.answer.relay import relay, request_id
from chatllm.bridge.errors import ApiError
from chatllm.bridge.legacy.replies import LegacyReply
from chatllm.bridge.legacy.request import LegacyRequest, from_http_body
from chatllm.bridge.middleware import upstream_authorization
from chatllm.bridge.priority import apply_header
from chatllm.bridge.routes import JsonReply
from chatllm.bridge.state import CONFIG, STATE, UPSTREAM


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def nul_delimited(obj: dict[str, Any]) -> bytes:
    return dumps(obj).encode() + b"\0"


def server_sent_event(obj: dict[str, Any]) -> bytes:
    return b"data: " + dumps(obj).encode() + b"\n\n"  # json.dumps never emits a raw newline


class LegacyReplies:
    """The legacy reply objects of one request: the answer (so far or its new piece), the
    history including this round, usage (+ sources once known). Built as plain dicts: a stream
    sends one per token (LegacyReply describes them)."""

    def __init__(self, legacy: LegacyRequest, history: list[tuple[str, str]], delta: bool) -> None:
        self.legacy = legacy
        self.history = [[q, a] for q, a in history]
        self.delta = delta

    def reply(self, progress: Progress, new_text: str | None = None, last: bool = True) -> dict[str, Any]:
        """`new_text` is what this object adds (delta mode; None: the whole answer); only the `last`
        object carries the sources (the final message may have arrived while an earlier one was sent)."""
        reply: dict[str, Any] = {
            "response": progress.text if new_text is None or not self.delta else new_text,
            "history": [*self.history, [self.legacy.prompt, progress.text]],
            "usage": progress.usage(),
        }
        if last and progress.final is not None and (progress.final.sources or self.legacy.knowledge_base is not None):
            reply["sources"] = progress.sources()  # [] with `langchain` when nothing passed --kb-min-score
        return reply


class LegacyStream:
    """Encoder of the NUL-delimited and SSE streams: one reply object per update."""

    def __init__(self, replies: LegacyReplies, frame: Callable[[dict[str, Any]], bytes]) -> None:
        self.replies = replies
        self.frame = frame

    def opening(self, progress: Progress) -> list[bytes]:
        return []

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        new_text = "".join(c.text for c in changes if c.index == 0)
        return [self.frame(self.replies.reply(progress, new_text, last=False))]

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[bytes]:
        new_text = "".join(c.text for c in changes if c.index == 0)
        return [self.frame(self.replies.reply(progress, new_text, last=True))]

    def failure(self, error: ApiError) -> list[bytes]:
        return [self.frame(error.body())]


async def handle_post(request: web.Request) -> JsonReply | web.StreamResponse:
    legacy = from_http_body(await request.read(), request.content_type)
    wants_sse = "text/event-stream" in request.headers.get("Accept", "")
    # No `use_stream_chat`: one JSON reply, which the original service's curl examples and LangChain's
    # PaiEasEndpoint expect; asking for SSE in Accept is asking for a stream.
    stream = legacy.stream if legacy.stream is not None else wants_sse
    history = legacy.history_pairs() or []
    rid = request_id(request.headers.get("X-Request-Id"))
    protocol = "sse" if stream and wants_sse else "http"
    grpc_request = legacy.to_generate_request("http", rid, history)
    apply_header(grpc_request, request.headers)
    authorization = upstream_authorization(request)
    updates = relay(request.app[UPSTREAM], grpc_request, protocol, authorization, request.app[STATE].calls)
    delta = (legacy.stream_mode or request.app[CONFIG].bridge.legacy_stream) == "delta"
    replies = LegacyReplies(legacy, history, delta)
    client_field = legacy.client_field
    headers = {"X-Request-Id": rid}
    if not stream:
        progress = await whole_answer(updates, client_field)
        return JsonReply(LegacyReply.model_validate(replies.reply(progress)), headers=headers)
    frame = server_sent_event if protocol == "sse" else nul_delimited
    content_type = "text/event-stream" if protocol == "sse" else "text/plain"
    return await http_stream(request, updates, LegacyStream(replies, frame), content_type, headers, client_field)
