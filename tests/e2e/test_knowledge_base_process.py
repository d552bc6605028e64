"""`chatllm server` with the knowledge base as a subprocess (real embedder and milvus-lite, over the fake
engine: what is tested is the knowledge base's): kill -9 in the middle of an ingest, and the
`chatllm ingest` / `chatllm kb` / `chatllm chat --kb` commands against it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from chatllm.clients import ChatClient
from chatllm.retrieval.ingest_pipeline import WRITE_BATCH
from tests.conftest import FAKE_CHATLLM

DATA = Path(__file__).resolve().parent.parent / "data"
EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2, the default
HANDBOOK_ZH = "青木科技员工手册：员工每年享有十五天带薪年假，入职满三年后增加到二十天。".encode()


def server_args(data_dir: Path, db: Path, *extra: str) -> list[str]:
    return [
        "server",
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--data-dir",
        str(data_dir),
        "--knowledge-base",
        "--milvus-uri",
        str(db),
        *extra,
    ]


def start_server(chatllm_process, data_dir: Path, db: Path, *extra: str) -> tuple[object, int]:
    proc = chatllm_process(server_args(data_dir, db, *extra), program=FAKE_CHATLLM)
    port = proc.grpc_port()
    proc.wait_for_log(r"ready: ", timeout=300)
    return proc, port


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatllm.clients.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def wait_for(condition: Callable[[], bool], proc, timeout: float) -> None:
    """Poll every 2 ms: the kill must land inside a write phase of a fraction of a second."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.proc.poll() is None, proc.log()[-3000:]
        assert time.monotonic() < deadline, f"condition not met; log:\n{proc.log()[-3000:]}"
        time.sleep(0.002)


def wait_for_log_fast(proc, pattern: str, timeout: float) -> None:
    regex = re.compile(pattern)
    wait_for(lambda: bool(regex.search(proc.log())), proc, timeout)


def test_kill_9_during_an_ingest_leaves_no_partial_document(data_dir: Path, tmp_path: Path, chatllm_process) -> None:
    """A committed document whose indexes were saved, then a kill in the middle of the next ingest: the
    restart loads the saved indexes, removes the journalled rows of the unfinished ingest, and the first
    document is still found by the lexical leg (a Chinese question)."""
    db = tmp_path / "kb.db"
    proc, port = start_server(chatllm_process, data_dir, db, "--chunk-size", "100", "--chunk-overlap", "10")
    with ChatClient(f"127.0.0.1:{port}", timeout=300) as client:
        handbook = client.ingest(data=HANDBOOK_ZH, filename="手册.txt", knowledge_base="plant")
    proc.wait_for_log(r"saved the index snapshot of plant", timeout=120)
    lines = [
        f"Pump {i} sits in hall {i % 7} and is inspected every {i % 9 + 2} weeks by crew {i % 5}." for i in range(700)
    ]
    document = "\n".join(lines).encode()
    outcome: dict[str, object] = {}

    def ingest() -> None:
        with ChatClient(f"127.0.0.1:{port}", timeout=600) as client:
            try:
                outcome["response"] = client.ingest(data=document, filename="pumps.txt", knowledge_base="plant")
            except grpc.RpcError as exc:
                outcome["error"] = exc.code()

    uploader = threading.Thread(target=ingest)
    uploader.start()
    wait_for_log_fast(proc, r"writing \d+ chunks of pumps\.txt", timeout=600)
    # Kill once the first batch of chunk rows is durable: milvus-lite appends each insert to the
    # collection's WAL file, so past 1.5 batches of vectors the first batch is whole, the last not begun.
    wal = db / "collections" / "kb_plant" / "wal"
    first_batch_written = WRITE_BATCH * EMBEDDING_DIMENSIONS * 4 * 1.5
    wait_for(lambda: any(f.stat().st_size > first_batch_written for f in wal.glob("wal_data_*")), proc, timeout=60)
    os.kill(proc.proc.pid, signal.SIGKILL)
    uploader.join(60)
    assert outcome.get("error") == grpc.StatusCode.UNAVAILABLE, "the kill must interrupt the ingest"
    expected_chunks = int(re.search(r"writing (\d+) chunks of pumps\.txt", proc.log()).group(1))  # type: ignore[union-attr]

    restarted, port = start_server(chatllm_process, data_dir, db, "--chunk-size", "100", "--chunk-overlap", "10")
    assert re.search(r"indexes loaded for 1 knowledge bases, rebuilt for 0", restarted.log()), restarted.log()[-3000:]
    with ChatClient(f"127.0.0.1:{port}", timeout=120) as client:
        documents = [d for d in client.list_documents("plant") if d.filename == "pumps.txt"]
        if documents:  # killed after the commit point: then it must be whole
            assert [d.chunks for d in documents] == [expected_chunks]
        else:
            assert client.list_knowledge_bases()[0].chunks == handbook.chunks
            removed = re.search(r"recovery removed (\d+) orphaned chunks", restarted.log())
            assert removed and 0 < int(removed.group(1)) < expected_chunks, restarted.log()[-3000:]
            found = client.retrieve("Which crew inspects pump 42?", "plant", top_k=5)
            assert all(s.file != "pumps.txt" for s in found)
        # The saved lexical index still finds the first document for a Chinese question.
        sources = client.retrieve("员工每年有多少天带薪年假？", "plant", top_k=1)
        assert sources and sources[0].document_id == handbook.document_id
        # Whatever the kill left, the same bytes ingest cleanly afterwards.
        again = client.ingest(data=document, filename="pumps.txt", knowledge_base="plant")
        assert again.chunks == expected_chunks and again.unchanged == bool(documents)
        assert client.list_knowledge_bases()[0].chunks == expected_chunks + handbook.chunks


def test_cli_ingest_list_chat_and_delete(data_dir: Path, tmp_path: Path, chatllm_process) -> None:
    _, port = start_server(chatllm_process, data_dir, tmp_path / "kb.db")
    target = ["--target", f"127.0.0.1:{port}"]
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really")

    result = run_cli(
        [
            "ingest",
            str(DATA / "kb_en"),
            str(DATA / "kb_zh" / "云雀智能音箱说明书.md"),
            str(broken),
            "--kb",
            "manuals",
            *target,
        ]
    )
    assert result.returncode == 1, result.stderr  # one file failed
    assert "broken.pdf: INVALID_ARGUMENT: filename: broken.pdf: not a valid .pdf file" in result.stderr
    assert "4 of 5 files in knowledge base 'manuals'" in result.stdout
    assert "ingest" in result.stderr and "chunks=" in result.stderr  # the progress bar

    again = run_cli(["ingest", str(DATA / "kb_en" / "nimbus-t3-manual.md"), "--kb", "manuals", "--quiet", *target])
    assert again.returncode == 0 and "unchanged" in again.stdout

    listing = run_cli(["kb", "list", *target])
    assert re.search(r"^manuals\s+4\s+\d+", listing.stdout, re.M), listing.stdout
    documents = run_cli(["kb", "list", "--kb", "manuals", *target])
    rows = {line.split()[-1]: line.split()[0] for line in documents.stdout.splitlines()[1:]}
    assert set(rows) == {
        "nimbus-t3-manual.md",
        "harbor-lane-handbook.txt",
        "kestrel-e-bike-faq.md",
        "云雀智能音箱说明书.md",
    }

    chat = run_cli(
        [
            "chat",
            "--kb",
            "manuals",
            "--sources",
            "--temperature",
            "0",
            "--max-new-tokens",
            "16",
            "How long is the Nimbus thermostat warranty?",
            *target,
        ]
    )
    assert chat.returncode == 0, chat.stderr
    assert "[nimbus-t3-manual.md #" in chat.stdout

    deleted = run_cli(["kb", "delete", "--kb", "manuals", rows["云雀智能音箱说明书.md"], *target])
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    missing = run_cli(["kb", "delete", "--kb", "manuals", rows["云雀智能音箱说明书.md"], *target])
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    gone = run_cli(["kb", "delete", "--kb", "manuals", "--all", *target])
    assert gone.returncode == 0 and "3 documents" in gone.stdout
    assert "manuals" not in run_cli(["kb", "list", *target]).stdout


@pytest.mark.parametrize("args", [["kb", "delete", "--kb", "x"], ["kb", "delete", "--kb", "x", "abc", "--all"]])
def test_kb_delete_needs_exactly_one_of_id_or_all(args: list[str]) -> None:
    result = run_cli([*args, "--target", "127.0.0.1:1"])
    assert result.returncode == 2 and "--all" in result.stderr
