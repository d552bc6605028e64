"""Per-token limits (rpm, tpm, streams, daily tokens: the token file's) for one process or a whole fleet.

A request's life, as admission drives it:

    ticket = await limiter.admit(caller.name, caller.limits)  # before it waits: streams, rpm, and
                                                              # "is any tpm / daily budget left"
    await limiter.reserve(ticket, prompt + most completion)   # once its prompt is built: the tokens it
                                                              # may use, against tpm and daily budget
    await limiter.settle(ticket, used_tokens)                 # when it ends (finished, failed, cancelled):
                                                              # its stream frees, the reservation becomes
                                                              # what it used

Refusals raise LimitExceeded (with the wait until the window frees up) and count nothing. Where the
counting happens follows `--state-store`: Redis (redis_limits.py: fleet-wide, atomic scripts) or this
process (windows.py; the daily budget in the embedded SQLite file, daily.py). When Redis cannot be
reached, `--state-store-failure closed` refuses (StoreUnavailable) the requests of tokens that have
limits; `open` counts them in this process instead, until Redis answers again. A token without limits
never touches the store here.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from chatllm.kernel.access import NO_LIMITS, TokenLimits
from chatllm.kernel.state.connection import StateStore
from chatllm.kernel.state.daily import SqliteDaily
from chatllm.kernel.state.failure import StoreUnavailable
from chatllm.kernel.state.redis_limits import LEASE_S, RedisLimits
from chatllm.kernel.state.refusal import DAILY, LimitExceeded, Refusal
from chatllm.kernel.state.repeating import repeating
from chatllm.kernel.state.windows import WINDOW_S, DailyCounter, WindowCounters


@dataclass
class Ticket:
    """One admitted request's place in its token's counters."""

    id: str
    name: str
    limits: TokenLimits
    day: str  # the UTC day its tokens count against
    shared: bool  # its stream and request are counted in Redis (False: in this process)
    reserved: int = 0
    reserved_shared: bool = False
    daily_in_memory: bool = False  # its daily reservation went to this process's memory (SQLite failed)
    settled: bool = False


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def seconds_to_utc_midnight(now: float) -> float:
    return 86400 - now % 86400


class TokenLimiter:
    """admit / reserve / settle (see the module docstring); `running()` renews the leases of the streams
    this process holds in Redis."""

    def __init__(
        self, store: StateStore, window: float = WINDOW_S, lease: float = LEASE_S, wall: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.lease = lease
        self.local = WindowCounters(window)
        self._local_daily = DailyCounter()
        self._redis = None if store.embedded else RedisLimits(store, window, lease)
        self._sqlite_daily = SqliteDaily(store) if store.embedded else None
        self._wall = wall
        self._held: dict[str, Ticket] = {}  # counted in Redis with a streams limit: leases to renew

    async def admit(self, name: str, limits: TokenLimits) -> Ticket:
        """Count a request against its token, or raise LimitExceeded / StoreUnavailable (closed policy)."""
        now = self._wall()
        ticket = Ticket(uuid.uuid4().hex, name, limits, utc_day(now), shared=self._redis is not None)
        if limits == NO_LIMITS:
            ticket.shared = False
            return ticket
        refusal = None
        if self._redis is not None:
            try:
                refusal = await self._redis.admit(ticket.id, name, limits, ticket.day)
            except StoreUnavailable:
                if self.store.policy.fail_closed:
                    raise
                ticket.shared = False
        if not ticket.shared:
            refusal = await self._admit_here(ticket)
        if refusal is not None:
            raise LimitExceeded(name, self._timed(refusal, now))
        if ticket.shared and limits.streams is not None:
            self._held[ticket.id] = ticket
        return ticket

    async def _admit_here(self, ticket: Ticket) -> Refusal | None:
        allowed = ticket.limits.daily_tokens
        if allowed is not None:
            used = await self._daily_used(ticket)
            if used >= allowed:
                return Refusal(DAILY, used, allowed, 0.0)
        return self.local.admit(ticket.id, ticket.name, ticket.limits)

    async def reserve(self, ticket: Ticket, tokens: int) -> None:
        """Reserve the most tokens the request may use; LimitExceeded when the budget cannot take them."""
        if not ticket.limits.counts_tokens:
            return
        refusal = None
        reserved_shared = False
        if ticket.shared and self._redis is not None:
            try:
                refusal = await self._redis.reserve(ticket.id, ticket.name, ticket.limits, ticket.day, tokens)
                reserved_shared = True
            except StoreUnavailable:
                if self.store.policy.fail_closed:
                    raise
        if not reserved_shared:
            refusal = await self._reserve_here(ticket, tokens)
        if refusal is not None:
            raise LimitExceeded(ticket.name, self._timed(refusal, self._wall()))
        ticket.reserved, ticket.reserved_shared = tokens, reserved_shared

    async def _reserve_here(self, ticket: Ticket, tokens: int) -> Refusal | None:
        allowed = ticket.limits.daily_tokens
        if allowed is not None:
            used = await self._daily_reserve(ticket, tokens, allowed)
            if used is not None:
                return Refusal(DAILY, used, allowed, 0.0, asked=tokens)
        refusal = self.local.reserve(ticket.id, ticket.name, ticket.limits, tokens)
        if refusal is not None and allowed is not None:
            await self._daily_settle(ticket, tokens, 0)
        return refusal

    async def settle(self, ticket: Ticket, used: int) -> None:
        """The request ended having used `used` tokens (prompt + completion). Never raises: a store that
        cannot take it keeps the reservation (it expires with the window) and the lease (it runs out)."""
        if ticket.settled:
            return
        ticket.settled = True
        self._held.pop(ticket.id, None)
        if ticket.shared and self._redis is not None:
            shared_reservation = ticket.reserved if ticket.reserved_shared else 0
            with contextlib.suppress(StoreUnavailable):
                await self._redis.settle(ticket.id, ticket.name, ticket.day, shared_reservation, used)
        if not ticket.shared or (ticket.reserved and not ticket.reserved_shared):
            self.local.settle(ticket.id, ticket.name, used)
            if ticket.reserved and ticket.limits.daily_tokens is not None:
                with contextlib.suppress(StoreUnavailable):
                    await self._daily_settle(ticket, ticket.reserved, used)

    def _timed(self, refusal: Refusal, now: float) -> Refusal:
        if refusal.limit != DAILY:
            return refusal
        wait = seconds_to_utc_midnight(now)
        return Refusal(refusal.limit, refusal.used, refusal.allowed, wait, refusal.asked)

    # The daily budget kept here: the embedded store's SQLite file, or memory while Redis is away.
    async def _daily_used(self, ticket: Ticket) -> int:
        if self._sqlite_daily is not None:
            try:
                return await self._sqlite_daily.used(ticket.name, ticket.day)
            except StoreUnavailable:
                if self.store.policy.fail_closed:
                    raise
        return self._local_daily.used(ticket.name, ticket.day)

    async def _daily_reserve(self, ticket: Ticket, tokens: int, allowed: int) -> int | None:
        if self._sqlite_daily is not None:
            try:
                return await self._sqlite_daily.reserve(ticket.name, ticket.day, tokens, allowed)
            except StoreUnavailable:
                if self.store.policy.fail_closed:
                    raise
        ticket.daily_in_memory = True
        return self._local_daily.reserve(ticket.name, ticket.day, tokens, allowed)

    async def _daily_settle(self, ticket: Ticket, reserved: int, used: int) -> None:
        if self._sqlite_daily is not None and not ticket.daily_in_memory:
            await self._sqlite_daily.settle(ticket.name, ticket.day, reserved, used)
        else:
            self._local_daily.settle(ticket.name, ticket.day, reserved, used)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TokenLimiter]:
        """Renew this process's stream leases in Redis every third of a lease while open."""
        if self._redis is None:
            yield self
            return
        async with repeating(self._renew, self.lease / 3):
            yield self

    async def _renew(self) -> None:
        assert self._redis is not None
        held: dict[str, list[str]] = {}
        for ticket in list(self._held.values()):
            held.setdefault(ticket.name, []).append(ticket.id)
        with contextlib.suppress(StoreUnavailable):
            await self._redis.renew(held)
