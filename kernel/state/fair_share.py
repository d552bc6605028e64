"""Virtual token counters for fair share between token names (the VTC scheduler: Sheng et al., "Fairness
in Serving Large Language Models", OSDI '24).

Each token name has a counter of the service it received: prompt tokens weigh PROMPT_WEIGHT and
completion tokens COMPLETION_WEIGHT (generating a token costs more than reading one). When requests
wait, admission serves the waiting token with the smallest counter first; a token that starts waiting
after an idle spell is lifted to the smallest counter of those already waiting, so idling banks no
credit. Two backlogged tokens then receive service within a bounded difference of each other
(the paper's bound: 2 x the most one request can add, weights applied).

Counters are charged here at once (the scheduler reads them without waiting) and, with Redis, shared
by the fleet: every SYNC_EVERY_S this process adds its charges to `chatllm:fair_share` (a hash, one
HINCRBYFLOAT per token) and reads everyone's counters back, so a token flooding two replicas is
charged for both. While Redis is down the counters stay local; the charges wait and are sent later.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

from chatllm.kernel.state.connection import StateStore
from chatllm.kernel.state.failure import StoreUnavailable
from chatllm.kernel.state.repeating import repeating

PROMPT_WEIGHT = 1.0
COMPLETION_WEIGHT = 2.0
SYNC_EVERY_S = 0.25

# KEYS: the hash. ARGV: name, delta, ... then "|", name, floor, ... Returns the whole hash.
SYNC = """
local i = 1
while i <= #ARGV and ARGV[i] ~= '|' do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
i = i + 1
while i <= #ARGV do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if current < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  i = i + 2
end
return redis.call('HGETALL', KEYS[1])
"""


class FairShareCounters:
    """The counters admission orders waiting tokens by (this process's view of the fleet's)."""

    def __init__(self, store: StateStore | None = None) -> None:
        self._store = store if store is not None and not store.embedded else None
        self._counters: dict[str, float] = {}
        self._unsent: dict[str, float] = {}
        self._lifts: dict[str, float] = {}
        self._sync = self._store.script(SYNC) if self._store is not None else None

    def counter(self, name: str) -> float:
        return self._counters.get(name, 0.0)

    def charge(self, name: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        cost = PROMPT_WEIGHT * prompt_tokens + COMPLETION_WEIGHT * completion_tokens
        if cost:
            self._counters[name] = self.counter(name) + cost
            if self._store is not None:
                self._unsent[name] = self._unsent.get(name, 0.0) + cost

    def lift(self, name: str, floor: float) -> None:
        """A token that starts waiting again gets no credit for its idle time: at least `floor`."""
        if math.isfinite(floor) and self.counter(name) < floor:
            self._counters[name] = floor
            if self._store is not None:
                self._lifts[name] = max(floor, self._lifts.get(name, floor))

    async def sync(self) -> None:
        """Send this process's charges and lifts; take the fleet's counters (StoreUnavailable: kept)."""
        if self._store is None or self._sync is None:
            return
        unsent, lifts = self._unsent, self._lifts
        self._unsent, self._lifts = {}, {}
        args: list[Any] = [x for name, delta in unsent.items() for x in (name, delta)]
        args += ["|", *(x for name, floor in lifts.items() for x in (name, floor))]
        key = self._store.key("fair_share")
        sync = self._sync
        try:
            reply = await self._store.redis_call("fair_share", lambda r: sync(keys=[key], args=args, client=r))
        except StoreUnavailable:
            for name, delta in unsent.items():  # charged again on the next try
                self._unsent[name] = self._unsent.get(name, 0.0) + delta
            for name, floor in lifts.items():
                self._lifts[name] = max(floor, self._lifts.get(name, floor))
            return
        shared = {reply[i].decode(): float(reply[i + 1]) for i in range(0, len(reply), 2)}
        for name, value in shared.items():  # charges made while the reply travelled stay on top
            self._counters[name] = value + self._unsent.get(name, 0.0)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FairShareCounters]:
        """Sync with the fleet every SYNC_EVERY_S while open, and once more at the end."""
        if self._store is None:
            yield self
            return
        try:
            async with repeating(self.sync, SYNC_EVERY_S):
                yield self
        finally:
            await self.sync()
