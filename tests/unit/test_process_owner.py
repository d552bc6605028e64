"""The server owns the processes its engine spawns while starting, and only those: a child of the server
process that appears after the engine started (a test's redis-server, a document parser) outlives it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatllm.server.engines.process_owner import owned_processes

pytestmark = pytest.mark.asyncio(loop_scope="session")


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


async def test_what_started_with_the_engine_is_stopped_and_what_came_later_is_left_alone() -> None:
    engine_child = later_child = None
    try:
        async with owned_processes() as owned:
            engine_child = sleeper()  # spawned while the engine starts: the engine's
            owned.scan()
            await owned.settle()
            later_child = sleeper()  # after the start: someone else's
        assert engine_child.wait(10) is not None
        assert later_child.poll() is None, "the engine's shutdown killed a process that was not its own"
    finally:
        for child in (engine_child, later_child):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait(10)
