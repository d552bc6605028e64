from __future__ import annotations

import asyncio

import pytest

from chatllm.server.admission import Admission
from chatllm.server.errors import NotReady, Overloaded


async def test_refuses_beyond_concurrency_plus_queue_at_once() -> None:
    admission = Admission(max_concurrent=2, max_queue=1)
    release = asyncio.Event()
    entered = 0

    async def hold() -> None:
        nonlocal entered
        async with admission.slot():
            entered += 1
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert (admission.active, admission.waiting, entered) == (2, 1, 2)
    with pytest.raises(Overloaded):
        async with admission.slot():
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert (admission.active, admission.waiting, entered) == (0, 0, 3)
    assert await admission.wait_idle(0.1)


async def test_cancelled_waiter_leaves_no_trace() -> None:
    admission = Admission(max_concurrent=1, max_queue=5)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    assert admission.waiting == 1
    waiter.cancel()
    await asyncio.sleep(0.01)
    assert admission.waiting == 0
    release.set()
    await holder
    assert admission.active == 0


async def test_draining_refuses_new_work() -> None:
    admission = Admission(max_concurrent=0, max_queue=0)
    admission.draining = True
    with pytest.raises(NotReady):
        async with admission.slot():
            pass
