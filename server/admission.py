"""Admission control: who generates now, who waits, who is refused.

At most `max_concurrent` requests generate and at most `max_queue` more wait; beyond that a request is
refused at once (never queued without bound), and a draining server refuses everything new. A token
over its own limits (rpm, tpm, streams, daily tokens: chatllm.kernel.state.limits, fleet-wide with a
shared state store) is refused before it takes a place in the queue.

`interactive_slots` more slots are kept for the interactive class (as the request asked, within its
token's ceiling): a chat request starts at once even when bulk work fills every other slot.

When a slot frees, the waiting request served next is the one with the best rank:
1. its priority class (interactive, default, bulk), raised one class for every `aging` seconds it has
   waited, so a bulk request never starves behind a stream of interactive ones;
2. within a class, its token's virtual token counter (chatllm.kernel.state.fair_share): the token
   served least so far goes first, so a token with ten streams waiting cannot starve one with one;
3. then arrival order (`fair_share` off: arrival order right after the class).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from chatllm.kernel.access import ANONYMOUS_CALLER, NO_LIMITS, Caller
from chatllm.kernel.priority import Priority
from chatllm.kernel.state.failure import StoreUnavailable
from chatllm.kernel.state.fair_share import FairShareCounters
from chatllm.kernel.state.limits import Ticket, TokenLimiter
from chatllm.kernel.state.refusal import LimitExceeded
from chatllm.server import metrics
from chatllm.server.errors import NotReady, Overloaded, Reason, TokenLimited
from chatllm.server.usage import RequestUsage, UsageRecorder

DEFAULT_AGING_S = 30.0
_REASONS = {
    "streams": Reason.TOKEN_STREAMS_LIMITED,
    "rpm": Reason.TOKEN_RATE_LIMITED,
    "tpm": Reason.TOKEN_TOKENS_LIMITED,
    "daily_tokens": Reason.TOKEN_DAILY_LIMITED,
}


@dataclass(eq=False)
class _Waiter:
    name: str
    priority: Priority
    arrived: float
    granted: asyncio.Future[None]


@dataclass(eq=False)
class Admitted:
    """A request holding a slot: what it reserves, what it generates and what it used, as it goes."""

    admission: Admission
    caller: Caller
    priority: Priority
    ticket: Ticket | None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # generated so far, every choice and candidate
    usage: RequestUsage | None = None  # set when the request reached the engine: recorded on exit

    async def reserve(self, prompt_tokens: int, most_completion_tokens: int) -> None:
        """The prompt is built: reserve what the request may use (TokenLimited when the budget is short)."""
        limiter = self.admission.limiter
        if limiter is not None and self.ticket is not None:
            reserve = limiter.reserve(self.ticket, prompt_tokens + most_completion_tokens)
            await self.admission.call_limiter("reserve", reserve, timed=self.ticket.limits.counts_tokens)
        self.prompt_tokens = prompt_tokens
        self.admission.fair.charge(self.caller.name, prompt_tokens=prompt_tokens)

    def generated(self, tokens: int) -> None:
        if tokens > 0:
            self.completion_tokens += tokens
            self.admission.fair.charge(self.caller.name, completion_tokens=tokens)


class Admission:
    def __init__(
        self,
        max_concurrent: int,
        max_queue: int,
        limiter: TokenLimiter | None = None,
        fair: FairShareCounters | None = None,
        usage: UsageRecorder | None = None,
        aging: float = DEFAULT_AGING_S,
        clock: Callable[[], float] = time.monotonic,
        interactive_slots: int = 0,
        fair_share: bool = True,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.interactive_slots = interactive_slots
        self.fair_share = fair_share
        self.limiter = limiter
        self.fair = fair or FairShareCounters()
        self.usage = usage
        self.aging = aging
        self._clock = clock
        self.active = 0
        self._interactive = 0  # of them, interactive
        self._waiters: list[_Waiter] = []
        self.draining = False
        self._settling = 0  # released slots whose limits and usage are still being written
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _has_room(self, priority: Priority) -> bool:
        """Whether a request of this class may start now: at most max_concurrent + interactive_slots run,
        of which at most max_concurrent are not interactive."""
        if self.max_concurrent <= 0:
            return True
        if self.active >= self.max_concurrent + self.interactive_slots:
            return False
        return priority is Priority.INTERACTIVE or self.active - self._interactive < self.max_concurrent

    def _startable(self) -> list[_Waiter]:
        return [w for w in self._waiters if self._has_room(w.priority)]

    def _refuse_if_full(self, priority: Priority) -> None:
        if self.draining:
            raise NotReady("server is shutting down; retry on another replica", Reason.DRAINING)
        if not self._has_room(priority) and self.waiting >= self.max_queue:
            raise Overloaded(
                f"server at capacity: {self.active} requests generating and {self.waiting} queued; retry later"
            )

    async def call_limiter(self, name: str, step: Any, timed: bool = True) -> Any:
        """Await a limiter step (timed as `name` when it asks the store), its refusals as the server's errors."""
        started = time.perf_counter()
        try:
            return await step
        except LimitExceeded as exc:
            raise TokenLimited(str(exc), _REASONS[exc.limit], exc.retry_after) from None
        except StoreUnavailable:
            raise NotReady(
                "the state store is unreachable and --state-store-failure is closed; retry shortly",
                Reason.STATE_STORE_UNAVAILABLE,
            ) from None
        finally:
            if timed:
                metrics.LIMIT_CHECK.labels(name).observe(time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def slot(
        self, caller: Caller = ANONYMOUS_CALLER, priority: Priority = Priority.DEFAULT
    ) -> AsyncIterator[Admitted]:
        """Hold a generation slot for the duration of the block."""
        self._refuse_if_full(priority)
        ticket = None
        if self.limiter is not None:
            admit = self.limiter.admit(caller.name, caller.limits)
            ticket = await self.call_limiter("admit", admit, timed=caller.limits != NO_LIMITS)
        admitted = Admitted(self, caller, priority, ticket)
        settling = False
        try:
            self._refuse_if_full(priority)  # others may have queued while the limits were checked
            await self._take_slot(caller.name, priority)
            try:
                yield admitted
            finally:
                settling = True  # not idle until its usage is written: a drain must not close the store first
                self._settling += 1
                self._release_slot(priority)
        finally:
            try:
                await self._settle(admitted)
            finally:
                if settling:
                    self._settling -= 1
                    self._maybe_idle()

    async def _settle(self, admitted: Admitted) -> None:
        if self.limiter is not None and admitted.ticket is not None:
            await self.limiter.settle(admitted.ticket, admitted.prompt_tokens + admitted.completion_tokens)
        if self.usage is not None and admitted.usage is not None:
            ticket = admitted.ticket
            guard, day = (ticket.id, ticket.day) if ticket is not None else (None, None)
            await self.usage.record(admitted.caller.name, admitted.usage, guard, day)

    async def _take_slot(self, name: str, priority: Priority) -> None:
        self._idle.clear()
        if self._has_room(priority) and not self._startable():
            self._start(priority)
            return
        if self._waiters and all(w.name != name for w in self._waiters):
            self.fair.lift(name, min(self.fair.counter(w.name) for w in self._waiters))
        waiter = _Waiter(name, priority, self._clock(), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        metrics.QUEUE_DEPTH.inc()
        try:
            await waiter.granted
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                metrics.QUEUE_DEPTH.dec()
            elif not waiter.granted.cancelled():
                self._release_slot(priority)  # granted as it was cancelled: pass the slot on
            self._maybe_idle()
            raise

    def _start(self, priority: Priority) -> None:
        self.active += 1
        self._interactive += priority is Priority.INTERACTIVE

    def _release_slot(self, priority: Priority) -> None:
        self.active -= 1
        self._interactive -= priority is Priority.INTERACTIVE
        while startable := self._startable():
            waiter = min(startable, key=self._rank)
            self._waiters.remove(waiter)
            metrics.QUEUE_DEPTH.dec()
            if waiter.granted.done():  # cancelled, its task not yet resumed: it cleans up nothing else
                continue
            self._start(waiter.priority)
            waiter.granted.set_result(None)
        self._maybe_idle()

    def _rank(self, waiter: _Waiter) -> tuple[int, float, float]:
        promoted = int((self._clock() - waiter.arrived) // self.aging) if self.aging > 0 else 0
        served = self.fair.counter(waiter.name) if self.fair_share else 0.0
        return max(0, waiter.priority - promoted), served, waiter.arrived

    def _maybe_idle(self) -> None:
        if self.active == 0 and not self._waiters and not self._settling:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is admitted; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
