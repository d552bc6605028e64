"""Owning the processes an engine spawns (vLLM's engine core and its workers).

vLLM starts its engine core and workers as spawned processes. They outlive a
parent that dies during start-up, and the engine core ignores SIGTERM while it
loads, so the server takes charge of them itself:

- `OwnedProcesses` notes every descendant that appears while the engine lives
  (polling, because a worker is a grandchild that must be caught before its
  parent dies and it is re-parented) and, on exit, terminates and then kills
  whichever are still alive;
- a reaper subprocess (`reaper.py`) is told about each of them over a pipe;
  if the server dies without cleaning up (SIGKILL, the OOM killer) the pipe
  closes without a "done" and the reaper kills them (and, when the server led
  its process group, the rest of that group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
REAPER = Path(__file__).with_name("reaper.py")


def _is_python_resource_tracker(proc: psutil.Process) -> bool:
    # multiprocessing's own helper: shared by the whole process, ends with it.
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except psutil.Error:
        return False


def vllm_processes(parent: psutil.Process | None = None) -> list[psutil.Process]:
    """Descendants of `parent` (default: this process) that are vLLM engine processes."""
    parent = parent or psutil.Process()
    found = []
    for proc in parent.children(recursive=True):
        try:
            # Engine processes name themselves VLLM::EngineCore, VLLM::Worker...; vLLM's own servers run as modules.
            if proc.name().startswith("VLLM::") or any(part.startswith("vllm.") for part in proc.cmdline()[:3]):
                found.append(proc)
        except psutil.Error:
            continue
    return found


class OwnedProcesses:
    """The descendants that appeared after creation; killed on `close()`."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._reaper = subprocess.Popen(
            [sys.executable, str(REAPER), str(os.getpid())], stdin=subprocess.PIPE, text=True, close_fds=True
        )
        self._before = {p.pid for p in self._me.children(recursive=True)} | {self._reaper.pid}
        self._owned: dict[int, psutil.Process] = {}
        self._poller: asyncio.Task[None] | None = None

    def start_polling(self) -> None:
        async def poll() -> None:
            while True:
                self.scan()
                await asyncio.sleep(POLL_SECONDS)

        self._poller = asyncio.create_task(poll())

    async def settle(self) -> None:
        """Stop polling, after one last scan. Once settled, nothing new is adopted: a child of this process
        that appears later is someone else's (a test's redis-server, a document parser), not the engine's."""
        if self._poller is None:
            return
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        self._poller = None
        self.scan()

    @property
    def processes(self) -> list[psutil.Process]:
        return list(self._owned.values())

    def scan(self) -> None:
        """Record descendants that appeared since the last scan (and tell the reaper)."""
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        for proc in children:
            if proc.pid in self._before or proc.pid in self._owned:
                continue
            if _is_python_resource_tracker(proc):
                self._before.add(proc.pid)
                continue
            try:
                started = proc.create_time()
            except psutil.Error:
                continue
            self._owned[proc.pid] = proc
            if self._reaper.stdin is not None:
                with contextlib.suppress(OSError):
                    self._reaper.stdin.write(f"{proc.pid} {started}\n")
                    self._reaper.stdin.flush()

    def kill_leftovers(self, grace: float) -> list[int]:
        """SIGTERM the owned processes still alive (and their children), SIGKILL them after `grace` s;
        returns the pids. Only a start still in progress looks for new processes first: later, a new
        child of this process is someone else's (a test's subprocess, a document parser)."""
        if self._poller is not None:
            self.scan()
        alive = [p for p in self._owned.values() if p.is_running()]
        for proc in list(alive):
            with contextlib.suppress(psutil.Error):
                alive += [c for c in proc.children(recursive=True) if c.pid not in self._owned]
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, stubborn = psutil.wait_procs(alive, timeout=grace)
        for proc in stubborn:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(stubborn, timeout=5)
        return [p.pid for p in alive]

    def close(self, grace: float = 5.0) -> None:
        """Kill what is left, then let the reaper go: "done" tells it there is nothing to kill."""
        leftovers = self.kill_leftovers(grace)
        if leftovers:
            log.info("stopped %d leftover engine process(es): %s", len(leftovers), leftovers)
        if self._reaper.stdin is not None:
            with contextlib.suppress(OSError):
                self._reaper.stdin.write("done\n")
                self._reaper.stdin.close()
        try:
            self._reaper.wait(10)
        except subprocess.TimeoutExpired:
            self._reaper.kill()
            self._reaper.wait(5)


@contextlib.asynccontextmanager
async def owned_processes() -> AsyncIterator[OwnedProcesses]:
    """Track the processes spawned inside the block; none of them survives it.

    Polls until `settle()`: call it once the engine has started (all its processes
    exist then, and each scan walks /proc, which is not free under load)."""
    owned = await asyncio.to_thread(OwnedProcesses)
    owned.start_polling()
    try:
        yield owned
    finally:
        await owned.settle()
        await asyncio.to_thread(owned.close)
