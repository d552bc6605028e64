"""Work a state-store client repeats in the background while it is open: renewing stream leases,
sending usage that waited through an outage, syncing fair-share counters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def repeating(action: Callable[[], Awaitable[object]], every: float) -> AsyncIterator[None]:
    """Run `action` every `every` seconds (the first time after one interval) while the block runs."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            await action()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
