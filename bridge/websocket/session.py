"""The legacy WebSocket protocol (`GET /` with Upgrade, on any path).

Each client frame is a legacy request (JSON, or a bare prompt). Frames are
answered strictly in order, one at a time: streamed deltas as text frames (or
one frame with the whole answer when `use_stream_chat` is false), then a frame
that is exactly `<EOS>`; with `langchain: true`, a `{"sources": [...]}` frame
comes just before `<EOS>`. A failed round sends one `{"error": ...}` frame, then
`<EOS>`, so clients that read until `<EOS>` never hang. The connection keeps its
own history (a frame that carries `history` replaces it), trimmed to max_round by --max-round-trim's rule.
Closing the socket mid-answer cancels that answer's gRPC call.

`"stream_format": "events"` (an extension the web page uses) turns the frames of
that answer into JSON: `{"delta": "..."}` per delta, then one `{"final": {...}}`
with finish reason, usage, timings and sources, then `<EOS>` as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from aiohttp import WSCloseCode, WSMsgType, web

from chatllm.bridge import errors, metrics
from chatllm.bridge.answer.pipeline import Encoder, WebSocketSink, stream_answer
from chatllm.bridge.answer.relay import InFlightCalls, relay, request_id
from chatllm.bridge.errors import ApiError
from chatllm.bridge.legacy.request import from_text_or_json
from chatllm.bridge.middleware import upstream_authorization
from chatllm.bridge.priority import apply_header, header_priority
from chatllm.bridge.settings import BridgeSettings
from chatllm.bridge.state import CONFIG, STATE, UPSTREAM
from chatllm.bridge.upstream import Upstream
from chatllm.bridge.websocket.frames import EOS, EventFrames, TextFrames
from chatllm.kernel.history_window import trim_history

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # server pings this often; no pong within half of it closes the socket
_DRAIN = object()  # wakes an idle worker when the server shuts down


class WebSocketSession:
    """One connection: a reader that queues frames and a worker that answers them in order."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        config: BridgeSettings,
        upstream: Upstream,
        authorization: str | None,
        calls: InFlightCalls,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.ws = ws
        self.headers = headers or {}  # the handshake's: its X-Priority applies to every frame
        self.calls = calls
        self.config = config
        self.upstream = upstream
        self.authorization = authorization
        self.history: list[tuple[str, str]] = []
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize=config.limits.ws_max_pending)
        self.draining = False

    def drain(self) -> None:
        """Finish the answer in progress, then close with 1001 (going away)."""
        self.draining = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_DRAIN)

    async def run(self) -> None:
        worker = asyncio.create_task(self._answer_in_order())
        close_code, close_reason = WSCloseCode.OK, b""
        try:
            async for message in self.ws:
                if message.type is WSMsgType.TEXT:
                    text: str | None = message.data
                elif message.type is WSMsgType.BINARY:
                    text = _utf8_or_none(message.data)
                else:
                    break
                try:
                    self.queue.put_nowait(text)
                except asyncio.QueueFull:
                    close_code = WSCloseCode.TRY_AGAIN_LATER
                    close_reason = (
                        f"more than {self.config.limits.ws_max_pending} prompts pending; wait for <EOS>".encode()
                    )
                    break
        finally:
            worker.cancel()  # a close mid-answer cancels the answer (and so its gRPC call)
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await worker
            if not self.ws.closed:
                await self.ws.close(code=close_code, message=close_reason)

    async def _answer_in_order(self) -> None:
        while True:
            item = await self.queue.get()
            if item is not _DRAIN:
                try:
                    await self._answer(item if isinstance(item, str) else None)
                except (asyncio.CancelledError, ConnectionResetError):
                    raise
                except Exception:
                    # A bug must not kill the worker: the client would wait for <EOS> forever.
                    log.exception("unexpected error answering a WebSocket frame")
                    await self._fail(errors.internal_error())
            if self.draining:
                await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                return

    async def _answer(self, text: str | None) -> None:
        try:
            if text is None:
                raise errors.bad_request("frame", "binary frames must be UTF-8 text", code="invalid_encoding")
            legacy = from_text_or_json(text)
        except ApiError as err:
            await self._fail(err)
            return
        if legacy.history is not None:
            self.history = self._trim(legacy.history_pairs() or [])
        stream = legacy.stream if legacy.stream is not None else True
        request = legacy.to_generate_request("ws", request_id(None), self.history)
        apply_header(request, self.headers)
        updates = relay(self.upstream, request, "ws", self.authorization, self.calls)
        encoder: Encoder[str] = (
            EventFrames() if legacy.events else TextFrames(stream, legacy.knowledge_base is not None)
        )
        try:
            progress = await stream_answer(updates, encoder, WebSocketSink(self.ws), legacy.client_field)
        except ApiError as err:
            await self._fail(err)
            return
        if progress is None:
            metrics.WEBSOCKET_MESSAGES.labels("error").inc()
            return
        self.history = self._trim([*self.history, (legacy.prompt, progress.text)])
        metrics.WEBSOCKET_MESSAGES.labels("ok").inc()

    async def _fail(self, error: ApiError) -> None:
        metrics.WEBSOCKET_MESSAGES.labels(str(error.status)).inc()
        await self.ws.send_str(error.frame())
        await self.ws.send_str(EOS)

    def _trim(self, history: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return trim_history(history, self.config.history.max_round, self.config.history.max_round_trim)


def _utf8_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def handle_websocket(request: web.Request, page: bool = False) -> web.StreamResponse:
    """The WebSocket API; `page` is the web page's own socket (/api/chat), which --no-api keeps."""
    config, state = request.app[CONFIG], request.app[STATE]
    if config.bridge.no_api and not page:
        raise web.HTTPNotFound(text="the API is disabled on this server (--no-api)")
    if state.draining:
        raise errors.unavailable("server is shutting down; reconnect to another replica", code="draining")
    if len(state.websockets) >= config.limits.ws_max_connections:
        raise errors.unavailable(
            f"too many WebSocket connections (limit {config.limits.ws_max_connections})", code="busy"
        )
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=config.limits.max_body_bytes, compress=False)
    authorization = upstream_authorization(request)
    header_priority(request.headers)  # a bad X-Priority is refused at the handshake, not on each frame
    session = WebSocketSession(ws, config, request.app[UPSTREAM], authorization, state.calls, request.headers)
    state.websockets.add(session)  # before the first await, so the limit cannot be overshot
    metrics.WEBSOCKET_CONNECTIONS.inc()
    try:
        await ws.prepare(request)
        await session.run()
    finally:
        state.websockets.discard(session)
        metrics.WEBSOCKET_CONNECTIONS.dec()
    return ws
