"""Per-token limits on Generate (from the token file): requests per minute and concurrent streams.

Checked at admission, before anything waits: a token over its limit is refused at once with
RESOURCE_EXHAUSTED and a RetryInfo saying when to come back, and nothing else changes, so one
token's burst never takes another token's place or delays it. Requests per minute are a token
bucket of `rpm` that refills at rpm/60 per second (a burst of `rpm`, then one every 60/rpm s).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from chatllm.kernel.access import Caller
from chatllm.server.errors import Reason, TokenLimited

STREAMS_RETRY_AFTER_S = 1.0  # when a stream ends is unknown; ask for a short wait


@dataclass
class _Bucket:
    capacity: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0.0 when a request may go (and is counted), else the seconds until one may."""
        rate = self.capacity / 60.0
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


class TokenQuotas:
    """The per-token counters; `admit` before a request waits or runs, `release` when it ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._streams: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}

    def streams(self, name: str) -> int:
        return self._streams.get(name, 0)

    def admit(self, caller: Caller) -> None:
        """Count the request against its token, or raise TokenLimited (nothing counted)."""
        limits = caller.limits
        active = self._streams.get(caller.name, 0)
        if limits.streams is not None and active >= limits.streams:
            raise TokenLimited(
                f"token {caller.name!r} has {active} requests running, its limit (streams={limits.streams}); "
                "retry when one ends",
                Reason.TOKEN_STREAMS_LIMITED,
                STREAMS_RETRY_AFTER_S,
            )
        if limits.rpm is not None:
            wait = self._bucket(caller.name, limits.rpm).take(self._clock())
            if wait > 0:
                raise TokenLimited(
                    f"token {caller.name!r} is over its limit of {limits.rpm} requests per minute; "
                    f"retry in {math.ceil(wait)} s",
                    Reason.TOKEN_RATE_LIMITED,
                    wait,
                )
        self._streams[caller.name] = active + 1

    def release(self, caller: Caller) -> None:
        left = self._streams.get(caller.name, 0) - 1
        if left > 0:
            self._streams[caller.name] = left
        else:
            self._streams.pop(caller.name, None)

    def _bucket(self, name: str, rpm: int) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(rpm, float(rpm), self._clock())
        elif bucket.capacity != rpm:  # the token file changed this token's limit
            bucket.capacity, bucket.tokens = rpm, min(bucket.tokens, rpm)
        return bucket
