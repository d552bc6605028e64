"""What each route sends is what the route table documents (fast tier: the real bridge and gRPC
server over tests/fake_engine.py, with a knowledge base and an embedder of canned answers).

Every route with a JSON reply is called and its body validated against the route's documented
model; every stream (SSE, NUL-delimited, WebSocket) is read and each event validated against the
stream's event model (or Error, for a stream that fails). A route added to the table without a
sample here fails the first test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from pydantic import BaseModel

from chatllm.bridge.errors import Error
from chatllm.bridge.route_table import ROUTES
from chatllm.bridge.routes import EventStream, NulStream, Route
from chatllm.bridge.websocket.frames import EOS, FRAMES
from chatllm.proto import pb
from chatllm.server.embeddings import EmbeddingService
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
BY_NAME = {route.name: route for route in ROUTES}
DOCUMENT_ID = "ab" * 32
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": FAKE_MODEL, "max_tokens": 8, **CHAT}
Call = tuple[str, str, Any]  # method, path, JSON body


async def stored_response(session: aiohttp.ClientSession, url: str, background: bool = False) -> str:
    async with session.post(url + "/v1/responses", json={"input": "hi", "background": background}) as response:
        assert response.status == 200
        return str((await response.json())["id"])


def on_stored(method: str, suffix: str = "", background: bool = False) -> Callable[..., Awaitable[Call]]:
    async def call(session: aiohttp.ClientSession, url: str) -> Call:
        return method, f"/v1/responses/{await stored_response(session, url, background)}{suffix}", None

    return call


# route name -> one call that the route answers with its 200 JSON reply (or a coroutine making one).
SAMPLES: dict[str, Call | Callable[..., Awaitable[Call]]] = {
    "healthz": ("GET", "/healthz", None),
    "readyz": ("GET", "/readyz", None),
    "load": ("GET", "/load", None),
    "loads": ("GET", "/v1/loads?include=core,disagg,queues,memory", None),
    "version": ("GET", "/version", None),
    "openai_chat": ("POST", "/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 2, "n": 2}),
    "openai_completions": ("POST", "/v1/completions", {"prompt": "one two", "echo": True, "logprobs": 1}),
    "openai_embeddings": ("POST", "/v1/embeddings", {"input": ["a", "b"], "encoding_format": "base64"}),
    "openai_models": ("GET", "/v1/models", None),
    "openai_model": ("GET", f"/v1/models/{FAKE_MODEL}", None),
    "tokenize": ("POST", "/tokenize", {"prompt": "one two", "return_token_strs": True}),
    "detokenize": ("POST", "/detokenize", {"tokens": [0, 1]}),
    "kb_list": ("GET", "/api/kb", None),
    "kb_delete": ("DELETE", "/api/kb/manuals", None),
    "kb_upload": ("POST", "/api/kb/manuals/documents", None),  # a multipart body, see call()
    "kb_documents": ("GET", "/api/kb/manuals/documents", None),
    "kb_delete_document": ("DELETE", f"/api/kb/manuals/documents/{DOCUMENT_ID}", None),
    "api_info": ("GET", "/api/info", None),
    "legacy": ("POST", "/", {"prompt": "hi", "history": [["q", "a"]], "use_stream_chat": False}),
    "usage": ("GET", "/api/usage", None),
    "responses_create": (
        "POST",
        "/v1/responses",
        {"input": "hi", "top_logprobs": 1, "include": ["message.output_text.logprobs"]},
    ),
    "responses_get": on_stored("GET"),
    "responses_delete": on_stored("DELETE"),
    "responses_cancel": on_stored("POST", "/cancel", background=True),
    "responses_input_items": on_stored("GET", "/input_items"),
    "anthropic_messages": ("POST", "/v1/messages", MESSAGES),
    "anthropic_count_tokens": ("POST", "/v1/messages/count_tokens", {"model": FAKE_MODEL, **CHAT}),
}
# (route name, content type) -> a request whose reply is that stream.
STREAMS: dict[tuple[str, str], tuple[str, dict[str, Any], dict[str, str]]] = {
    ("openai_chat", "text/event-stream"): (
        "/v1/chat/completions",
        {
            **CHAT,
            "stream": True,
            "logprobs": True,
            "top_logprobs": 1,
            "n": 2,
            "stream_options": {"include_usage": True},
        },
        {},
    ),
    ("openai_completions", "text/event-stream"): (
        "/v1/completions",
        {
            "prompt": "one",
            "stream": True,
            "echo": True,
            "logprobs": 1,
            "stream_options": {"continuous_usage_stats": True},
        },
        {},
    ),
    ("legacy", "text/plain"): ("/", {"prompt": "hi", "use_stream_chat": True}, {}),
    ("responses_create", "text/event-stream"): ("/v1/responses", {"input": "hi", "stream": True}, {}),
    ("anthropic_messages", "text/event-stream"): ("/v1/messages", {**MESSAGES, "stream": True}, {}),
    ("legacy", "text/event-stream"): (
        "/api/predict/chat",
        {"prompt": "hi", "use_stream_chat": "true", "stream_mode": "delta"},
        {"Accept": "text/event-stream"},
    ),
}


class CannedKnowledge:
    """The knowledge base's RPCs with fixed answers (the servicer's KnowledgeRPCs)."""

    async def ingest(self, requests: AsyncIterator[pb.IngestRequest]) -> pb.IngestResponse:
        received = [request async for request in requests]
        size = sum(len(r.chunk) for r in received)
        return pb.IngestResponse(document_id=DOCUMENT_ID, chunks=2, characters=size, replaced_document_ids=["cd" * 32])

    async def retrieve(self, request: pb.RetrieveRequest) -> pb.RetrieveResponse:
        return pb.RetrieveResponse()

    async def list_documents(self, request: pb.ListDocumentsRequest) -> pb.ListDocumentsResponse:
        document = pb.Document(id=DOCUMENT_ID, filename="a.txt", chunks=2, size_bytes=10, created_unix=1.5)
        return pb.ListDocumentsResponse(documents=[document])

    async def delete_document(self, request: pb.DeleteDocumentRequest) -> pb.DeleteDocumentResponse:
        return pb.DeleteDocumentResponse(chunks_deleted=2)

    async def list_knowledge_bases(self) -> pb.ListKnowledgeBasesResponse:
        return pb.ListKnowledgeBasesResponse(knowledge_bases=[pb.KnowledgeBase(name="manuals", documents=1, chunks=2)])

    async def delete_knowledge_base(self, request: pb.DeleteKnowledgeBaseRequest) -> pb.DeleteKnowledgeBaseResponse:
        return pb.DeleteKnowledgeBaseResponse(documents_deleted=1)


class CannedEmbedder:
    name, dimension = "canned-embedder", 4

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), self.dimension), 0.5, dtype=np.float32)

    def token_count(self, texts: list[str]) -> int:
        return sum(len(text.split()) for text in texts)


@pytest.fixture
def stack(fake_stack: Stack) -> Stack:
    fake_stack.server.state.knowledge = CannedKnowledge()
    fake_stack.server.state.embeddings = EmbeddingService(CannedEmbedder())
    return fake_stack


async def call(session: aiohttp.ClientSession, url: str, name: str) -> tuple[int, Any]:
    sample = SAMPLES[name]
    method, path, body = sample if isinstance(sample, tuple) else await sample(session, url)
    data = None
    if name == "kb_upload":
        data = aiohttp.FormData()
        data.add_field("file", b"some text", filename="a.txt", content_type="text/plain")
    async with session.request(method, url + path, json=body, data=data) as response:
        return response.status, await response.json()


def documented(route: Route, status: int) -> type[BaseModel]:
    model = route.json_model(status)
    assert model is not None, f"{route.name}: no JSON model for {status}"
    return model


async def test_every_route_with_a_json_reply_or_a_stream_has_a_sample() -> None:
    assert set(SAMPLES) == {route.name for route in ROUTES if route.json_model(200) is not None}
    assert set(STREAMS) == {(route.name, media) for route in ROUTES for media, _ in route.streams()}


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_the_reply_is_the_documented_model(stack: Stack, name: str) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await call(session, stack.http_url, name)
    assert status == 200, body
    documented(BY_NAME[name], 200).model_validate(body)  # extra="forbid": nothing undocumented either


async def test_an_error_reply_is_the_documented_error(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + "/v1/chat/completions", json={"messages": []}) as response:
            status, body = response.status, await response.json()
    assert status == 400 and status in BY_NAME["openai_chat"].errors
    assert Error.model_validate(body).error.param == "messages"


def stream_content(name: str, media: str) -> EventStream | NulStream:
    return dict(BY_NAME[name].streams())[media]


def events(raw: bytes, media: str) -> list[str]:
    """The JSON texts (and `[DONE]`) of an SSE or NUL-delimited body."""
    if media == "text/plain":
        assert raw.endswith(b"\0")
        return [item.decode() for item in raw.split(b"\0")[:-1]]
    blocks = raw.decode().split("\n\n")
    assert blocks[-1] == "", raw
    texts = []
    for block in blocks[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) <= {"event", "data"}, block
        texts.append(fields["data"])
        if "event" in fields:  # names the event's type
            assert json.loads(fields["data"])["type"] == fields["event"]
    return texts


def check_events(texts: list[str], content: EventStream | NulStream) -> list[BaseModel]:
    """Each event validates against the stream's event model, or is the failure that ends a failed stream."""
    done = isinstance(content, EventStream) and content.done
    if done:
        assert texts[-1] == "[DONE]"
        texts = texts[:-1]
    model = content.event if isinstance(content, EventStream) else content.item
    failure = content.failure if isinstance(content, EventStream) else Error
    checked: list[BaseModel] = []
    for text in texts:
        as_json = json.loads(text)
        failed = failure is not None and "error" in as_json and "type" not in as_json
        checked.append((failure if failed and failure is not None else model).model_validate(as_json))
    return checked


def failed(event: BaseModel) -> bool:
    """The bridge's Error, or a stream's own error event (`type: error`)."""
    return isinstance(event, Error) or getattr(getattr(event, "root", event), "type", None) == "error"


@pytest.mark.parametrize(("name", "media"), sorted(STREAMS))
async def test_each_streamed_event_is_the_documented_event(stack: Stack, name: str, media: str) -> None:
    path, body, headers = STREAMS[(name, media)]
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + path, json=body, headers=headers) as response:
            assert response.status == 200 and response.content_type == media
            raw = await response.read()
    checked = check_events(events(raw, media), stream_content(name, media))
    assert len(checked) > 2 and not any(failed(event) for event in checked)


@pytest.mark.parametrize(("name", "media"), sorted(STREAMS))
async def test_a_stream_that_fails_ends_with_the_documented_error(
    stack: Stack, fake_engine: FakeEngine, name: str, media: str
) -> None:
    fake_engine.fail = True  # fails at the second step, after the first text went out
    path, body, headers = STREAMS[(name, media)]
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + path, json=body, headers=headers) as response:
            raw = await response.read()
    checked = check_events(events(raw, media), stream_content(name, media))
    assert any(failed(event) for event in checked[-2:]), checked[-2:]


@pytest.mark.parametrize("frame", [{"stream_format": "events"}, {"stream_format": "text", "use_stream_chat": False}])
async def test_each_websocket_frame_is_a_documented_frame(stack: Stack, frame: dict[str, Any]) -> None:
    documented_frames = BY_NAME["api_chat"].replies[101].websocket
    assert documented_frames is not None and documented_frames.frames == FRAMES
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.ws_url + "/api/chat") as ws:
        await ws.send_str(json.dumps({"prompt": "hi", **frame}))
        received = []
        while (text := await ws.receive_str(timeout=30)) != EOS:
            received.append(text)
        await ws.send_str(json.dumps({"prompt": "hi", "temperature": "hot", **frame}))
        failed = [await ws.receive_str(timeout=30), await ws.receive_str(timeout=30)]
    json_frames = [text for text in received if text.startswith("{")]
    if frame["stream_format"] == "events":
        assert json_frames == received and len(received) > 2
    else:
        assert json_frames == [] and received == [FakeEngine().answer]
    for text in json_frames:
        assert any(_validates(model, text) for model in FRAMES), text
    assert failed[1] == EOS and Error.model_validate_json(failed[0]).error.param == "temperature"


def _validates(model: type[BaseModel], text: str) -> bool:
    try:
        model.model_validate_json(text)
    except ValueError:
        return False
    return True


async def test_a_body_rule_found_while_converting_it_is_a_400_naming_the_field(stack: Stack) -> None:
    """A rule checked after parsing (here: a tool_use block in a user message) is the client's error, in
    the route's error shape, never a 500."""
    tool_use = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    body = {"model": FAKE_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [tool_use]}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.http_url + "/v1/messages", json=body) as response:
            status, reply = response.status, await response.json()
    assert status == 400, reply
    assert BY_NAME["anthropic_messages"].error_model.model_validate(reply).error.message.startswith("messages:")
