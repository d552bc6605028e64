"""The knowledge base through the real gRPC server: real embedder and a real Milvus store (milvus-lite,
and a Milvus server inside a network namespace: tests/milvus_backends.py), over the fake engine, which
shows exactly what the retrieved chunks put in front of the model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from chatllm.clients import AsyncChatClient
from chatllm.proto import pb
from chatllm.server.app import ChatLLMServer
from chatllm.server.chat import NOTHING_RELEVANT_PROMPT
from tests.fake_engine import FakeEngine
from tests.milvus_backends import BACKENDS, milvus_uri_for
from tests.servers import grpc_server
from tests.stack import fake_config

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.model]  # the real embedder

ROUTER = b"""# Zephyr R7 router

## Factory reset

Hold the pinhole button on the back for twelve seconds until the lamp turns violet.
The router then restores the factory settings and restarts.

## Default Wi-Fi password

The default Wi-Fi password of the Zephyr R7 is printed under the stand: tangerine-42.
"""
HANDBOOK_ZH = """青木科技员工手册

年假：员工每年享有十五天带薪年假，入职满三年后增加到二十天。年假需提前两周在人事系统中申请。

报销：差旅费用需在出差结束后三十天内提交发票，超过期限的发票财务部不予受理。
""".encode()
ORCHARD = b"The Larkspur orchard grows seventeen varieties of pears and ships them every October."


PERU = "What is the capital of Peru?"
TEA_CLUB = b"""# Willow Street tea club handbook

## Brewing
Green tea is brewed with water at 80 degrees Celsius for two minutes; black tea with boiling water for four.

## Meetings
The club meets on the first Saturday of every month in the library's reading room at 3 pm.

## Membership
Membership costs 25 euros a year and includes one tasting kit per season.
"""


def config_for(data_dir: Path, uri: str, **overrides: object):
    return fake_config(
        data_dir,
        knowledge_base=True,
        milvus_uri=uri,
        chunk_size=200,
        chunk_overlap=20,
        max_upload_bytes=64 * 1024,
        **overrides,
    )


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest_asyncio.fixture(scope="module", params=BACKENDS)
async def server(
    request: pytest.FixtureRequest, data_dir: Path, engine: FakeEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ChatLLMServer]:
    uri = milvus_uri_for(request.param, tmp_path_factory.mktemp("kb"))
    config = config_for(data_dir, uri, kb_index_dir=str(tmp_path_factory.mktemp("kb-indexes")))
    async with grpc_server(config, engine) as running:
        yield running


@pytest_asyncio.fixture
async def client(server: ChatLLMServer) -> AsyncIterator[AsyncChatClient]:
    async with AsyncChatClient(f"127.0.0.1:{server.port}") as c:
        yield c


async def rpc_error(awaitable: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable  # type: ignore[misc]
    return err.value


async def test_ingest_then_retrieve_english_and_chinese(client: AsyncChatClient) -> None:
    router = await client.ingest(data=ROUTER, filename="zephyr.md", knowledge_base="devices")
    handbook = await client.ingest(data=HANDBOOK_ZH, filename="手册.txt", knowledge_base="devices")
    assert router.chunks >= 2 and not router.unchanged and len(router.document_id) == 64
    assert handbook.chunks >= 1 and handbook.characters == len(HANDBOOK_ZH.decode().strip())

    sources = await client.retrieve("How do I reset the router to factory settings?", "devices", top_k=2)
    assert sources[0].file == "zephyr.md" and "twelve seconds" in sources[0].text
    assert sources[0].score >= sources[-1].score > 0

    sources = await client.retrieve("报销发票要在多少天内提交？", "devices", top_k=1)
    assert (
        sources[0].file == "手册.txt" and "三十天" in sources[0].text and sources[0].document_id == handbook.document_id
    )

    documents = {d.filename: d for d in await client.list_documents("devices")}
    assert set(documents) == {"zephyr.md", "手册.txt"}
    assert documents["zephyr.md"].size_bytes == len(ROUTER) and documents["zephyr.md"].chunks == router.chunks
    bases = {k.name: k for k in await client.list_knowledge_bases()}
    assert bases["devices"].documents == 2 and bases["devices"].chunks == router.chunks + handbook.chunks


async def test_reingesting_the_same_bytes_is_a_no_op(client: AsyncChatClient) -> None:
    first = await client.ingest(data=ORCHARD, filename="orchard.txt", knowledge_base="same")
    again = await client.ingest(data=ORCHARD, filename="orchard.txt", knowledge_base="same")
    assert again.unchanged and not first.unchanged
    assert (again.document_id, again.chunks) == (first.document_id, first.chunks)
    assert [d.id for d in await client.list_documents("same")] == [first.document_id]
    assert len(await client.retrieve("How many varieties of pears does the orchard grow?", "same", top_k=5)) == 1


async def test_new_content_under_the_same_filename_replaces_the_old(client: AsyncChatClient) -> None:
    old = await client.ingest(
        data=b"The cafeteria opens at 7:30 and serves plum soup.", filename="cafe.txt", knowledge_base="replace"
    )
    new = await client.ingest(
        data=b"The cafeteria opens at 9:15 and serves lentil stew.", filename="cafe.txt", knowledge_base="replace"
    )
    assert list(new.replaced_document_ids) == [old.document_id]
    documents = await client.list_documents("replace")
    assert [(d.id, d.filename) for d in documents] == [(new.document_id, "cafe.txt")]
    texts = [
        s.text
        for s in await client.retrieve("When does the cafeteria open and what does it serve?", "replace", top_k=5)
    ]
    assert texts == ["The cafeteria opens at 9:15 and serves lentil stew."]


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "broken.pdf: not a valid .pdf file"),
        ("notes.docx", b"PK\x03\x04 truncated zip", "notes.docx: not a valid .docx file"),
        ("tool.exe", b"MZ\x90\x00binary", "tool.exe: unsupported file type .exe"),
        ("blob.txt", b"\x00\x01\x02\x03\xff\xfe\xfd binary", "blob.txt: not a valid .txt file"),
        ("empty.txt", b"", "empty.txt: the file is empty"),
        ("big.txt", b"x" * (64 * 1024 + 1), "big.txt: larger than the 65536-byte upload limit"),
    ],
)
async def test_bad_files_are_invalid_argument_naming_the_file_and_store_nothing(
    client: AsyncChatClient, filename: str, data: bytes, expected: str
) -> None:
    error = await rpc_error(client.ingest(data=data, filename=filename, knowledge_base="rejects"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()
    assert "rejects" not in {k.name for k in await client.list_knowledge_bases()}


async def test_malformed_ingest_streams_are_rejected(client: AsyncChatClient) -> None:
    only_bytes = client.stub.Ingest(iter([pb.IngestRequest(chunk=b"hello")]))
    error = await rpc_error(only_bytes)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("header:")
    no_name = client.stub.Ingest(iter([pb.IngestRequest(header=pb.IngestHeader()), pb.IngestRequest(chunk=b"x")]))
    error = await rpc_error(no_name)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("header.filename:")
    bad_kb = client.ingest(data=b"hello", filename="a.txt", knowledge_base="no spaces allowed")
    error = await rpc_error(bad_kb)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("header.knowledge_base:")


async def test_delete_document_and_knowledge_base(client: AsyncChatClient) -> None:
    kept = await client.ingest(data=ORCHARD, filename="orchard.txt", knowledge_base="deleting")
    gone = await client.ingest(data=ROUTER, filename="zephyr.md", knowledge_base="deleting")
    assert await client.delete_document(gone.document_id, "deleting") == gone.chunks
    assert [d.id for d in await client.list_documents("deleting")] == [kept.document_id]
    assert await client.retrieve("router factory reset violet lamp", "deleting", top_k=5) == []  # nothing left on it
    pears = await client.retrieve("How many pear varieties grow in the Larkspur orchard?", "deleting", top_k=5)
    assert {s.file for s in pears} == {"orchard.txt"}

    error = await rpc_error(client.delete_document(gone.document_id, "deleting"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await rpc_error(client.delete_document("not-an-id", "deleting"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("document_id:")

    assert await client.delete_knowledge_base("deleting") == 1
    assert "deleting" not in {k.name for k in await client.list_knowledge_bases()}
    error = await rpc_error(client.retrieve("pears", "deleting"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "deleting" in error.details()


async def test_generate_with_the_knowledge_base_answers_with_sources(
    client: AsyncChatClient, engine: FakeEngine
) -> None:
    await client.ingest(data=ROUTER, filename="zephyr.md", knowledge_base="answers")
    question = "What is the default Wi-Fi password of the Zephyr R7?"
    result = await client.chat(
        question,
        knowledge_base="answers",
        retrieval_top_k=2,
        temperature=0.0,
        max_new_tokens=24,
    )
    assert result.text == engine.answer and result.finish_reason == "stop"
    assert result.sources and {s.file for s in result.sources} == {"zephyr.md"}  # the reset chunk may fall short
    assert "tangerine-42" in result.sources[0].text
    assert result.timings.retrieval_seconds > 0
    prompt = engine.prompts[-1]  # the model is given the chunks it cites, then the question
    assert all(s.text.strip() in prompt for s in result.sources) and prompt.index("tangerine-42") < prompt.index(
        question
    )

    error = await rpc_error(client.chat("anything", knowledge_base="missing-kb", max_new_tokens=4))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("backend", BACKENDS)
async def test_documents_survive_a_server_restart(
    data_dir: Path, engine: FakeEngine, tmp_path: Path, backend: str
) -> None:
    db = milvus_uri_for(backend, tmp_path)
    indexes = str(tmp_path / "indexes")
    async with grpc_server(config_for(data_dir, db, kb_index_dir=indexes), engine) as first:
        async with AsyncChatClient(f"127.0.0.1:{first.port}") as client:
            stored = await client.ingest(data=HANDBOOK_ZH, filename="手册.txt", knowledge_base="persist")
            await client.ingest(data=ORCHARD, filename="orchard.txt", knowledge_base="persist")
    async with grpc_server(config_for(data_dir, db, kb_index_dir=indexes), engine) as second:
        async with AsyncChatClient(f"127.0.0.1:{second.port}") as client:
            assert {d.filename for d in await client.list_documents("persist")} == {"手册.txt", "orchard.txt"}
            # A Chinese question needs the lexical leg, which must have been rebuilt from the store.
            sources = await client.retrieve("年假有多少天？", "persist", top_k=1)
            assert sources[0].document_id == stored.document_id and "十五天" in sources[0].text
            again = await client.ingest(data=HANDBOOK_ZH, filename="手册.txt", knowledge_base="persist")
            assert again.unchanged


async def test_off_topic_questions_get_no_sources_and_an_answer_that_says_so(
    client: AsyncChatClient, server: ChatLLMServer, engine: FakeEngine
) -> None:
    await client.ingest(data=TEA_CLUB, filename="tea-club.md", knowledge_base="tea")
    assert await client.retrieve(PERU, "tea", top_k=3) == []
    assert await client.retrieve("秘鲁的首都是哪座城市？", "tea", top_k=3) == []
    on_topic = await client.retrieve("At what temperature should green tea be brewed?", "tea", top_k=3)
    assert on_topic and "80 degrees" in on_topic[0].text
    assert all(s.score >= server.config.kb.kb_min_score for s in on_topic)

    result = await client.chat(PERU, knowledge_base="tea", retrieval_top_k=3, temperature=0.0, max_new_tokens=16)
    assert list(result.sources) == [] and result.text == engine.answer
    assert result.timings.retrieval_seconds > 0  # it did look
    assert NOTHING_RELEVANT_PROMPT.format(question=PERU) in engine.prompts[-1]  # the model is told to say so
