"""Named tokens through the real stack (server over the fake engine + bridge, one token file):
tokens added and removed without a restart, per-token limits refused at once without touching
other tokens, and the token's name (never the token) in logs, metrics and the history export."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import requests
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from chatllm.bridge.legacy.eas_signature import DATE_FORMAT, expected_signature
from chatllm.bridge.runner import BridgeServer
from chatllm.clients import AsyncChatClient
from tests.fake_engine import FakeEngine
from tests.servers import make_config
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALICE = "alice-7f3e9c1d2b"
BOB = "bob-4a8d0e6f13"  # streams=1
CAROL = "carol-9b2c7d5e40"  # rpm=2
DAVE = "dave-1c5f8a3e77"  # added and removed by the tests
TOKENS = f"alice:{ALICE}\nbob:{BOB}:streams=1\ncarol:{CAROL}:rpm=2\n"
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
BODY = {"prompt": QUESTION, "max_new_tokens": 8, "temperature": 0}
LONG = {"prompt": "Count from one to a hundred in words.", "max_new_tokens": 200, "ignore_eos": True}


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(TOKENS)
    return path


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history")


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path, token_file: Path, history_dir: Path) -> AsyncIterator[Stack]:
    config = fake_config(data_dir, token_file=str(token_file), export_history_path=str(history_dir), temperature=0.0)
    # A word every 10 ms: a long answer is still running while the test sends the next requests.
    async with serving_stack(config, FakeEngine(answer=ANSWER, stall=0.01)) as running:
        yield running


async def post(url: str, token: str | None, body: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": token} if token else {}
    headers.update(kwargs.pop("headers", {}))
    return await asyncio.to_thread(requests.post, url + "/", json=body or BODY, headers=headers, timeout=120, **kwargs)


def grpc_client(stack: Stack, token: str) -> AsyncChatClient:
    return AsyncChatClient(stack.grpc_target, token=token, timeout=120)


def history_lines(history_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(history_dir.glob("history-*.jsonl")):
        complete = path.read_bytes().rpartition(b"\n")[0]
        lines += [json.loads(line) for line in complete.split(b"\n") if line]
    return lines


async def history_line(history_dir: Path, request_id: str, within: float = 10.0) -> dict[str, Any]:
    """The exported line of `request_id` (the writer thread puts it on disk within milliseconds)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in history_lines(history_dir):
            if line["request_id"] == request_id:
                return line
        await asyncio.sleep(0.05)
    raise AssertionError(f"no history line for {request_id}")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_tokens_from_the_file_work_on_every_path(stack: Stack, history_dir: Path) -> None:
    for token in (ALICE, f"Bearer {ALICE}"):
        reply = await post(stack.http_url, token)
        assert reply.status_code == 200 and "Paris" in reply.json()["response"]
    async with grpc_client(stack, ALICE) as alice:
        assert "Paris" in (await alice.chat(QUESTION, max_new_tokens=8, request_id="alice-grpc-1")).text
    assert (await history_line(history_dir, "alice-grpc-1"))["token"] == "alice"
    for wrong in (None, "alice", ALICE[:-1], "unnamed", "anonymous"):
        assert (await post(stack.http_url, wrong)).status_code == 401
        async with grpc_client(stack, wrong or "") as refused:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await refused.chat(QUESTION, max_new_tokens=2)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tokens_added_and_removed_take_effect_without_a_restart(stack: Stack, token_file: Path) -> None:
    assert (await post(stack.http_url, DAVE)).status_code == 401
    await asyncio.to_thread(token_file.write_text, TOKENS + f"dave:{DAVE}\n")
    try:
        assert (await post(stack.http_url, DAVE)).status_code == 200
        async with grpc_client(stack, DAVE) as dave:
            assert (await dave.chat(QUESTION, max_new_tokens=2)).usage.completion_tokens == 2
    finally:
        await asyncio.to_thread(token_file.write_text, TOKENS)
    assert (await post(stack.http_url, DAVE)).status_code == 401  # removed: refused at once
    async with grpc_client(stack, DAVE) as dave:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await dave.chat(QUESTION, max_new_tokens=2)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await post(stack.http_url, ALICE)).status_code == 200  # the others were never interrupted


def retry_info(err: grpc.aio.AioRpcError) -> float:
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo")


@contextlib.asynccontextmanager
async def generating(stack: Stack, token: str) -> AsyncIterator[grpc.aio.UnaryStreamCall]:
    """A long answer for `token`, running (first text received) until the block ends."""
    async with grpc_client(stack, token) as client:
        call = client.stream(LONG["prompt"], max_new_tokens=LONG["max_new_tokens"], ignore_eos=True)
        assert (await call.read()).text is not None
        try:
            yield call
        finally:
            call.cancel()


async def test_a_streams_limit_refuses_the_excess_at_once_and_spares_other_tokens(stack: Stack) -> None:
    async with generating(stack, BOB):
        started = time.monotonic()
        async with grpc_client(stack, BOB) as bob:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await bob.chat(QUESTION, max_new_tokens=2)
        http = await post(stack.http_url, BOB)
        refused_within = time.monotonic() - started
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "streams=1" in err.value.details()
        assert retry_info(err.value) == pytest.approx(1.0)
        assert http.status_code == 429 and http.json()["error"]["code"] == "too_many_streams"
        assert http.headers["Retry-After"] == "1"
        assert refused_within < 2.0, "a refusal never waits"
        # Alice is served while Bob is at his limit, over gRPC and HTTP at once.
        async with grpc_client(stack, ALICE) as alice:
            answers = await asyncio.gather(alice.chat(QUESTION, max_new_tokens=8), post(stack.http_url, ALICE))
        assert "Paris" in answers[0].text and answers[1].status_code == 200
    await stack.wait_engine_idle(10, ALICE)
    assert (await post(stack.http_url, BOB)).status_code == 200  # his stream ended: he may go again


async def test_a_requests_per_minute_limit_refuses_the_excess_with_its_wait(stack: Stack) -> None:
    for _ in range(2):
        assert (await post(stack.http_url, CAROL, {**BODY, "max_new_tokens": 1})).status_code == 200
    started = time.monotonic()
    http = await post(stack.http_url, CAROL)
    async with grpc_client(stack, CAROL) as carol:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await carol.chat(QUESTION, max_new_tokens=2)
    assert time.monotonic() - started < 2.0
    assert http.status_code == 429 and http.json()["error"]["code"] == "rate_limit_exceeded"
    # A sliding window: the first of the two leaves it a minute after it was admitted.
    assert 50 <= int(http.headers["Retry-After"]) <= 60
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and 50 <= retry_info(err.value) <= 60
    for _ in range(3):  # alice is unlimited, and untouched by carol's limit
        assert (await post(stack.http_url, ALICE, {**BODY, "max_new_tokens": 1})).status_code == 200


async def test_names_not_tokens_in_logs_metrics_and_history(
    stack: Stack, history_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before_server = sample("chatllm_token_requests_total", token="alice", method="Generate", code="OK")
    before_bridge = sample("chatllm_bridge_token_requests_total", token="alice", route="legacy", status="200")
    with caplog.at_level(logging.INFO):
        reply = await post(stack.http_url, ALICE, headers={"X-Request-Id": "named-http-1"})
    assert reply.status_code == 200
    line = await history_line(history_dir, "named-http-1")
    assert line["token"] == "alice" and line["channel"] == "http"
    assert sample("chatllm_token_requests_total", token="alice", method="Generate", code="OK") == before_server + 1
    assert (
        sample("chatllm_bridge_token_requests_total", token="alice", route="legacy", status="200") == before_bridge + 1
    )
    assert "token=alice" in caplog.text  # the server's generate line and the bridge's access line
    access_lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("token=alice" in m and '"POST /' in m for m in access_lines), access_lines
    exported = json.dumps(history_lines(history_dir))
    metrics = (await asyncio.to_thread(requests.get, stack.http_url + "/metrics", timeout=30)).text
    for secret in (ALICE, BOB, CAROL, DAVE):
        assert secret not in caplog.text and secret not in exported and secret not in metrics


def signed_headers(token: str, body: bytes, path: str) -> dict[str, str]:
    md5 = hashlib.md5(body).hexdigest()
    date = datetime.datetime.now().strftime(DATE_FORMAT)
    content_type = "application/octet-stream"
    signature = expected_signature(token, "POST", md5, content_type, date, path)
    return {"Authorization": f"EAS {signature}", "Content-MD5": md5, "Date": date, "Content-Type": content_type}


async def test_an_eas_signed_request_is_checked_against_each_token(stack: Stack, history_dir: Path) -> None:
    """The EAS SDK's signature proves the token without sending it; the bridge tries every token and
    forwards the one that signed, so the server names it."""
    body = json.dumps(BODY).encode()
    path = "/api/predict/svc"
    headers = {**signed_headers(ALICE, body, path), "X-Request-Id": "signed-1"}
    reply = await asyncio.to_thread(requests.post, stack.http_url + path, data=body, headers=headers, timeout=120)
    assert reply.status_code == 200 and "Paris" in reply.json()["response"]
    assert (await history_line(history_dir, "signed-1"))["token"] == "alice"
    forged = signed_headers("not-a-token", body, path)
    reply = await asyncio.to_thread(requests.post, stack.http_url + path, data=body, headers=forged, timeout=120)
    assert reply.status_code == 401


async def test_a_bridge_without_tokens_forwards_the_clients_and_the_server_names_it(
    stack: Stack, data_dir: Path, history_dir: Path
) -> None:
    bridge = BridgeServer(make_config(data_dir), stack.grpc_target)
    await bridge.start()
    url = f"http://127.0.0.1:{bridge.port}"
    try:
        assert (await post(url, None)).status_code == 401
        reply = await post(url, f"Bearer {ALICE}", headers={"X-Request-Id": "forwarded-1"})
        assert reply.status_code == 200
    finally:
        await bridge.stop()
    assert (await history_line(history_dir, "forwarded-1"))["token"] == "alice"
