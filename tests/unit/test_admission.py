from __future__ import annotations

import asyncio

import pytest

from chatllm.kernel.access import Caller
from chatllm.kernel.priority import Priority
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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Runner:
    """Requests through one Admission: each holds its slot until released, in the order they got one."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.served: list[str] = []
        self.releases: dict[str, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def send(self, label: str, caller: Caller, priority: Priority = Priority.DEFAULT, tokens: int = 0) -> None:
        self.releases[label] = asyncio.Event()

        async def hold() -> None:
            async with self.admission.slot(caller, priority) as admitted:
                self.served.append(label)
                admitted.generated(tokens)
                await self.releases[label].wait()

        self.tasks.append(asyncio.create_task(hold()))
        await asyncio.sleep(0)  # it reaches the queue before the next one is sent

    async def finish(self, label: str) -> None:
        self.releases[label].set()
        for _ in range(3):
            await asyncio.sleep(0)


def caller(name: str) -> Caller:
    return Caller(name, f"{name}-token")


async def test_a_waiting_interactive_request_takes_the_next_slot_ahead_of_queued_bulk() -> None:
    runner = Runner(Admission(max_concurrent=1, max_queue=10))
    await runner.send("bulk-running", caller("batch"), Priority.BULK)
    for index in range(3):
        await runner.send(f"bulk-{index}", caller("batch"), Priority.BULK)
    await runner.send("chat", caller("page"), Priority.INTERACTIVE)
    await runner.finish("bulk-running")
    assert runner.served == ["bulk-running", "chat"]
    for label in ("chat", "bulk-0", "bulk-1"):
        await runner.finish(label)
    assert runner.served == ["bulk-running", "chat", "bulk-0", "bulk-1", "bulk-2"]  # every bulk one completes
    await runner.finish("bulk-2")
    await asyncio.gather(*runner.tasks)


async def test_waiting_raises_a_request_one_class_per_aging_period() -> None:
    clock = Clock()
    runner = Runner(Admission(max_concurrent=1, max_queue=10, aging=30.0, clock=clock))
    await runner.send("running", caller("x"))
    await runner.send("old-bulk", caller("batch"), Priority.BULK)
    clock.now += 45.0  # bulk -> default after 30 s
    await runner.send("new-default", caller("y"), Priority.DEFAULT)
    await runner.send("new-interactive", caller("page"), Priority.INTERACTIVE)
    await runner.finish("running")
    assert runner.served[-1] == "new-interactive"
    await runner.finish("new-interactive")
    assert runner.served[-1] == "old-bulk"  # as high as the new default request, and older
    clock.now += 60.0  # waited 105 s: now it would rank even with interactive requests
    await runner.finish("old-bulk")
    await runner.finish("new-default")
    await asyncio.gather(*runner.tasks)


async def test_within_a_class_the_token_served_least_goes_first() -> None:
    runner = Runner(Admission(max_concurrent=1, max_queue=50))
    await runner.send("a-running", caller("a"), tokens=100)
    for index in range(10):
        await runner.send(f"a-{index}", caller("a"), tokens=100)
    await runner.send("b-0", caller("b"), tokens=100)  # lifted to a's counter when it starts waiting
    await runner.finish("a-running")
    await runner.finish(runner.served[-1])
    assert "b-0" in runner.served[1:3]  # one request of b is served among the next two, not after a's ten
    await runner.send("b-1", caller("b"), tokens=100)
    for _ in range(2):
        await runner.finish(runner.served[-1])
    assert "b-1" in runner.served[-2:]  # and b keeps its share: every other slot while both wait
    for label in list(runner.releases):
        runner.releases[label].set()
    await asyncio.gather(*runner.tasks)


async def test_two_backlogged_tokens_are_served_within_the_vtc_bound() -> None:
    runner = Runner(Admission(max_concurrent=1, max_queue=100))
    admission = runner.admission
    for index in range(40):
        await runner.send(f"a-{index}", caller("a"), tokens=10)
        if index < 20:
            await runner.send(f"b-{index}", caller("b"), tokens=30)
    while len(runner.served) < 30:  # both still have requests waiting throughout
        await runner.finish(runner.served[-1])
        a, b = admission.fair.counter("a"), admission.fair.counter("b")
        assert abs(a - b) <= 2 * 2 * 30  # the paper's bound: 2 x the most one request adds (weight 2 x 30)
    for label in list(runner.releases):
        runner.releases[label].set()
    await asyncio.gather(*runner.tasks)


async def test_interactive_slots_start_a_chat_request_while_bulk_fills_the_server() -> None:
    runner = Runner(Admission(max_concurrent=2, max_queue=10, interactive_slots=1))
    for index in range(4):
        await runner.send(f"bulk-{index}", caller("batch"), Priority.BULK)
    assert runner.served == ["bulk-0", "bulk-1"] and runner.admission.waiting == 2
    await runner.send("chat-0", caller("page"), Priority.INTERACTIVE)
    assert runner.served[-1] == "chat-0"  # on its own slot, at once
    await runner.send("chat-1", caller("page"), Priority.INTERACTIVE)
    assert runner.served[-1] == "chat-0" and runner.admission.waiting == 3  # its slot is taken: it waits
    await runner.finish("chat-0")
    assert runner.served[-1] == "chat-1"  # the interactive slot goes back to the interactive class
    await runner.finish("bulk-0")
    assert runner.served[-1] == "bulk-2"
    for label in list(runner.releases):
        runner.releases[label].set()
    await asyncio.gather(*runner.tasks)


async def test_without_fair_share_a_class_is_served_in_arrival_order() -> None:
    runner = Runner(Admission(max_concurrent=1, max_queue=50, fair_share=False))
    await runner.send("a-running", caller("a"), tokens=100)
    for index in range(3):
        await runner.send(f"a-{index}", caller("a"), tokens=100)
    await runner.send("b-0", caller("b"), tokens=100)
    for _ in range(4):
        await runner.finish(runner.served[-1])
    assert runner.served == ["a-running", "a-0", "a-1", "a-2", "b-0"]
    await runner.finish("b-0")
    await asyncio.gather(*runner.tasks)
