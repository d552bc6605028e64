"""Token auth end to end: HTTP routes, the WebSocket handshake, the OpenAI client and gRPC (the real
bridge and server, over the fake engine)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import pytest_asyncio
import requests
import websocket

from chatllm.bridge.runner import BridgeServer
from chatllm.clients import AsyncChatClient
from tests.fake_engine import FAKE_MODEL, FakeEngine
from tests.servers import make_config
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = FAKE_MODEL
TOKEN = "s3cret-token"
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
BODY = {"prompt": QUESTION, "max_new_tokens": 8, "temperature": 0}


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path) -> AsyncIterator[Stack]:
    async with serving_stack(fake_config(data_dir, token=TOKEN), FakeEngine(answer=ANSWER)) as running:
        yield running


@contextlib.asynccontextmanager
async def extra_bridge(data_dir: Path, target: str, **overrides: Any) -> AsyncIterator[str]:
    bridge = BridgeServer(make_config(data_dir, **overrides), target)
    await bridge.start()
    try:
        yield f"http://127.0.0.1:{bridge.port}"
    finally:
        await bridge.stop()


async def request(method: str, url: str, authorization: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return await asyncio.to_thread(requests.request, method, url, headers=headers, timeout=120, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/", {"json": BODY}),
        ("POST", "/api/predict/svc", {"data": QUESTION.encode()}),
        ("POST", "/v1/chat/completions", {"json": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}),
        ("POST", "/v1/completions", {"json": {"model": "m", "prompt": "hi"}}),
        ("GET", "/v1/models", {}),
    ],
)
async def test_api_routes_refuse_missing_and_wrong_tokens(
    stack: Stack, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    for authorization in (None, "wrong", "Bearer wrong", TOKEN + "x"):
        response = await request(method, stack.http_url + path, authorization, **kwargs)
        assert response.status_code == 401, (authorization, response.text)
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_right_token_raw_or_bearer_is_accepted(stack: Stack) -> None:
    for authorization in (TOKEN, f"Bearer {TOKEN}"):
        response = await request("POST", stack.http_url + "/", authorization, json=BODY)
        assert response.status_code == 200 and "Paris" in response.json()["response"]


async def test_probes_metrics_and_page_stay_open(stack: Stack) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        response = await request("GET", stack.http_url + path)
        assert response.status_code == 200, path


async def test_protect_metrics_requires_the_token_on_metrics(stack: Stack, data_dir: Path) -> None:
    async with extra_bridge(data_dir, stack.grpc_target, token=TOKEN, protect_metrics=True) as url:
        assert (await request("GET", url + "/metrics")).status_code == 401
        assert (await request("GET", url + "/metrics", TOKEN)).status_code == 200
        assert (await request("GET", url + "/healthz")).status_code == 200


def ws_round(url: str, header: list[str]) -> list[str]:
    ws = websocket.create_connection(url, header=header, timeout=120)
    try:
        ws.send(json.dumps(BODY))
        frames = [ws.recv()]
        while frames[-1] != "<EOS>":
            frames.append(ws.recv())
        return frames
    finally:
        ws.close()


async def test_websocket_client_with_authorization_header(stack: Stack) -> None:
    frames = await asyncio.to_thread(ws_round, stack.ws_url + "/", [f"Authorization: {TOKEN}"])
    assert "Paris" in "".join(frames[:-1]) and frames[-1] == "<EOS>"


@pytest.mark.parametrize("header", [[], ["Authorization: wrong"]])
async def test_websocket_handshake_refuses_missing_or_wrong_token(stack: Stack, header: list[str]) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        await asyncio.to_thread(ws_round, stack.ws_url + "/", header)
    assert refused.value.status_code == 401


async def test_openai_client_uses_its_api_key_as_the_token(stack: Stack) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    async with openai.AsyncOpenAI(base_url=stack.http_url + "/v1", api_key=TOKEN, max_retries=0) as client:
        reply = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
        assert "Paris" in (reply.choices[0].message.content or "")
    async with openai.AsyncOpenAI(base_url=stack.http_url + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)  # type: ignore[arg-type]


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_grpc_refuses_missing_or_wrong_token(stack: Stack, token: str | None) -> None:
    async with AsyncChatClient(stack.grpc_target, token=token) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.chat(QUESTION, max_new_tokens=4)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_accepts_the_token(stack: Stack) -> None:
    async with AsyncChatClient(stack.grpc_target, token=TOKEN) as client:
        assert "Paris" in (await client.chat(QUESTION, max_new_tokens=8, temperature=0)).text


async def test_bridge_without_a_token_forwards_the_clients_to_the_server(stack: Stack, data_dir: Path) -> None:
    """A bridge with no token of its own lets the server decide on the client's header."""
    async with extra_bridge(data_dir, stack.grpc_target) as url:
        refused = await request("POST", url + "/", json=BODY)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        accepted = await request("POST", url + "/", f"Bearer {TOKEN}", json=BODY)
        assert accepted.status_code == 200 and "Paris" in accepted.json()["response"]


async def test_non_ascii_authorization_is_refused_cleanly(stack: Stack, data_dir: Path) -> None:
    headers = {"Authorization": "tök€n".encode().decode("latin-1")}
    for url in (stack.http_url, None):
        if url is None:
            async with extra_bridge(data_dir, stack.grpc_target) as forwarding:
                response = await asyncio.to_thread(requests.post, forwarding + "/", json=BODY, headers=headers)
        else:
            response = await asyncio.to_thread(requests.post, url + "/", json=BODY, headers=headers)
        assert response.status_code == 401


def page_socket(ws_url: str, cookie: str | None, origin: str | None) -> websocket.WebSocket:
    headers = [f"Cookie: chatllm_token={cookie}"] if cookie is not None else []
    return websocket.create_connection(f"{ws_url}/api/chat", header=headers, origin=origin, timeout=120)


async def test_page_socket_takes_the_token_cookie_from_its_own_origin_only(stack: Stack) -> None:
    """Browsers cannot set Authorization on a WebSocket: the page's cookie is accepted, but never
    from another site's page (cross-site WebSocket hijacking)."""
    host = stack.http_url.removeprefix("http://")
    for cookie, origin in ((None, stack.http_url), ("wrong", stack.http_url), (TOKEN, "http://evil.example")):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            await asyncio.to_thread(page_socket, stack.ws_url, cookie, origin)
        assert refused.value.status_code == 401, (cookie, origin)
    ws = await asyncio.to_thread(page_socket, stack.ws_url, TOKEN, f"http://{host}")
    try:
        frames = []
        ws.send(json.dumps({"prompt": QUESTION, "max_new_tokens": 12, "temperature": 0, "stream_format": "events"}))
        while (frame := await asyncio.to_thread(ws.recv)) != "<EOS>":
            frames.append(json.loads(frame))
    finally:
        ws.close()
    deltas = [f["delta"] for f in frames if "delta" in f]
    final = frames[-1]["final"]
    assert len(deltas) >= 2 and "Paris" in "".join(deltas)
    assert final["usage"]["completion_tokens"] >= len(deltas) and final["finish_reason"] in ("stop", "length")
    assert 0 < final["timings"]["time_to_first_token_seconds"] <= final["timings"]["total_seconds"]


async def test_bad_stream_format_is_an_error_frame_naming_the_field(stack: Stack) -> None:
    ws = await asyncio.to_thread(page_socket, stack.ws_url, TOKEN, None)
    try:
        ws.send(json.dumps({"prompt": QUESTION, "stream_format": "xml"}))
        error = json.loads(await asyncio.to_thread(ws.recv))
        assert await asyncio.to_thread(ws.recv) == "<EOS>"
    finally:
        ws.close()
    assert error["error"]["status"] == 400 and error["error"]["param"] == "stream_format"
