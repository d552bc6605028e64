"""Admission control: at most `max_concurrent` requests generate, at most
`max_queue` more wait; beyond that a request is refused at once (never queued
without bound), and a draining server refuses everything new. A token with
limits (see chatllm.server.quotas) is refused at once when over them, before it
takes a place in the one queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from chatllm.kernel.access import ANONYMOUS_CALLER, Caller
from chatllm.server.errors import NotReady, Overloaded, Reason
from chatllm.server.quotas import TokenQuotas


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent > 0 else None
        self.active = 0
        self.waiting = 0
        self.draining = False
        self.quotas = TokenQuotas()
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def slot(self, caller: Caller = ANONYMOUS_CALLER) -> AsyncIterator[None]:
        """Hold a generation slot for the duration of the block."""
        if self.draining:
            raise NotReady("server is shutting down; retry on another replica", Reason.DRAINING)
        if self._slots is not None and self._slots.locked():
            if self.waiting >= self.max_queue:
                raise Overloaded(
                    f"server at capacity: {self.active} requests generating and {self.waiting} queued; retry later"
                )
        self.quotas.admit(caller)  # raises when the token is over its own limits
        try:
            async with self._queued():
                yield
        finally:
            self.quotas.release(caller)

    @contextlib.asynccontextmanager
    async def _queued(self) -> AsyncIterator[None]:
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
