"""The PAI-EAS ecosystem's own clients against the real bridge and server (over the fake engine: what is
checked is signing and stream framing): the official `eas-prediction` SDK (signed requests), LangChain's
PaiEasEndpoint / PaiEasChatEndpoint (delta streams), and the signature's edge cases."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests

from tests.fake_engine import FakeEngine
from tests.stack import Stack, fake_config, serving_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "eas-s3cret"
SERVICE = "chatllm_demo"
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
HOURS_2 = datetime.timedelta(hours=2)
SDK_CALL = Path(__file__).resolve().parent.parent / "clients" / "eas_sdk_call.py"


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path) -> AsyncIterator[Stack]:
    # LangChain's PAI-EAS classes join NUL-delimited pieces: they need the delta stream mode.
    config = fake_config(data_dir, token=TOKEN, legacy_stream="delta", max_new_tokens=24, temperature=0.0)
    async with serving_stack(config, FakeEngine(answer=ANSWER)) as running:
        yield running


def sdk_call(stack: Stack, body: str, token: str = TOKEN, tmp: Path | None = None) -> dict[str, Any]:
    assert tmp is not None
    body_file = tmp / "body.txt"
    body_file.write_text(body, encoding="utf-8")
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    endpoint = stack.http_url.removeprefix("http://")
    done = subprocess.run(
        [sys.executable, str(SDK_CALL), endpoint, SERVICE, token, str(body_file)],
        capture_output=True, text=True, env=env, timeout=180, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def test_the_official_sdk_signs_and_gets_the_answer(stack: Stack, tmp_path: Path) -> None:
    plain = await asyncio.to_thread(sdk_call, stack, QUESTION, TOKEN, tmp_path)
    assert plain["status"] == 200 and "Paris" in json.loads(plain["body"])["response"]
    body = json.dumps({"prompt": QUESTION, "temperature": 0, "use_stream_chat": False})
    whole = await asyncio.to_thread(sdk_call, stack, body, TOKEN, tmp_path)
    assert whole["status"] == 200 and "Paris" in json.loads(whole["body"])["response"]
    streamed = await asyncio.to_thread(
        sdk_call, stack, json.dumps({"prompt": QUESTION, "temperature": 0, "use_stream_chat": True}), TOKEN, tmp_path
    )
    objects = [json.loads(o) for o in streamed["body"].split("\0") if o]
    assert streamed["status"] == 200 and len(objects) >= 2
    assert "".join(o["response"] for o in objects) == json.loads(whole["body"])["response"]  # delta mode


async def test_the_sdk_with_a_wrong_token_gets_401(stack: Stack, tmp_path: Path) -> None:
    refused = await asyncio.to_thread(sdk_call, stack, QUESTION, "wrong-token", tmp_path)
    assert refused["status"] == 401 and "signature does not match" in refused["body"]


def signed_headers(
    body: bytes, path: str, *, token: str = TOKEN, date: datetime.datetime | None = None
) -> dict[str, str]:
    """What the SDK sends (predict_client.generate_singaure): local time with a GMT suffix."""
    stamp = (date or datetime.datetime.now()).strftime("%a, %d %b %Y %H:%M:%S GMT")
    md5 = hashlib.md5(body).hexdigest()
    text = f"POST\n{md5}\napplication/octet-stream\n{stamp}\n{path}"
    signature = base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()
    return {"Authorization": f"EAS {signature}", "Content-MD5": md5, "Date": stamp,
            "Content-Type": "application/octet-stream"}  # fmt: skip


async def post(url: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return await asyncio.to_thread(requests.post, url, data=body, headers=headers, timeout=120)


async def test_signature_edge_cases_are_401_with_the_reason(stack: Stack) -> None:
    path = f"/api/predict/{SERVICE}"
    body = json.dumps({"prompt": QUESTION, "max_new_tokens": 4}).encode()
    ok = await post(stack.http_url + path, body, signed_headers(body, path))
    assert ok.status_code == 200
    cases = {
        "does not match the body": (body + b" ", signed_headers(body, path)),
        "away from the server's clock": (body, signed_headers(body, path, date=datetime.datetime.now() - HOURS_2)),
        "signature does not match": (body, signed_headers(body, "/api/predict/other")),
    }  # fmt: skip
    for reason, (sent, headers) in cases.items():
        refused = await post(stack.http_url + path, sent, headers)
        assert refused.status_code == 401 and reason in refused.json()["error"]["message"], refused.text
    openai_route = await post(stack.http_url + "/v1/completions", body, signed_headers(body, "/v1/completions"))
    assert openai_route.status_code == 401  # the OpenAI routes take the raw token only
    for raw in (TOKEN, f"Bearer {TOKEN}"):
        assert (await post(stack.http_url + path, body, {"Authorization": raw})).status_code == 200
    # Every legacy POST route takes a signature over its own path (the seed's clients post to "/").
    for other in ("/", "/chat"):
        signed = await post(stack.http_url + other, body, signed_headers(body, other))
        assert signed.status_code == 200 and signed.json()["response"], signed.text
        elsewhere = await post(stack.http_url + other, body, signed_headers(body, path))
        assert elsewhere.status_code == 401 and "signature does not match" in elsewhere.json()["error"]["message"]


async def test_langchain_pai_eas_classes_stream_what_they_invoke(stack: Stack) -> None:
    from langchain_community.chat_models import PaiEasChatEndpoint
    from langchain_community.llms import PaiEasEndpoint

    url = stack.http_url + f"/api/predict/{SERVICE}"
    llm = PaiEasEndpoint(eas_service_url=url, eas_service_token=TOKEN, temperature=0.0, top_k=1, max_new_tokens=24)
    invoked = await asyncio.to_thread(llm.invoke, QUESTION)
    pieces = await asyncio.to_thread(lambda: list(llm.stream(QUESTION, stop=["<never>"])))
    assert "Paris" in invoked and len(pieces) >= 2 and "".join(pieces) == invoked
    chat = PaiEasChatEndpoint(eas_service_url=url, eas_service_token=TOKEN, temperature=0.0, top_k=1, max_new_tokens=24)
    reply = await asyncio.to_thread(chat.invoke, QUESTION)
    assert "Paris" in str(reply.content)
    # The same text as a direct request at temperature 0, for both classes.
    direct = {"prompt": QUESTION, "temperature": 0, "top_k": 1, "max_new_tokens": 24}
    answer = await post(url, json.dumps(direct).encode(), {"Authorization": TOKEN})
    assert answer.status_code == 200
    assert invoked == answer.json()["response"] == str(reply.content)


async def test_a_request_can_ask_for_cumulative_on_a_delta_server(stack: Stack) -> None:
    body = {"prompt": QUESTION, "use_stream_chat": True, "temperature": 0, "stream_mode": "cumulative"}
    response = await asyncio.to_thread(
        requests.post, stack.http_url + "/", json=body, headers={"Authorization": TOKEN}, timeout=120
    )
    texts = [json.loads(o)["response"] for o in response.content.split(b"\0") if o]
    assert len(texts) >= 2 and all(b.startswith(a) for a, b in itertools.pairwise(texts))
