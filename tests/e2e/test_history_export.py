"""History export through a real `chatllm server` subprocess (over the fake engine: the export is the
server's, whatever the model says): rotation, SIGTERM flush, kill -9."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from chatllm.clients import ChatClient
from chatllm.clients.wire import ChatResult
from chatllm.server.history import HistoryExporter
from tests.conftest import FAKE_CHATLLM, ChatllmProcess
from tests.fake_chatllm import STALL_ENV

INTERVAL = 2  # seconds per file: short, so a handful of requests spans several files
WRITE_BOUND = 1.0  # coarse: a finished exchange is on disk well within this (the writer wakes per line)


def start_server(
    chatllm_process: Callable[..., ChatllmProcess], data_dir: Path, history_dir: Path
) -> tuple[ChatllmProcess, int]:
    proc = chatllm_process(
        [
            "server",
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--no-knowledge-base",
            "--data-dir",
            str(data_dir),
            "--shutdown-grace",
            "30",
            "--export-history-path",
            str(history_dir),
            "--export-interval",
            str(INTERVAL),
        ],
        env={STALL_ENV: "0.05"},  # the in-flight answer below streams for 1.5 s
        program=FAKE_CHATLLM,
    )
    port = proc.grpc_port()
    proc.wait_for_log(r"ready: ", timeout=240)
    return proc, port


def whole_lines(history_dir: Path) -> dict[str, list[dict]]:
    """Newline-terminated lines of every file (each must be valid JSON), by file name."""
    found = {}
    for path in sorted(history_dir.glob("history-*.jsonl")):
        complete = path.read_bytes().rpartition(b"\n")[0]
        found[path.name] = [json.loads(line) for line in complete.split(b"\n") if line]
    return found


def period_of(name: str) -> float:
    stamp = name.removeprefix("history-").removesuffix(".jsonl")
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc).timestamp()


def entry_time(entry: dict) -> float:
    return dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()


def test_every_exchange_is_one_line_in_its_period_file_and_sigterm_flushes(
    tmp_path: Path, data_dir: Path, chatllm_process
) -> None:
    history_dir = tmp_path / "history"
    proc, port = start_server(chatllm_process, data_dir, history_dir)
    results: dict[str, ChatResult] = {}
    sent: dict[str, dict] = {}
    deadline = time.monotonic() + 120
    with ChatClient(f"127.0.0.1:{port}") as client:
        # Keep talking until the exchanges span at least two files (real clock, INTERVAL-second files).
        i = 0
        while i < 4 or len(list(history_dir.glob("history-*.jsonl"))) < 2:
            assert time.monotonic() < deadline, "history files did not rotate"
            request_id = f"req-{i}"
            system = "Answer in one short sentence." if i % 2 else ""
            turns = [("Hi", "Hello! How can I help?")] * (i % 3)
            prompt = f"What is the capital of France? (question {i})\nThanks."
            results[request_id] = client.chat(
                prompt, system_prompt=system, history=turns, request_id=request_id, temperature=0.0, max_new_tokens=6
            )
            sent[request_id] = {"prompt": prompt, "system_prompt": system, "history_length": len(turns)}
            i += 1
        # A stream that is still generating when SIGTERM arrives: drained, then recorded.
        call = client.stream(
            "Count slowly to one hundred.", request_id="in-flight", max_new_tokens=30, ignore_eos=True, temperature=0.0
        )
        first = next(call)
        proc.proc.send_signal(signal.SIGTERM)
        rest = list(call)
    assert proc.proc.wait(60) == 0
    in_flight_text = first.text + "".join(r.text for r in rest)

    files = whole_lines(history_dir)
    for name in files:
        assert (history_dir / name).read_bytes().endswith(b"\n"), f"{name} ends mid-line after SIGTERM"
    by_id = {e["request_id"]: (name, e) for name, entries in files.items() for e in entries}
    assert sorted(by_id) == sorted([*results, "in-flight"])  # each exchange exactly once
    assert sum(len(entries) for entries in files.values()) == len(by_id)
    for request_id, result in results.items():
        name, entry = by_id[request_id]
        assert period_of(name) <= entry_time(entry) < period_of(name) + INTERVAL  # rotated by time
        assert {k: entry[k] for k in sent[request_id]} == sent[request_id]
        assert entry["channel"] == "grpc"
        assert entry["response"] == result.text and result.text
        assert entry["finish_reason"] == result.finish_reason
        assert entry["usage"] == {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        }
        assert 0 < entry["latency_seconds"] < 60
    in_flight = by_id["in-flight"][1]
    assert in_flight["response"] == in_flight_text and in_flight["finish_reason"] == "length"
    assert in_flight["usage"]["completion_tokens"] == 30


def test_kill_9_loses_nothing_written_and_leaves_only_whole_lines(
    tmp_path: Path, data_dir: Path, chatllm_process
) -> None:
    history_dir = tmp_path / "history"
    proc, port = start_server(chatllm_process, data_dir, history_dir)
    completed: dict[str, float] = {}  # request id -> when the client had the whole answer
    started: set[str] = set()
    lock = threading.Lock()

    def talk(worker: int) -> None:
        with ChatClient(f"127.0.0.1:{port}") as client:
            for n in range(1000):
                request_id = f"w{worker}-{n}"
                with lock:
                    started.add(request_id)
                try:
                    client.chat(f"Name a colour. ({request_id})", request_id=request_id, max_new_tokens=4)
                except grpc.RpcError:
                    return  # the server is gone
                with lock:
                    completed[request_id] = time.monotonic()

    workers = [threading.Thread(target=talk, args=(w,)) for w in range(3)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 120

    def talked_for_a_while() -> bool:  # some exchanges finished well before the kill, others are in flight at it
        with lock:
            return len(completed) >= 12 and time.monotonic() - min(completed.values()) > 2 * WRITE_BOUND

    while not talked_for_a_while():
        assert time.monotonic() < deadline and proc.proc.poll() is None, "requests did not complete"
        time.sleep(0.05)
    os.kill(proc.proc.pid, signal.SIGKILL)  # the process this test started, while traffic flows
    killed_at = time.monotonic()
    proc.proc.wait(30)
    for worker in workers:
        worker.join(60)

    files = whole_lines(history_dir)  # raises if any newline-terminated line is not valid JSON
    recorded = [e["request_id"] for entries in files.values() for e in entries]
    assert len(recorded) == len(set(recorded)) and set(recorded) <= started
    must_have = {rid for rid, at in completed.items() if at < killed_at - WRITE_BOUND}
    assert must_have, "no request finished well before the kill"
    assert must_have <= set(recorded), f"lost: {sorted(must_have - set(recorded))}"
    # Whatever a kill inside a write left unterminated, the next start cuts it.
    exporter = HistoryExporter(history_dir, INTERVAL)
    exporter.start()
    exporter.close()
    for path in history_dir.glob("history-*.jsonl"):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n")
    assert whole_lines(history_dir) == files
