"""What a process does when the state store cannot be reached (`--state-store-failure open|closed`).

Every operation on the store that fails raises `StoreUnavailable` to its caller after `FailurePolicy`
has counted it (`chatllm_state_store_failures_total{operation}`) and logged it, at most once a minute
per operation, so an outage does not flood the log. The caller then applies the policy:

- open (default): go on without the shared state (admission falls back to this process's own
  counters, usage waits in memory until the store is back);
- closed: refuse the request (503 / UNAVAILABLE) until the store answers again.

After a failure the store is marked down for `retry_after` seconds: calls in that time fail at once
instead of each waiting for a connect timeout, so a dead or hung Redis adds no latency to requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

FAILURES = Counter(
    "chatllm_state_store_failures_total",
    "Operations on the state store (--state-store) that could not reach it, by operation",
    ["operation"],
)
STORE_UP = Gauge("chatllm_state_store_up", "1 while the state store answers, 0 after a failed operation")
LOG_INTERVAL_S = 60.0
RETRY_AFTER_S = 1.0


class StoreUnavailable(Exception):
    """The state store could not be reached (or is marked down after a recent failure)."""


class FailurePolicy:
    """Counts and logs the store's failures, remembers that it is down, and says what to do about it."""

    def __init__(
        self, mode: str = "open", retry_after: float = RETRY_AFTER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if mode not in ("open", "closed"):
            raise ValueError(f"--state-store-failure must be open or closed, not {mode!r}")
        self.mode = mode
        self.retry_after = retry_after
        self._clock = clock
        self._down_until = 0.0
        self._logged_at: dict[str, float] = {}
        STORE_UP.set(1)

    @property
    def fail_closed(self) -> bool:
        """Whether a request must be refused while the store is unreachable."""
        return self.mode == "closed"

    @staticmethod
    def watch(operation: str) -> None:
        """Export the operation's failure count from now on, 0 until it fails: a dashboard's rate of a
        healthy store is then 0, not "no data"."""
        FAILURES.labels(operation)

    def check(self, operation: str) -> None:
        """Raise StoreUnavailable (counted) when the store failed less than `retry_after` seconds ago."""
        self.watch(operation)
        if self._clock() < self._down_until:
            FAILURES.labels(operation).inc()
            raise StoreUnavailable(f"state store down (retrying after {self.retry_after:g} s)")

    def failed(self, operation: str, exc: BaseException) -> StoreUnavailable:
        """Count and (at most once a minute per operation) log a failure; the error for the caller to raise."""
        now = self._clock()
        self._down_until = now + self.retry_after
        FAILURES.labels(operation).inc()
        STORE_UP.set(0)
        if now - self._logged_at.get(operation, -LOG_INTERVAL_S) >= LOG_INTERVAL_S:
            self._logged_at[operation] = now
            then = "refusing requests" if self.fail_closed else "serving without the shared state"
            log.warning("state store unreachable during %s (%s): %s until it answers", operation, exc, then)
        return StoreUnavailable(f"state store unreachable: {type(exc).__name__}: {exc}")

    def succeeded(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            log.info("state store answers again")
        STORE_UP.set(1)
