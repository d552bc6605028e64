"""The legacy HTTP protocol through the real bridge and real gRPC server, over the fake engine:
plain-text (curl) and JSON bodies, NUL-delimited and SSE streams, errors, cancellation. (What the
real model answers through these protocols: tests/component/model/.)"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests
import websocket

from chatllm.bridge.runner import BridgeServer
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.servers import make_config
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
MAX_BODY = 64 * 1024


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path) -> AsyncIterator[Stack]:
    # Server defaults: greedy, short answers; one request at a time and no queue, so a
    # second concurrent request is refused (RESOURCE_EXHAUSTED -> 429).
    config = fake_config(
        data_dir, temperature=0.0, max_new_tokens=16, max_concurrent=1, max_queue=0, max_body_bytes=MAX_BODY
    )
    # A word every 10 ms: a long answer is still running while the test sends the next requests.
    async with serving_stack(config, FakeEngine(answer=ANSWER, stall=0.01)) as running:
        yield running


async def post(stack: Stack, path: str = "/", **kwargs: Any) -> requests.Response:
    return await asyncio.to_thread(requests.post, stack.http_url + path, timeout=120, **kwargs)


async def test_curl_plain_text_body_is_the_prompt(stack: Stack, tmp_path: Path) -> None:
    question = tmp_path / "question.txt"
    question.write_bytes(QUESTION.encode())
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--fail-with-body",
        "--data-binary",
        f"@{question}",
        stack.http_url + "/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    reply = json.loads(out)
    assert set(reply) == {"response", "history", "usage"}
    assert "Paris" in reply["response"]
    assert reply["history"] == [[QUESTION, reply["response"]]]
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_plain_text_is_utf8(stack: Stack) -> None:
    prompt = "用一个词回答：法国的首都是哪里？"
    reply = (await post(stack, data=prompt.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})).json()
    assert reply["history"][0][0] == prompt
    assert reply["response"]


async def test_json_body_non_stream_round_trips_history(stack: Stack) -> None:
    history = [["Hello, my name is Zorblax.", "Nice to meet you, Zorblax!"]]
    body = {"prompt": "What is my name?", "history": history, "max_new_tokens": 12}
    with_history = await post(stack, json=body)
    assert with_history.status_code == 200 and with_history.headers["Content-Type"].startswith("application/json")
    reply = with_history.json()
    assert reply["history"] == [*history, ["What is my name?", reply["response"]]]
    without = (await post(stack, json={"prompt": "What is my name?", "max_new_tokens": 12})).json()
    assert reply["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"] + 10


async def test_langchain_pai_eas_endpoint_request_gets_one_json_reply(stack: Stack) -> None:
    """Exactly what langchain_community's PaiEasEndpoint._call_eas sends (no use_stream_chat, stop null)."""
    body = {
        "prompt": QUESTION,
        "max_new_tokens": 16,
        "temperature": 0.95,
        "top_k": 0,
        "top_p": 0.1,
        "stop_sequences": [],
        "stop": None,
    }
    response = await post(stack, json=body, headers={"Content-Type": "application/json", "Authorization": ""})
    assert response.status_code == 200
    assert isinstance(json.loads(response.text)["response"], str) and json.loads(response.text)["response"]


def read_nul_stream(url: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The EAS docs' / PaiEasEndpoint's streaming client, verbatim in its reading loop."""
    headers = {"User-Agent": "Test Client", "Authorization": ""}
    response = requests.post(url, headers=headers, json=body, stream=True, timeout=120)
    objects = []
    for chunk in response.iter_lines(chunk_size=8192, decode_unicode=False, delimiter=b"\0"):
        if chunk:
            objects.append(json.loads(chunk.decode("utf-8")))
    return objects, response.headers["Content-Type"]


async def test_nul_delimited_stream_reads_like_the_eas_client(stack: Stack) -> None:
    body = {"prompt": QUESTION, "use_stream_chat": "True", "max_new_tokens": 24, "history": [["Hi", "Hello!"]]}
    objects, content_type = await asyncio.to_thread(read_nul_stream, stack.http_url + "/", body)
    assert content_type.startswith("text/plain")
    answers = [o["response"] for o in objects]
    assert len(answers) >= 4
    assert all(b.startswith(a) for a, b in itertools.pairwise(answers)), "response is cumulative"
    assert answers[-1] == ANSWER
    for obj in objects:
        assert obj["history"] == [["Hi", "Hello!"], [QUESTION, obj["response"]]]
    assert objects[-1]["usage"]["prompt_tokens"] > 10
    assert objects[-1]["usage"]["completion_tokens"] >= objects[-2]["usage"]["completion_tokens"] > 0
    whole = (await post(stack, json={**body, "use_stream_chat": False})).json()
    assert whole["response"] == answers[-1]


def sse_events(response: requests.Response) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


async def test_sse_variant_sends_the_same_objects_as_data_events(stack: Stack) -> None:
    def read(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        headers = {"Accept": "text/event-stream"}
        with requests.post(stack.http_url + "/", json=body, headers=headers, stream=True, timeout=120) as response:
            return list(sse_events(response)), response.headers["Content-Type"]

    events, content_type = await asyncio.to_thread(read, {"prompt": QUESTION, "use_stream_chat": True})
    assert content_type.startswith("text/event-stream")
    assert len(events) >= 4 and events[-1]["response"] == ANSWER
    assert events[-1]["history"] == [[QUESTION, ANSWER]] and events[-1]["usage"]["prompt_tokens"] > 10
    # Every event reports the real prompt token count, not 0 until the last one.
    assert all(e["usage"]["prompt_tokens"] == events[-1]["usage"]["prompt_tokens"] for e in events)
    # Asking for SSE without use_stream_chat is asking for a stream too (a busy client may get pieces
    # joined, so the same answer in as many or fewer events).
    implicit, _ = await asyncio.to_thread(read, {"prompt": QUESTION})
    assert len(implicit) >= 2 and implicit[-1]["response"] == events[-1]["response"]


def open_nul_stream(
    session: requests.Session, url: str, body: dict[str, Any]
) -> tuple[requests.Response, Iterator[bytes]]:
    """A streaming request whose first object has arrived; the caller holds both until it closes."""
    response = session.post(url, json=body, stream=True, timeout=120)
    lines = (c for c in response.iter_lines(chunk_size=1, delimiter=b"\0") if c)
    first = next(lines)
    return response, itertools.chain([first], lines)


async def test_stream_is_not_buffered_and_a_disconnect_cancels_the_engine_request(stack: Stack) -> None:
    body = {
        "prompt": "Write a very long story about a dragon.",
        "use_stream_chat": True,
        "max_new_tokens": 2000,
        "ignore_eos": True,
    }
    session = requests.Session()

    response, lines = await asyncio.to_thread(open_nul_stream, session, stack.http_url + "/", body)
    first = json.loads(next(lines))
    assert first["response"]
    # The first delta reached us while the engine is still generating: nothing was buffered.
    busy = await stack.server_info()
    assert busy.active_requests + busy.waiting_requests == 1
    await asyncio.to_thread(response.close)
    await asyncio.to_thread(session.close)
    idle = await stack.wait_engine_idle(within=10)
    assert idle.active_requests == 0 and idle.waiting_requests == 0


async def test_overload_is_429_with_retry_after(stack: Stack) -> None:
    long_body = {
        "prompt": "Count to one thousand.",
        "use_stream_chat": True,
        "max_new_tokens": 2000,
        "ignore_eos": True,
    }
    session = requests.Session()

    holder, lines = await asyncio.to_thread(open_nul_stream, session, stack.http_url + "/", long_body)
    try:
        assert json.loads(next(lines))["response"]
        refused = await post(stack, json={"prompt": QUESTION})
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "overloaded" and "capacity" in error["message"]
    finally:
        await asyncio.to_thread(holder.close)
        await asyncio.to_thread(session.close)
    assert (await stack.wait_engine_idle(within=10)).active_requests == 0


BAD_BODIES = [
    ({"prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"prompt": 5}, "prompt"),
    ({"system_prompt": "no prompt"}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "hi", "history": "not a list"}, "history"),
    ({"prompt": "hi", "history": [["only a question"]]}, "history[0]"),
    ({"prompt": "hi", "history": [["q", 7]]}, "history[0]"),
    ({"prompt": "hi", "max_new_tokens": -3}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": "many"}, "max_new_tokens"),
    ({"prompt": "hi", "top_k": 2.5}, "top_k"),
    ({"prompt": "hi", "use_stream_chat": "maybe"}, "use_stream_chat"),
    ({"prompt": "hi", "use_cache": 3}, "use_cache"),
    ({"prompt": "hi", "langchain": "sure"}, "langchain"),
    ({"prompt": "hi", "stop": 3}, "stop"),
    ({"prompt": "hi", "temperature": 3}, "temperature"),  # range checked by the server, named as the client sent it
    ({"prompt": "hi", "top_p": 1.5}, "top_p"),
    ({"prompt": "hi", "langchain": True, "kb": "no spaces allowed"}, "kb"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_wrong_types_are_400_naming_the_field(stack: Stack, body: dict[str, Any], field: str) -> None:
    response = await post(stack, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(field + ":")
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"prompt": "hi",', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"prompt": "hi",}', None),  # looks like an object, sent without a type: a broken request, not a prompt
        (b"\xff\xfe not utf-8", "text/plain"),
    ],
)
async def test_bad_json_is_400_naming_the_body(stack: Stack, data: bytes, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await post(stack, data=data, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"


async def test_over_long_body_is_413(stack: Stack) -> None:
    response = await post(stack, data=b"x" * (MAX_BODY + 1), headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


async def test_unknown_fields_are_ignored_and_use_cache_is_accepted(stack: Stack) -> None:
    body = {
        "prompt": QUESTION,
        "use_cache": "True",
        "do_sample": False,
        "max_new_tokens": 12,
        "some_future_field": {"x": 1},
        "stop_sequences": [],
    }
    response = await post(stack, "/api/predict/myservice", json=body, headers={"X-Request-Id": "abc-123"})
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "abc-123"
    assert "Paris" in response.json()["response"]


async def test_langchain_flag_asks_the_server_for_the_knowledge_base(stack: Stack) -> None:
    """This server runs without a knowledge base, so the mapped request is refused (503, retry later)."""
    response = await post(stack, json={"prompt": QUESTION, "langchain": "true"})
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "knowledge base" in response.json()["error"]["message"]


async def test_probes_and_plain_get(stack: Stack) -> None:
    def get(path: str) -> requests.Response:
        return requests.get(stack.http_url + path, timeout=30)

    assert (await asyncio.to_thread(get, "/healthz")).json() == {"status": "alive"}
    ready = await asyncio.to_thread(get, "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    page = await asyncio.to_thread(get, "/")
    assert page.status_code == 200 and "<title>ChatLLM</title>" in page.text  # the web page
    missing = await asyncio.to_thread(get, "/no/such/page")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == 404


async def test_deadline_is_504(stack: Stack, data_dir: Path) -> None:
    config = make_config(data_dir, request_timeout=1.0)
    bridge = BridgeServer(config, stack.grpc_target)
    await bridge.start()
    try:
        body = {"prompt": "Tell me everything about Rome.", "max_new_tokens": 2000, "ignore_eos": True}
        response = await asyncio.to_thread(requests.post, f"http://127.0.0.1:{bridge.port}/", json=body, timeout=60)
    finally:
        await bridge.stop()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "request_timeout"
    assert (await stack.wait_engine_idle(within=10)).active_requests == 0


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_unreachable_upstream_is_502_and_not_ready(data_dir: Path, refusing_port: int) -> None:
    bridge = BridgeServer(make_config(data_dir), f"127.0.0.1:{refusing_port}")
    await bridge.start()
    url = f"http://127.0.0.1:{bridge.port}"
    try:
        answer = await asyncio.to_thread(requests.post, url + "/", data=b"hello", timeout=60)
        ready = await asyncio.to_thread(requests.get, url + "/readyz", timeout=60)
        alive = await asyncio.to_thread(requests.get, url + "/healthz", timeout=60)
    finally:
        await bridge.stop()
    assert answer.status_code == 502
    assert answer.json()["error"]["type"] == "upstream_unreachable"
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    assert alive.status_code == 200


async def test_api_only_hides_the_page_and_no_api_turns_the_api_off(stack: Stack, data_dir: Path) -> None:
    api_only = BridgeServer(make_config(data_dir, api_only=True), stack.grpc_target)
    no_api = BridgeServer(make_config(data_dir, no_api=True), stack.grpc_target)
    await api_only.start()
    await no_api.start()
    try:
        page = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{api_only.port}/", timeout=30)
        assert page.status_code == 404 and "--api-only" in page.json()["error"]["message"]
        answer = await asyncio.to_thread(
            requests.post, f"http://127.0.0.1:{api_only.port}/", json={"prompt": QUESTION}, timeout=120
        )
        assert answer.status_code == 200 and "Paris" in answer.json()["response"]
        base = f"http://127.0.0.1:{no_api.port}"
        assert (await asyncio.to_thread(requests.get, base + "/", timeout=30)).status_code == 200
        for method, path in (("POST", "/"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
            refused = await asyncio.to_thread(requests.request, method, base + path, json={"prompt": "x"}, timeout=30)
            assert refused.status_code == 404 and "--no-api" in refused.json()["error"]["message"], path
        with pytest.raises(websocket.WebSocketBadStatusException) as ws_refused:
            await asyncio.to_thread(websocket.create_connection, f"ws://127.0.0.1:{no_api.port}/", timeout=30)
        assert ws_refused.value.status_code == 404
    finally:
        await api_only.stop()
        await no_api.stop()


async def test_drain_cancels_streams_still_running_after_the_grace(stack: Stack, data_dir: Path) -> None:
    bridge = BridgeServer(make_config(data_dir, shutdown_grace=1.0), stack.grpc_target)
    await bridge.start()
    session = requests.Session()
    body = {"prompt": "Write a very long story.", "use_stream_chat": True, "max_new_tokens": 2000, "ignore_eos": True}
    response, lines = await asyncio.to_thread(open_nul_stream, session, f"http://127.0.0.1:{bridge.port}/", body)
    started = asyncio.get_running_loop().time()
    await bridge.stop()
    assert asyncio.get_running_loop().time() - started < 30  # coarse: the grace is 1 s
    rest = await asyncio.to_thread(lambda: [json.loads(line) for line in lines])  # ends cleanly, not cut
    error = rest[-1]["error"]
    assert error["status"] == 503 and "shutting down" in error["message"]
    await asyncio.to_thread(response.close)
    await asyncio.to_thread(session.close)
    assert (await stack.wait_engine_idle(within=10)).active_requests == 0


def open_sse_stream(
    session: requests.Session, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[requests.Response, Iterator[str]]:
    """A streaming request whose first SSE data line has arrived; the caller holds both until it closes."""
    response = session.post(url, json=body, headers=headers, stream=True, timeout=120)
    response.raise_for_status()
    lines = response.iter_lines(chunk_size=1, decode_unicode=True)
    data = (line.removeprefix("data: ") for line in lines if line and line.startswith("data: "))
    first = next(data)
    return response, itertools.chain([first], data)


LONG = {"max_new_tokens": 2000, "ignore_eos": True}
SSE_REQUESTS = {
    "legacy SSE": ("/", {"prompt": "Write a very long story.", "use_stream_chat": True, **LONG}),
    "OpenAI SSE": (
        "/v1/chat/completions",
        {
            "model": FAKE_MODEL,
            "messages": [{"role": "user", "content": "Write a very long story."}],
            "stream": True,
            "max_tokens": 2000,
            "ignore_eos": True,
        },
    ),
}


@pytest.mark.parametrize("protocol", sorted(SSE_REQUESTS))
async def test_drain_ends_a_running_sse_stream_with_an_error_event(stack: Stack, data_dir: Path, protocol: str) -> None:
    """The answer pipeline's mid-stream rule through the real bridge, per SSE protocol: an error event (then
    OpenAI's [DONE]), never a cut connection (the NUL stream and the WebSocket: the tests above)."""
    bridge = BridgeServer(make_config(data_dir, shutdown_grace=1.0), stack.grpc_target)
    await bridge.start()
    path, body = SSE_REQUESTS[protocol]
    session = requests.Session()
    url, headers = f"http://127.0.0.1:{bridge.port}{path}", {"Accept": "text/event-stream"}
    response, data = await asyncio.to_thread(open_sse_stream, session, url, body, headers)
    await bridge.stop()
    rest = await asyncio.to_thread(list, data)  # ends cleanly, not cut
    if protocol == "OpenAI SSE":
        assert rest[-1] == "[DONE]"
        rest = rest[:-1]
    error = json.loads(rest[-1])["error"]
    assert "shutting down" in error["message"]
    assert all("error" not in json.loads(event) for event in rest[:-1])
    await asyncio.to_thread(response.close)
    await asyncio.to_thread(session.close)
    assert (await stack.wait_engine_idle(within=10)).active_requests == 0


async def test_drain_answers_a_waiting_legacy_json_request_with_a_503(stack: Stack, data_dir: Path) -> None:
    """A whole (non-streamed) answer cut by the drain is a 503 JSON error, not a partial answer or a 200."""
    bridge = BridgeServer(make_config(data_dir, shutdown_grace=1.0), stack.grpc_target)
    await bridge.start()
    url = f"http://127.0.0.1:{bridge.port}/"
    waiting = asyncio.create_task(
        asyncio.to_thread(requests.post, url, json={"prompt": "Write a very long story.", **LONG}, timeout=120)
    )
    assert (await stack.wait_engine_busy(within=30)).active_requests == 1
    await bridge.stop()
    response = await waiting
    assert response.status_code == 503 and "shutting down" in response.json()["error"]["message"]
    assert (await stack.wait_engine_idle(within=10)).active_requests == 0
