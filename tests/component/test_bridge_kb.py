"""Knowledge base through the real bridge: multipart upload / list / delete, and `langchain: true`
over HTTP (plain and streamed) and WebSocket, with the real server, milvus-lite and embedder, over the
fake engine (which shows what the retrieved chunks put in front of the model)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests
import websocket

from chatllm.bridge.runner import BridgeServer
from chatllm.kernel.config import Config
from tests.fake_engine import FakeEngine
from tests.servers import grpc_server
from tests.stack import fake_config

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.model]  # the real embedder

TOKEN = "kb-secret"
AUTH = {"Authorization": TOKEN}
UPLOAD_LIMIT = 32 * 1024
ROUTER = b"""# Zephyr R7 router

## Default Wi-Fi password

The default Wi-Fi password of the Zephyr R7 is printed under the stand: tangerine-42.

## Factory reset

Hold the pinhole button on the back for twelve seconds until the lamp turns violet.
"""
SPEAKER_ZH = "云雀 S2 智能音箱的保修期为十八个月，售后服务热线为 400-800-1234。".encode()


@pytest_asyncio.fixture(scope="module")
async def engine() -> FakeEngine:
    return FakeEngine()


@pytest_asyncio.fixture(scope="module")
async def server(
    data_dir: Path, engine: FakeEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Config, int]]:
    """The gRPC server's config and port."""
    config = fake_config(
        data_dir,
        knowledge_base=True,
        milvus_uri=str(tmp_path_factory.mktemp("bridge-kb") / "kb.db"),
        temperature=0.0,
        max_new_tokens=24,
        max_upload_bytes=UPLOAD_LIMIT,
        token=TOKEN,
        chunk_size=200,
        chunk_overlap=20,
    )
    async with grpc_server(config, engine) as running:
        yield config, running.port


@contextlib.asynccontextmanager
async def bridge_to(config: Config, port: int) -> AsyncIterator[str]:
    bridge = BridgeServer(config, f"127.0.0.1:{port}")
    await bridge.start()
    try:
        yield f"http://127.0.0.1:{bridge.port}"
    finally:
        await bridge.stop()


@pytest_asyncio.fixture(scope="module")
async def base_url(server: tuple[Config, int]) -> AsyncIterator[str]:
    async with bridge_to(*server) as url:
        yield url


async def call(method: str, url: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", AUTH)
    return await asyncio.to_thread(requests.request, method, url, timeout=180, **kwargs)


async def upload(base_url: str, kb: str, *files: tuple[str, bytes], **kwargs: Any) -> requests.Response:
    parts = [("file", (name, data)) for name, data in files]
    return await call("POST", f"{base_url}/api/kb/{kb}/documents", files=parts, **kwargs)


async def test_upload_several_files_then_list_them(base_url: str) -> None:
    reply = await upload(base_url, "manuals", ("zephyr.md", ROUTER), ("云雀.txt", SPEAKER_ZH))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["knowledge_base"] == "manuals"
    stored = {d["filename"]: d for d in body["documents"]}
    assert set(stored) == {"zephyr.md", "云雀.txt"}
    assert stored["zephyr.md"]["chunks"] >= 2 and not stored["zephyr.md"]["unchanged"]
    assert len(stored["云雀.txt"]["document_id"]) == 64

    again = (await upload(base_url, "manuals", ("zephyr.md", ROUTER))).json()
    assert again["documents"][0]["unchanged"] is True

    listed = (await call("GET", f"{base_url}/api/kb/manuals/documents")).json()["documents"]
    assert {(d["filename"], d["id"], d["chunks"]) for d in listed} == {
        (name, d["document_id"], d["chunks"]) for name, d in stored.items()
    }
    assert {"size_bytes", "created_unix"} <= set(listed[0])
    bases = (await call("GET", f"{base_url}/api/kb")).json()["knowledge_bases"]
    manuals = next(k for k in bases if k["name"] == "manuals")
    assert manuals["documents"] == 2 and manuals["chunks"] == sum(d["chunks"] for d in stored.values())


async def test_the_token_is_required(base_url: str) -> None:
    for method, path in [
        ("POST", "/api/kb/manuals/documents"),
        ("GET", "/api/kb"),
        ("GET", "/api/kb/manuals/documents"),
    ]:
        reply = await call(method, base_url + path, headers={}, files=[("file", ("a.txt", b"hi"))])
        assert reply.status_code == 401, (method, path)


async def test_a_file_over_the_upload_limit_is_413_and_stores_nothing(base_url: str) -> None:
    reply = await upload(base_url, "limits", ("huge.txt", b"word " * (UPLOAD_LIMIT // 4)))
    assert reply.status_code == 413
    assert reply.json()["error"]["message"].startswith("file: huge.txt: larger than the 32768-byte upload limit")
    assert "limits" not in {k["name"] for k in (await call("GET", f"{base_url}/api/kb")).json()["knowledge_bases"]}


async def test_the_servers_smaller_limit_is_a_413_not_a_lost_status(server: tuple[Config, int]) -> None:
    """A bridge allowing more than its server: the server ends each Ingest call while the bridge is
    still sending chunks, and every upload must come back with the server's own reason (CI once got
    grpc.aio's bare "Internal error from Core" from a write in flight)."""
    config, port = server
    async with bridge_to(config.replace(max_upload_bytes=1000 * UPLOAD_LIMIT), port) as url:
        for attempt in range(20):
            reply = await upload(url, "server-limit", ("huge.txt", b"word " * (100 * UPLOAD_LIMIT // 5)))
            assert reply.status_code == 413, (attempt, reply.text)
            assert "huge.txt: larger than the 32768-byte upload limit" in reply.json()["error"]["message"], reply.text
        bases = (await call("GET", f"{url}/api/kb")).json()["knowledge_bases"]
        assert "server-limit" not in {k["name"] for k in bases}


async def test_a_bad_file_is_400_naming_it_and_earlier_files_are_reported(base_url: str) -> None:
    reply = await upload(base_url, "mixed", ("good.txt", b"Pears ripen in October."), ("broken.pdf", b"%PDF-1.4 junk"))
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"]["param"] == "file" and "broken.pdf: not a valid .pdf file" in body["error"]["message"]
    assert [d["filename"] for d in body["documents"]] == ["good.txt"]
    names = [d["filename"] for d in (await call("GET", f"{base_url}/api/kb/mixed/documents")).json()["documents"]]
    assert names == ["good.txt"]

    unsupported = await upload(base_url, "mixed", ("tool.exe", b"MZ" * 1000))
    assert unsupported.status_code == 400 and "tool.exe: unsupported file type .exe" in unsupported.text
    assert (await call("POST", f"{base_url}/api/kb/mixed/documents", data=b"raw")).status_code == 400
    bad_name = await upload(base_url, "no%20spaces", ("a.txt", b"hello"))
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "kb"


async def test_delete_a_document_and_a_knowledge_base(base_url: str) -> None:
    stored = (await upload(base_url, "scratch", ("a.txt", b"Alpha."), ("b.txt", b"Beta."))).json()["documents"]
    first = stored[0]["document_id"]
    deleted = await call("DELETE", f"{base_url}/api/kb/scratch/documents/{first}")
    assert deleted.status_code == 200 and deleted.json()["chunks_deleted"] == stored[0]["chunks"]
    assert (await call("DELETE", f"{base_url}/api/kb/scratch/documents/{first}")).status_code == 404
    remaining = (await call("GET", f"{base_url}/api/kb/scratch/documents")).json()["documents"]
    assert [d["filename"] for d in remaining] == ["b.txt"]
    dropped = await call("DELETE", f"{base_url}/api/kb/scratch")
    assert dropped.json() == {"knowledge_base": "scratch", "documents_deleted": 1}
    assert (await call("GET", f"{base_url}/api/kb/scratch/documents")).status_code == 404


def assert_sources(sources: list[dict[str, Any]], file: str, evidence: str) -> None:
    assert sources and all(set(s) == {"file", "chunk", "score", "text"} for s in sources)
    assert sources[0]["file"] == file and evidence in sources[0]["text"]
    assert sources[0]["score"] >= sources[-1]["score"] > 0


async def test_langchain_true_over_http_returns_the_answer_and_sources(base_url: str, engine: FakeEngine) -> None:
    question = "What is the default Wi-Fi password of the Zephyr R7?"
    body = {"prompt": question, "langchain": True, "kb": "manuals", "use_stream_chat": False}
    reply = (await call("POST", base_url + "/", json=body)).json()
    assert "tangerine-42" in engine.prompts[-1] and question in engine.prompts[-1]  # the model was given the chunk
    assert reply["response"] == engine.answer
    assert reply["history"] == [[question, reply["response"]]]
    assert_sources(reply["sources"], "zephyr.md", "tangerine-42")

    streamed = await call("POST", base_url + "/", json=body | {"use_stream_chat": True})
    objects = [json.loads(p) for p in streamed.content.split(b"\0") if p]
    assert len(objects) > 1 and all("sources" not in o for o in objects[:-1])
    assert objects[-1]["response"] == reply["response"]
    assert objects[-1]["sources"] == reply["sources"]

    plain = (await call("POST", base_url + "/", json={"prompt": question, "use_stream_chat": False})).json()
    assert "sources" not in plain


async def test_langchain_true_over_websocket_sends_sources_before_eos(base_url: str, engine: FakeEngine) -> None:
    await upload(base_url, "default", ("云雀.txt", SPEAKER_ZH))  # no "kb" field: the default knowledge base

    def converse() -> list[str]:
        ws = websocket.create_connection(
            base_url.replace("http", "ws") + "/", header=[f"Authorization: {TOKEN}"], timeout=180
        )
        try:
            ws.send(json.dumps({"prompt": "云雀音箱的保修期是多久？", "langchain": True}))
            frames = []
            while (frame := ws.recv()) != "<EOS>":
                frames.append(frame)
            return frames
        finally:
            ws.close()

    frames = await asyncio.to_thread(converse)
    answer, last = "".join(frames[:-1]), json.loads(frames[-1])
    assert answer == engine.answer and "十八个月" in engine.prompts[-1]
    assert list(last) == ["sources"]
    assert_sources(last["sources"], "云雀.txt", "十八个月")


async def test_an_off_topic_question_gets_empty_sources(base_url: str) -> None:
    await upload(base_url, "offtopic", ("zephyr.md", ROUTER))
    body = {"prompt": "What is the capital of Peru?", "langchain": True, "kb": "offtopic", "use_stream_chat": False}
    reply = await call("POST", base_url + "/", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["sources"] == [] and reply.json()["response"]
