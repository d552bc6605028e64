"""A token's limits counted in this process: the embedded store, and Redis's stand-in during an outage.

The same rules as the Redis scripts (redis_limits.py), in plain Python (one event loop: no locks):

- streams: the requests of a token that are admitted and not yet settled;
- rpm: a log of admission times; a request is admitted while fewer than `rpm` lie in the last window
  (a sliding window, exact: no 60 s span ever holds more than `rpm` admissions);
- tpm: a log of (time, tokens) reservations, each lowered to what the request really used when it
  settles; a reservation fits while the window's sum plus it stays within `tpm`, or when the window is
  empty (a request larger than the whole budget then runs alone);
- daily tokens: a counter per UTC day, reserved and settled the same way (`DailyCounter`; the
  embedded store keeps it in SQLite instead, see daily.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chatllm.kernel.access import TokenLimits
from chatllm.kernel.state.refusal import RPM, STREAMS, STREAMS_RETRY_AFTER_S, TPM, Refusal

WINDOW_S = 60.0


@dataclass
class _TokenLog:
    """One token's reservations in the window: ticket -> (time, tokens), oldest first."""

    entries: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)
    total: int = 0

    def expire(self, before: float) -> None:
        while self.entries:
            ticket, (at, tokens) = next(iter(self.entries.items()))
            if at > before:
                return
            del self.entries[ticket]
            self.total -= tokens

    def wait_for(self, room: int, now: float, window: float) -> float:
        """Seconds until the entries that must expire for the sum to be at most `room` have expired."""
        total = self.total
        for at, tokens in self.entries.values():
            total -= tokens
            if total <= room:
                return at + window - now
        return 0.0


class WindowCounters:
    """Streams, requests per minute and tokens per minute of every token, in this process."""

    def __init__(self, window: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._streams: dict[str, set[str]] = {}
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, _TokenLog] = {}

    def streams(self, name: str) -> int:
        return len(self._streams.get(name, ()))

    def admit(self, ticket: str, name: str, limits: TokenLimits) -> Refusal | None:
        """Count a request (a stream, an admission); or the refusal, with nothing counted."""
        now = self._clock()
        active = self._streams.get(name, set())
        if limits.streams is not None and len(active) >= limits.streams:
            return Refusal(STREAMS, len(active), limits.streams, STREAMS_RETRY_AFTER_S)
        requests = self._requests.setdefault(name, deque())
        if limits.rpm is not None:
            while requests and requests[0] <= now - self.window:
                requests.popleft()
            if len(requests) >= limits.rpm:
                return Refusal(RPM, len(requests), limits.rpm, requests[0] + self.window - now)
        if limits.tpm is not None:
            log = self._log(name, now)
            if log.total >= limits.tpm:
                return Refusal(TPM, log.total, limits.tpm, log.wait_for(limits.tpm - 1, now, self.window))
        if limits.rpm is not None:
            requests.append(now)
        self._streams.setdefault(name, set()).add(ticket)
        return None

    def reserve(self, ticket: str, name: str, limits: TokenLimits, tokens: int) -> Refusal | None:
        """Reserve `tokens` of the token's tpm for an admitted request; or the refusal."""
        if limits.tpm is None:
            return None
        now = self._clock()
        log = self._log(name, now)
        if log.total and log.total + tokens > limits.tpm:
            wait = log.wait_for(max(limits.tpm - tokens, 0), now, self.window)
            return Refusal(TPM, log.total, limits.tpm, wait, asked=tokens)
        log.entries[ticket] = (now, tokens)
        log.total += tokens
        return None

    def settle(self, ticket: str, name: str, used: int) -> None:
        """The request ended: its stream is free and its reservation becomes the `used` tokens."""
        active = self._streams.get(name)
        if active is not None:
            active.discard(ticket)
            if not active:
                del self._streams[name]
        log = self._tokens.get(name)
        if log is not None and ticket in log.entries:
            at, reserved = log.entries[ticket]
            log.entries[ticket] = (at, used)
            log.total += used - reserved

    def _log(self, name: str, now: float) -> _TokenLog:
        log = self._tokens.setdefault(name, _TokenLog())
        log.expire(now - self.window)
        return log


class DailyCounter:
    """Tokens per token name and UTC day, in this process (reserve, then settle to what was used)."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], int] = {}

    def used(self, name: str, day: str) -> int:
        return self._used.get((name, day), 0)

    def reserve(self, name: str, day: str, tokens: int, allowed: int) -> int | None:
        """None when reserved; else the tokens already used today (nothing reserved)."""
        used = self.used(name, day)
        if used and used + tokens > allowed:
            return used
        self._used[(name, day)] = used + tokens
        return None

    def settle(self, name: str, day: str, reserved: int, used: int) -> None:
        self._used[(name, day)] = self.used(name, day) + used - reserved
