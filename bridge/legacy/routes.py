"""The legacy protocol's route: POST on any path (the catch-all, last in the table)."""

from __future__ import annotations

from chatllm.bridge.errors import GENERATION_ERRORS
from chatllm.bridge.legacy.handler import handle_post
from chatllm.bridge.legacy.replies import LegacyReply
from chatllm.bridge.legacy.request import LegacyRequest
from chatllm.bridge.routes import (
    JSON,
    NUL_DELIMITED,
    SSE,
    Auth,
    EventStream,
    Json,
    NulStream,
    Raw,
    Reply,
    RequestBody,
    Route,
    Surface,
)

PROTOCOL = """The PAI-EAS ChatLLM protocol. A body that is not JSON (or sent as text/plain) is the prompt itself.
Without `use_stream_chat` (or with false): one LegacyReply. With `use_stream_chat: true`: a stream of
LegacyReply objects, each followed by one NUL byte (`\\u0000`), `response` being the whole answer so far
(or only its new text with `stream_mode: delta`); with `Accept: text/event-stream` the same objects come as
SSE `data:` events. A failure before the first object keeps its HTTP status; a failure mid-stream ends the
stream with one Error object."""
LEGACY_POST = Route(
    "POST",
    "/{tail:.*}",
    "legacy",
    handle_post,
    "legacyChat",
    "legacy",
    "Ask a question (PAI-EAS ChatLLM: JSON or plain text; one reply, NUL-delimited or SSE stream)",
    {
        200: Reply(
            "the answer: one LegacyReply (JSON), NUL-delimited LegacyReply objects (text/plain) or LegacyReply "
            "objects as SSE data events (text/event-stream)",
            {JSON: Json(LegacyReply), NUL_DELIMITED: NulStream(LegacyReply), SSE: EventStream(LegacyReply)},
        )
    },
    GENERATION_ERRORS,
    auth=Auth.SIGNED,
    surface=Surface.API,
    body=RequestBody(
        {JSON: Json(LegacyRequest), "text/plain": Raw({"type": "string"})},
        "a LegacyRequest, or the prompt itself as text/plain",
    ),
    description=PROTOCOL,
    request_id=True,
    also_at=("/",),
)
