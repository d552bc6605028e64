"""Admission control: at most `max_concurrent` requests generate, at most
`max_queue` more wait; beyond that a request is refused at once (never queued
without bound), and a draining server refuses everything new."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from chatllm.server.errors import NotReady, Overloaded, Reason


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent > 0 else None
        self.active = 0
        self.waiting = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a generation slot for the duration of the block."""
        if self.draining:
            raise NotReady("server is shutting down; retry on another replica", Reason.DRAINING)
        if self._slots is not None and self._slots.locked():
            if self.waiting >= self.max_queue:
                raise Overloaded(
                    f"server at capacity: {self.active} requests generating and {self.waiting} queued; retry later"
                )
        self.waiting += 1
        self._idle.clear()
        try:
            if self._slots is not None:
                await self._slots.acquire()
        except BaseException:
            self.waiting -= 1
            self._maybe_idle()
            raise
        self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            if self._slots is not None:
                self._slots.release()
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.active == 0 and self.waiting == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is admitted; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
