"""The one answer pipeline: upstream updates in, one protocol's chunks out.

Every protocol (legacy JSON, NUL stream, legacy SSE, OpenAI SSE / JSON, WebSocket) runs
its answers through `stream_answer` / `whole_answer` and supplies only an `Encoder`. The
behaviour is the same everywhere:

- A failure before anything was sent raises ApiError: HTTP answers with its status, the
  WebSocket sends the encoder's failure frames.
- A failure mid-stream ends the stream with the encoder's failure chunks (an error object,
  then the protocol's terminator: `[DONE]`, `<EOS>`), never a cut connection.
- Upstream ending without a final message is a failure like any other (502,
  `incomplete_answer`): a client never mistakes a cut answer for a complete one.
- Reading upstream and writing to the client are decoupled: when a client reads slower than
  tokens arrive, what piled up goes out as one chunk (no message is lost: deltas are joined,
  cumulative protocols send the latest state; the last one is always sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc
from aiohttp import web

from chatllm.bridge import errors
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.errors import ApiError
from chatllm.proto import pb

Chunk = TypeVar("Chunk", bytes, str)
FieldNamer = Callable[[str], str]
# No buffering on the way (proxies included): each chunk leaves as soon as it is written.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class ChoiceChange:
    """What one choice gained since it was last written to the client."""

    index: int
    text: str = ""
    logprobs: Sequence[pb.TokenLogprob] = ()
    tool_calls: Sequence[pb.ToolCallDelta] = ()
    finish_reason: str | None = None  # set once, when the choice ended


class Encoder(Protocol[Chunk]):
    """How one protocol writes an answer. Each method returns the chunks to send, in order."""

    def opening(self, progress: Progress) -> list[Chunk]:
        """Before the first update (e.g. OpenAI's role chunk)."""
        ...

    def update(self, progress: Progress, changes: list[ChoiceChange]) -> list[Chunk]:
        """New text / logprobs / tool calls (possibly several upstream messages' worth)."""
        ...

    def closing(self, progress: Progress, changes: list[ChoiceChange]) -> list[Chunk]:
        """The last changes with the final message (usage, sources), then the terminator."""
        ...

    def failure(self, error: ApiError) -> list[Chunk]:
        """An error mid-stream (or before the first chunk, on the WebSocket), then the terminator."""
        ...


class Sink(Protocol[Chunk]):
    async def start(self) -> None:
        """Called once, before the first chunk (HTTP: send the status and headers)."""
        ...

    async def send(self, chunks: list[Chunk]) -> None: ...


@dataclass
class _Cursor:
    """What of each choice has been written so far."""

    text: dict[int, int] = field(default_factory=dict)
    logprobs: dict[int, int] = field(default_factory=dict)
    tool_calls: dict[int, int] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)

    def take(self, progress: Progress) -> list[ChoiceChange]:
        changes = []
        for index, choice in sorted(progress.choices.items()):
            text_at, logprobs_at, tools_at = (
                self.text.get(index, 0),
                self.logprobs.get(index, 0),
                self.tool_calls.get(index, 0),
            )
            ended = choice.finish_reason is not None and index not in self.finished
            if not (len(choice.text) > text_at or len(choice.logprobs) > logprobs_at or ended):
                if len(choice.tool_calls) <= tools_at:
                    continue
            changes.append(
                ChoiceChange(
                    index,
                    choice.text[text_at:],
                    choice.logprobs[logprobs_at:],
                    choice.tool_calls[tools_at:],
                    choice.finish_reason if ended else None,
                )
            )
            self.text[index], self.logprobs[index] = len(choice.text), len(choice.logprobs)
            self.tool_calls[index] = len(choice.tool_calls)
            if ended:
                self.finished.add(index)
        return changes


def incomplete() -> ApiError:
    return errors.upstream_failed("the upstream server ended the answer without a final message", "incomplete_answer")


class _Pump:
    """Reads upstream in its own task, so a slow client never holds the gRPC stream back."""

    def __init__(self, updates: AsyncIterator[Progress], client_field: FieldNamer | None) -> None:
        self.progress = Progress()
        self.done = False
        self.error: ApiError | None = None
        self._client_field = client_field
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(updates))

    async def _run(self, updates: AsyncIterator[Progress]) -> None:
        try:
            async with contextlib.aclosing(updates):  # type: ignore[type-var]
                async for progress in updates:
                    self.progress = progress
                    self._changed.set()
            if self.progress.final is None:
                self.error = incomplete()
        except grpc.aio.AioRpcError as exc:
            self.error = errors.from_rpc(exc, self._client_field)
        except ApiError as err:
            self.error = err
        finally:
            self.done = True
            self._changed.set()

    async def wait(self) -> None:
        """Until something new arrived (or upstream ended)."""
        await self._changed.wait()
        self._changed.clear()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def whole_answer(updates: AsyncIterator[Progress], client_field: FieldNamer | None = None) -> Progress:
    """The complete answer (non-streaming replies); ApiError when it failed or came incomplete."""
    pump = _Pump(updates, client_field)
    try:
        while not pump.done:
            await pump.wait()
    finally:
        await pump.close()
    if pump.error is not None:
        raise pump.error
    return pump.progress


async def stream_answer(
    updates: AsyncIterator[Progress],
    encoder: Encoder[Chunk],
    sink: Sink[Chunk],
    client_field: FieldNamer | None = None,
) -> Progress | None:
    """Stream an answer; returns the complete Progress, or None when it failed mid-stream.

    Raises ApiError when it failed before anything was sent (the caller answers with it)."""
    pump = _Pump(updates, client_field)
    cursor = _Cursor()
    try:
        await pump.wait()
        if pump.error is not None and not pump.progress.choices:
            raise pump.error
        await sink.start()
        await sink.send(encoder.opening(pump.progress))
        while True:
            changes = cursor.take(pump.progress)
            if pump.done and pump.error is not None:
                if changes:
                    await sink.send(encoder.update(pump.progress, changes))
                await sink.send(encoder.failure(pump.error))
                return None
            if pump.done:
                await sink.send(encoder.closing(pump.progress, changes))
                return pump.progress
            if changes:
                await sink.send(encoder.update(pump.progress, changes))
            await pump.wait()
    finally:
        await pump.close()


class HttpSink:
    """An HTTP streaming response (NUL-delimited or SSE), prepared when the first chunk is ready."""

    def __init__(self, request: web.Request, content_type: str, headers: dict[str, str]) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={**STREAM_HEADERS, **headers})
        self.response.content_type = content_type
        self.response.charset = "utf-8"

    async def start(self) -> None:
        await self.response.prepare(self.request)

    async def send(self, chunks: list[bytes]) -> None:
        if chunks:
            await self.response.write(b"".join(chunks))


class WebSocketSink:
    """WebSocket text frames (the connection is already open)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def start(self) -> None:
        return None

    async def send(self, chunks: list[str]) -> None:
        for chunk in chunks:
            await self.ws.send_str(chunk)


async def http_stream(
    request: web.Request,
    updates: AsyncIterator[Progress],
    encoder: Encoder[bytes],
    content_type: str,
    headers: dict[str, str],
    client_field: FieldNamer | None = None,
) -> web.StreamResponse:
    """Stream an answer over HTTP; a failure before the first chunk raises ApiError (its own status)."""
    sink = HttpSink(request, content_type, headers)
    try:
        await stream_answer(updates, encoder, sink, client_field)
        await sink.response.write_eof()
    except ConnectionResetError:
        pass  # the client left; the pump's close cancelled the gRPC call
    return sink.response
