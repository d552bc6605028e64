"""Conversation history export: one JSON line per finished exchange, one file per period.

`--export-history-path DIR` turns it on; `--export-interval SECONDS` (default 3600)
is the period. Periods are aligned to the UTC epoch, so with the default every
file covers one clock hour and is named after its UTC start:
`history-20250101T100000Z.jsonl`.

Durability contract (what an operator can rely on):
- The event loop never touches the disk: `record()` serialises the entry and
  hands the line to a writer thread, which writes it at once. A line therefore
  leaves the process (and survives `kill -9`) within milliseconds of the
  exchange ending; the writer `fsync`s at most `SYNC_SECONDS` after a write, so a
  machine crash loses at most that much.
- Each line is written with one `os.write` on an `O_APPEND` descriptor: it lands
  whole, after the previous one, never interleaved. A failed or short write (disk
  full) is cut back at once. A SIGKILL that arrives *inside* that write can still
  stop the kernel at a page boundary (a writer looping over 1-20 KB lines, killed
  30 times, was caught mid-line twice), leaving an unterminated tail: it is never a
  newline-terminated line, so readers that take whole lines (as every JSONL tailer
  does) only ever see complete JSON, and the next start cuts it off every file.
- Rotation never renames, copies or truncates a finished file: a new period
  simply opens a new file, and the previous one is fsynced and closed once its
  period is over. Every line lands whole in exactly one file.
- Shutdown (SIGTERM drains the server, then the exit stack closes the exporter)
  writes every queued line, fsyncs and closes.
Give each server replica its own directory (the Kubernetes manifest uses the pod
name): the start-up repair assumes no other process is writing there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from chatllm.kernel.config import HistoryConfig
from chatllm.server import metrics
from chatllm.server.errors import StartupError

log = logging.getLogger(__name__)

SYNC_SECONDS = 1.0  # longest a written line waits for fsync
MAX_PENDING_LINES = 10_000  # beyond this (storage stalled) lines are dropped and counted, never block the loop
_STOP = object()


def period_start(now: float, interval: int) -> int:
    """Start (epoch seconds) of the period containing `now`."""
    return int(now // interval) * interval


def file_name(start: int) -> str:
    stamp = dt.datetime.fromtimestamp(start, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"history-{stamp}.jsonl"


def utc_iso(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_line(entry: dict[str, Any]) -> bytes:
    """One JSON object and a newline (JSON escapes newlines inside strings, so it is one line)."""
    return (json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()


def cut_incomplete_tail(fd: int) -> int:
    """Truncate the file after its last newline; returns the number of bytes removed."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    if keep < size:
        os.ftruncate(fd, keep)
    return size - keep


def repair_directory(directory: Path) -> None:
    """Cut the incomplete last line a crash may have left in any history file (before writing more)."""
    for path in sorted(directory.glob("history-*.jsonl")):
        fd = os.open(path, os.O_RDWR)
        try:
            removed = cut_incomplete_tail(fd)
        finally:
            os.close(fd)
        if removed:
            log.warning("history: %s ended in an incomplete line (%d bytes, a crash mid-write); cut it", path, removed)


class HistoryFiles:
    """The period files of one directory; used by one thread at a time."""

    def __init__(self, directory: Path, interval: int, clock: Callable[[], float]) -> None:
        self.directory = directory
        self.interval = interval
        self.clock = clock
        self._fd: int | None = None
        self._start: int | None = None
        self._dirty = False
        self._last_sync = 0.0

    def write(self, start: int, line: bytes) -> None:
        """Append one line to the file of the period starting at `start`."""
        fd = self._open(start)
        before = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write: {written} of {len(line)} bytes (disk full?)")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)  # never leave half a line behind
            raise
        self._dirty = True

    def tick(self) -> None:
        """Periodic duties: fsync recent writes, close the file once its period is over."""
        now = self.clock()
        if self._dirty and now - self._last_sync >= SYNC_SECONDS:
            self.sync()
        if self._start is not None and period_start(now, self.interval) != self._start:
            self.close()

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = self.clock()

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = self._start = None

    @property
    def current_path(self) -> Path | None:
        return None if self._start is None else self.directory / file_name(self._start)

    def _open(self, start: int) -> int:
        if self._fd is not None and self._start == start:
            return self._fd
        path = self.directory / file_name(start)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)  # read: to find an incomplete tail
        try:
            removed = cut_incomplete_tail(fd)
        except OSError:
            os.close(fd)
            raise
        if removed:
            log.warning("history: %s ended in an incomplete line (%d bytes, a crash mid-write); cut it", path, removed)
        if self._fd is not None:
            self.close()  # the new file is open before the old one closes: no gap, no lost line
        self._fd, self._start = fd, start
        return fd


class HistoryExporter:
    """`record(entry)` from the event loop; a writer thread does the I/O."""

    def __init__(self, directory: Path, interval: int, clock: Callable[[], float] | None = None) -> None:
        self.directory = directory.expanduser()
        self.interval = interval
        self.clock = clock or time.time
        self.files = HistoryFiles(self.directory, interval, self.clock)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=MAX_PENDING_LINES)
        self._lock = threading.Lock()  # orders record() against close(): no line slips past the final drain
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: HistoryConfig) -> AsyncIterator[HistoryExporter]:
        """Writing on entry; every queued line written, fsynced and closed on exit."""
        assert config.export_history_path
        exporter = cls(Path(config.export_history_path), config.export_interval)
        await asyncio.to_thread(exporter.start)
        try:
            yield exporter
        finally:
            await asyncio.to_thread(exporter.close)

    def start(self) -> None:
        """Check the directory is writable (a clear start-up error if not), then start the writer."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory):
                pass
            repair_directory(self.directory)
        except OSError as exc:
            raise StartupError(f"--export-history-path {self.directory}: cannot write there: {exc}") from None
        self._thread.start()
        log.info("history export: %s, one file per %ds", self.directory, self.interval)

    def record(self, entry: dict[str, Any]) -> None:
        """Queue one exchange; never blocks on storage. `time` (UTC, ISO 8601) is stamped here."""
        now = self.clock()
        line = encode_line({"time": utc_iso(now), **{k: v for k, v in entry.items() if k != "time"}})
        item = (period_start(now, self.interval), line)
        with self._lock:
            if self._closed:  # after shutdown (a request cancelled late): write directly
                self._write(item)
                self.files.close()
                return
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                metrics.HISTORY_LINES.labels("dropped").inc()
                log.error("history: %d lines waiting for storage; dropping this one", MAX_PENDING_LINES)

    def close(self) -> None:
        """Write everything queued, fsync, close. Blocking: call from a thread at shutdown."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        with self._lock:
            self._closed = True
            self._drain()
            self.files.close()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=SYNC_SECONDS)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is not None:
                self._write(item)
            try:
                self.files.tick()
            except OSError as exc:
                log.error("history: fsync/close failed: %s", exc)

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._write(item)

    def _write(self, item: tuple[int, bytes]) -> None:
        start, line = item
        try:
            self.files.write(start, line)
        except OSError as exc:
            metrics.HISTORY_LINES.labels("failed").inc()
            log.error("history: cannot write to %s: %s", self.directory / file_name(start), exc)
            return
        metrics.HISTORY_LINES.labels("written").inc()
