"""The traffic of the soak test (bench/soak.py): one coroutine per way a client can talk to
the stack, each returning what happened to it, and a seeded generator of hostile inputs.

Every client call here has its own time limit: a call that outlives it is reported as hung,
never waited on forever.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

from chatllm.clients import AsyncChatClient
from chatllm.proto import SERVICE_NAME, pb
from tests.hostile_payloads import deep_struct_request

EOS = "<EOS>"
PROMPT = "Count slowly from one to one hundred, one number per line."


@dataclass
class Outcome:
    """One client call: its protocol, HTTP-like status (200 answered, 4xx/5xx refused or failed,
    0 for a transport failure, -1 hung), seconds until the status was known, tokens received."""

    protocol: str
    status: int
    seconds: float
    completion_tokens: int = 0
    detail: str = ""

    @property
    def hung(self) -> bool:
        return self.status == -1

    @property
    def refused(self) -> bool:
        return self.status in (429, 503)


GRPC_STATUS = {  # the bridge's table, for reading gRPC outcomes in the same terms
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}


FINISH_STATUS = {pb.FINISH_REASON_ERROR: 500, pb.FINISH_REASON_ABORT: 499, pb.FINISH_REASON_UNSPECIFIED: 0}


def grpc_status(code: grpc.StatusCode) -> int:
    return GRPC_STATUS.get(code, 500)  # INTERNAL, UNKNOWN, DATA_LOSS...: the server's fault


def generation_body(tokens: int, stream: bool) -> dict[str, Any]:
    return {"prompt": PROMPT, "use_stream_chat": stream, "max_new_tokens": tokens, "ignore_eos": True}


async def http_generate(session: aiohttp.ClientSession, url: str, tokens: int, limit: float) -> Outcome:
    """A non-streaming legacy POST /."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            async with session.post(url + "/", json=generation_body(tokens, stream=False)) as response:
                body = await response.json(content_type=None)
                usage = body.get("usage", {}) if response.status == 200 else {}
                return Outcome("http", response.status, time.monotonic() - started, usage.get("completion_tokens", 0))
    except TimeoutError:
        return Outcome("http", -1, time.monotonic() - started)
    except aiohttp.ClientError as exc:
        return Outcome("http", 0, time.monotonic() - started, detail=repr(exc))


async def http_stream(
    session: aiohttp.ClientSession, url: str, tokens: int, limit: float, started_event: asyncio.Event | None = None
) -> Outcome:
    """The NUL-delimited legacy stream, read to its end."""
    started = time.monotonic()
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(limit):
            async with session.post(url + "/", json=generation_body(tokens, stream=True)) as response:
                if response.status != 200:
                    return Outcome("http-stream", response.status, time.monotonic() - started)
                buffer = b""
                async for block in response.content.iter_any():
                    buffer += block
                    *objects, buffer = buffer.split(b"\0")
                    for raw in objects:
                        last = json.loads(raw)
                        if started_event is not None:
                            started_event.set()
        if "error" in last:
            return Outcome("http-stream", int(last["error"].get("status", 500)), time.monotonic() - started)
        tokens_done = last.get("usage", {}).get("completion_tokens", 0)
        return Outcome("http-stream", 200, time.monotonic() - started, tokens_done)
    except TimeoutError:
        return Outcome("http-stream", -1, time.monotonic() - started)
    except aiohttp.ClientError as exc:  # the connection cut mid-stream: a dropped answer
        return Outcome("http-stream", 0, time.monotonic() - started, detail=repr(exc))


async def websocket_stream(session: aiohttp.ClientSession, url: str, tokens: int, limit: float) -> Outcome:
    """One legacy WebSocket round in the events format (so the final frame carries usage)."""
    started = time.monotonic()
    body = generation_body(tokens, stream=True) | {"stream_format": "events"}
    final: dict[str, Any] = {}
    try:
        async with asyncio.timeout(limit):
            async with session.ws_connect(url.replace("http", "ws", 1) + "/") as ws:
                await ws.send_str(json.dumps(body))
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    if message.data == EOS:
                        break
                    final = json.loads(message.data)
        if "error" in final:
            return Outcome("websocket", int(final["error"].get("status", 500)), time.monotonic() - started)
        if "final" not in final:
            return Outcome("websocket", 0, time.monotonic() - started, detail="closed before the final frame")
        usage = final["final"].get("usage", {})
        return Outcome("websocket", 200, time.monotonic() - started, usage.get("completion_tokens", 0))
    except TimeoutError:
        return Outcome("websocket", -1, time.monotonic() - started)
    except aiohttp.ClientError as exc:
        return Outcome("websocket", 0, time.monotonic() - started, detail=repr(exc))


async def grpc_stream(client: AsyncChatClient, tokens: int, limit: float) -> Outcome:
    started = time.monotonic()
    final = pb.GenerateFinal()
    try:
        async with asyncio.timeout(limit):
            async for response in client.stream(PROMPT, max_new_tokens=tokens, ignore_eos=True, timeout=limit + 30):
                if response.HasField("final"):
                    final = response.final
        status = FINISH_STATUS.get(final.finish_reason, 200)
        return Outcome("grpc", status, time.monotonic() - started, final.usage.completion_tokens, final.message)
    except TimeoutError:
        return Outcome("grpc", -1, time.monotonic() - started)
    except grpc.aio.AioRpcError as exc:
        return Outcome("grpc", grpc_status(exc.code()), time.monotonic() - started, detail=exc.details() or "")


# ------------------------------------------------------------------ mid-stream disconnects
async def disconnect_http(session: aiohttp.ClientSession, url: str, tokens: int, accept: str) -> None:
    """Read the first chunk of a NUL (or SSE) stream, then drop the connection."""
    headers = {"Accept": accept}
    async with session.post(url + "/", json=generation_body(tokens, stream=True), headers=headers) as response:
        await response.content.readany()
        response.close()  # closes the socket, not just the body: the bridge sees the client go


async def disconnect_websocket(session: aiohttp.ClientSession, url: str, tokens: int) -> None:
    async with session.ws_connect(url.replace("http", "ws", 1) + "/") as ws:
        await ws.send_str(json.dumps(generation_body(tokens, stream=True)))
        await ws.receive()
        await ws.close(code=1000)


async def disconnect_grpc(client: AsyncChatClient, tokens: int, deadline: float | None) -> None:
    """Cancel after the first message, or (with `deadline`) let a gRPC deadline end the call."""
    call = client.stream(PROMPT, max_new_tokens=tokens, ignore_eos=True, timeout=deadline)
    try:
        async for _ in call:
            if deadline is None:
                break
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        call.cancel()


# ------------------------------------------------------------------ hostile inputs
FIELDS = [
    "prompt", "system_prompt", "history", "max_new_tokens", "use_stream_chat", "temperature", "top_k",
    "top_p", "do_sample", "stop", "langchain", "seed", "repetition_penalty", "ignore_eos", "max_round",
]  # fmt: skip


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [
        None, True, False, "True", "", "x" * rng.randint(1, 3000), -1, 0, 7, 2**31, 2**63, -(2**70), 1e308,
        -0.0, 0.5, "NaN", "\u202e\u0000\ud7ff", "提示", [], {}, [["a", "b"]], [["a"]], [[1, 2]], ["a", None],
    ]  # fmt: skip
    if depth < 2 and rng.random() < 0.2:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 2 and rng.random() < 0.1:
        return {rng.choice(FIELDS): hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(choices)


def hostile_object(rng: random.Random) -> dict[str, Any]:
    fields = rng.sample(FIELDS, rng.randint(0, len(FIELDS)))
    value = {name: hostile_value(rng) for name in fields}
    if "max_new_tokens" in value and isinstance(value["max_new_tokens"], int):
        value["max_new_tokens"] = value["max_new_tokens"] % 64  # a valid count must not cost minutes
    return value


DEEP_LEVELS = (129, 1_000, 200_000)  # just past the bridge's limit, deep, and far past Python's recursion limit


def deep_json(rng: random.Random, field: str = "history") -> str:
    """A JSON object whose `field` nests arrays or objects many levels deep (the decoder recurses per level)."""
    depth = rng.choice(DEEP_LEVELS)
    opener, closer = rng.choice([("[", "]"), ('{"a": ', "}")])
    return '{"prompt": "hi", "' + field + '": ' + opener * depth + "1" + closer * depth + "}"


def deep_form(rng: random.Random) -> tuple[bytes, str]:
    """A knowledge-base upload whose form fields carry deep JSON: as a value, a field name, a document."""
    deep = deep_json(rng).encode()
    name = rng.choice(["meta", "[" * rng.choice(DEEP_LEVELS)])
    parts = [(name, None, deep), ("file", "deep.txt", deep[:60_000])]
    boundary = "soak-boundary"
    body = b""
    for field, filename, value in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def hostile_body(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return deep_json(rng, rng.choice(FIELDS)).encode()
    if kind < 0.6:
        return json.dumps(hostile_object(rng)).encode()
    if kind < 0.8:
        return rng.randbytes(rng.randint(0, 400))
    text = json.dumps(hostile_object(rng))
    return text[: rng.randint(0, len(text))].encode()  # cut short


async def fuzz_http(session: aiohttp.ClientSession, url: str, rng: random.Random, limit: float) -> Outcome:
    path = rng.choice(["/", "/", "/v1/chat/completions", "/v1/completions", "/api/kb/fuzz/documents"])
    body = hostile_body(rng)
    headers = {"Content-Type": rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])}
    if path.startswith("/v1/chat"):
        body = json.dumps({"messages": hostile_value(rng), "model": "m", **hostile_object(rng)}).encode()
        if rng.random() < 0.2:
            body = deep_json(rng, "messages").encode()
    if path.startswith("/api/kb") and rng.random() < 0.3:
        body, headers["Content-Type"] = deep_form(rng)
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            async with session.post(url + path, data=body, headers=headers) as response:
                await response.read()
                return Outcome(f"http {path}", response.status, time.monotonic() - started)
    except TimeoutError:
        return Outcome(f"http {path}", -1, time.monotonic() - started)
    except aiohttp.ClientError as exc:
        return Outcome(f"http {path}", 0, time.monotonic() - started, detail=repr(exc))


async def fuzz_websocket(session: aiohttp.ClientSession, url: str, rng: random.Random, limit: float) -> Outcome:
    """One hostile frame; the answer must end with `<EOS>` and carry no 5xx error."""
    started = time.monotonic()
    frame = hostile_body(rng).decode("utf-8", errors="replace")
    status = 200
    try:
        async with asyncio.timeout(limit):
            async with session.ws_connect(url.replace("http", "ws", 1) + "/") as ws:
                await ws.send_str(frame)
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT or message.data == EOS:
                        break
                    if message.data.startswith('{"error"'):
                        status = int(json.loads(message.data)["error"].get("status", 500))
                else:
                    status = 0  # closed without <EOS>
        return Outcome("websocket", status, time.monotonic() - started)
    except TimeoutError:
        return Outcome("websocket", -1, time.monotonic() - started)


async def fuzz_grpc(channel: grpc.aio.Channel, rng: random.Random, limit: float) -> Outcome:
    """Random bytes as a Generate request (sometimes a message nested deeper than protobuf parses):
    they parse into some message or are INVALID_ARGUMENT."""
    data = rng.randbytes(rng.randint(0, 200))
    if rng.random() < 0.1:
        data = deep_struct_request(rng.choice(DEEP_LEVELS))
    call = channel.unary_stream(f"/{SERVICE_NAME}/Generate")(data, timeout=limit)
    started = time.monotonic()
    try:
        async for _ in call:
            pass
        return Outcome("grpc", 200, time.monotonic() - started)
    except grpc.aio.AioRpcError as exc:
        status = -1 if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED else grpc_status(exc.code())
        return Outcome("grpc", status, time.monotonic() - started, detail=exc.details() or "")
