"""History export files: naming, rotation with a fake clock, atomic lines, crash repair."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chatllm.kernel.config import Config
from chatllm.kernel.flags import validate
from chatllm.server import history, metrics
from chatllm.server.errors import StartupError
from chatllm.server.history import HistoryExporter, HistoryFiles, cut_incomplete_tail, file_name, period_start

HOUR = 3600
T0 = 1_700_000_000 - 1_700_000_000 % HOUR  # 2023-11-14T22:00:00Z


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def read_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends mid-line"
    return [json.loads(line) for line in data.decode().splitlines()]


def outcome_count(outcome: str) -> float:
    return metrics.HISTORY_LINES.labels(outcome)._value.get()


def test_periods_align_to_the_epoch_and_name_files_by_their_utc_start() -> None:
    assert period_start(T0 + 1799.9, HOUR) == T0
    assert period_start(T0 + HOUR, HOUR) == T0 + HOUR
    assert period_start(T0 + 59, 60) == T0
    assert file_name(T0) == "history-20231114T220000Z.jsonl"
    assert file_name(0) == "history-19700101T000000Z.jsonl"


def test_lines_rotate_into_one_file_per_period_with_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 10)
    exporter = HistoryExporter(tmp_path, HOUR, clock)
    exporter.start()
    for i, at in enumerate([T0 + 10, T0 + 3599.5, T0 + HOUR, T0 + HOUR + 5, T0 + 3 * HOUR + 1]):
        clock.now = at
        exporter.record({"request_id": f"r{i}", "prompt": "line one\nline two", "time": "ignored"})
    exporter.close()

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [file_name(T0), file_name(T0 + HOUR), file_name(T0 + 3 * HOUR)]
    per_file = {name: [e["request_id"] for e in read_lines(tmp_path / name)] for name in names}
    assert per_file == {names[0]: ["r0", "r1"], names[1]: ["r2", "r3"], names[2]: ["r4"]}
    first = read_lines(tmp_path / names[0])[0]
    assert first["time"] == "2023-11-14T22:00:10.000Z"  # stamped by the exporter, UTC, first key
    assert next(iter(first)) == "time"
    assert first["prompt"] == "line one\nline two"  # newlines inside a field stay inside one line


def test_a_finished_period_is_fsynced_and_closed_without_waiting_for_the_next_line(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    files = HistoryFiles(tmp_path, 60, clock)
    files.write(T0, b'{"a":1}\n')
    assert files.current_path == tmp_path / file_name(T0)
    clock.now = T0 + 59
    files.tick()
    assert files.current_path is not None
    clock.now = T0 + 60
    files.tick()
    assert files.current_path is None
    assert read_lines(tmp_path / file_name(T0)) == [{"a": 1}]


def test_an_incomplete_tail_left_by_a_crash_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / file_name(T0)
    path.write_bytes(b'{"n":1}\n{"n":2}\n{"n":3,"resp')
    files = HistoryFiles(tmp_path, HOUR, FakeClock(T0))
    files.write(T0, b'{"n":4}\n')
    files.close()
    assert read_lines(path) == [{"n": 1}, {"n": 2}, {"n": 4}]


def test_start_repairs_every_history_file_not_only_the_current_one(tmp_path: Path) -> None:
    old = tmp_path / file_name(T0 - HOUR)
    old.write_bytes(b'{"n":1}\n{"n":2,"cut by a cra')
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not ours, no newline")
    exporter = HistoryExporter(tmp_path, HOUR, FakeClock(T0))
    exporter.start()
    exporter.close()
    assert read_lines(old) == [{"n": 1}]
    assert other.read_bytes() == b"not ours, no newline"


def test_cut_incomplete_tail_handles_no_newline_at_all_and_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    for content, kept in [(b"x" * 200_000, b""), (b"a\n" + b"y" * 150_000, b"a\n"), (b"a\nb\n", b"a\nb\n")]:
        path.write_bytes(content)
        fd = os.open(path, os.O_RDWR)
        try:
            removed = cut_incomplete_tail(fd)
        finally:
            os.close(fd)
        assert path.read_bytes() == kept and removed == len(content) - len(kept)


def test_a_short_write_is_rolled_back_and_counted_as_failed(tmp_path: Path, monkeypatch) -> None:
    real_write = os.write

    def half_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])  # what a full disk does

    clock = FakeClock(T0)
    exporter = HistoryExporter(tmp_path, HOUR, clock)
    exporter.start()
    exporter.record({"request_id": "ok-1"})
    exporter.close()
    failed_before = outcome_count("failed")
    monkeypatch.setattr(history.os, "write", half_write)
    exporter.record({"request_id": "lost"})  # after close: written directly, and it fails
    monkeypatch.setattr(history.os, "write", real_write)
    exporter.record({"request_id": "ok-2"})
    assert outcome_count("failed") == failed_before + 1
    assert [e["request_id"] for e in read_lines(tmp_path / file_name(T0))] == ["ok-1", "ok-2"]


def test_a_stalled_disk_never_blocks_record_lines_beyond_the_limit_are_dropped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(history, "MAX_PENDING_LINES", 5)
    exporter = HistoryExporter(tmp_path, HOUR, FakeClock(T0))
    release = threading.Event()
    writing = threading.Event()
    real_write = exporter.files.write

    def stalled_write(start: int, line: bytes) -> None:
        writing.set()
        release.wait(30)
        real_write(start, line)

    monkeypatch.setattr(exporter.files, "write", stalled_write)
    exporter.start()
    exporter.record({"request_id": "first"})
    assert writing.wait(10)
    dropped_before = outcome_count("dropped")
    started = time.monotonic()
    for i in range(20):
        exporter.record({"request_id": f"q{i}"})
    assert time.monotonic() - started < 5  # coarse liveness bound: record() did not wait for the disk
    assert outcome_count("dropped") == dropped_before + 15
    release.set()
    exporter.close()
    ids = [e["request_id"] for e in read_lines(tmp_path / file_name(T0))]
    assert ids == ["first", "q0", "q1", "q2", "q3", "q4"]


def test_an_unwritable_directory_is_a_clear_startup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StartupError, match="--export-history-path"):
        HistoryExporter(blocker / "history", HOUR).start()


def test_export_interval_must_be_positive() -> None:
    with pytest.raises(SystemExit, match="--export-interval"):
        validate(Config.build(export_interval=0))


WRITER_SCRIPT = """
import random, sys, time
from pathlib import Path
from chatllm.server.history import HistoryFiles, encode_line
files = HistoryFiles(Path(sys.argv[1]), 3600, time.time)
rng = random.Random(int(sys.argv[2]))
n = 0
while True:
    # Sizes from tiny to several pages, so writes straddle page boundaries.
    files.write(0, encode_line({"n": n, "text": "x" * rng.randint(1, 20000)}))
    n += 1
"""


@pytest.mark.parametrize("seed", range(4))
def test_kill_9_while_writing_leaves_only_whole_lines(tmp_path: Path, seed: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(tmp_path), str(seed)])
    path = tmp_path / file_name(0)
    deadline = time.monotonic() + 60
    try:
        while not (path.exists() and path.stat().st_size > 2_000_000 * (seed + 1)):
            assert proc.poll() is None and time.monotonic() < deadline, "writer did not get going"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    data = path.read_bytes()
    complete, _, _partial = data.rpartition(b"\n")
    numbers = [json.loads(line)["n"] for line in complete.split(b"\n")]
    assert numbers == list(range(len(numbers)))  # nothing missing or reordered before the kill
    # A kill that lands inside os.write may leave a partial last line; the next open cuts it.
    files = HistoryFiles(tmp_path, 3600, time.time)
    files.write(0, b'{"n":"after"}\n')
    files.close()
    assert read_lines(path)[-1] == {"n": "after"}
    assert len(read_lines(path)) == len(numbers) + 1
