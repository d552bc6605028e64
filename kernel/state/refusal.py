"""Why a token's request is refused, and the error admission raises for it.

Every limit is a window or a count that frees up at a known time, so each refusal says when to come
back (`retry_after`, seconds): gRPC sends it as RetryInfo, HTTP as Retry-After.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STREAMS = "streams"
RPM = "rpm"
TPM = "tpm"
DAILY = "daily_tokens"
STREAMS_RETRY_AFTER_S = 1.0  # when a stream ends is unknown; ask for a short wait


@dataclass(frozen=True)
class Refusal:
    """A limit that does not let a request in: which, how much is used of it, its size, when it frees up."""

    limit: str  # one of STREAMS, RPM, TPM, DAILY
    used: int
    allowed: int
    retry_after: float
    asked: int = 0  # tokens the request wanted to reserve (tpm, daily)


class LimitExceeded(Exception):
    """A token is over one of its limits; nothing was counted for the refused request."""

    def __init__(self, name: str, refusal: Refusal) -> None:
        self.name = name
        self.refusal = refusal
        super().__init__(_message(name, refusal))

    @property
    def limit(self) -> str:
        return self.refusal.limit

    @property
    def retry_after(self) -> float:
        return self.refusal.retry_after


def _message(name: str, r: Refusal) -> str:
    wait = f"retry in {max(1, math.ceil(r.retry_after))} s"
    if r.limit == STREAMS:
        return f"token {name!r} has {r.used} requests running, its limit (streams={r.allowed}); retry when one ends"
    if r.limit == RPM:
        return f"token {name!r} is over its limit of {r.allowed} requests per minute; {wait}"
    asked = f" (this request may use {r.asked})" if r.asked else ""
    if r.limit == TPM:
        return f"token {name!r} used {r.used} of its {r.allowed} tokens per minute{asked}; {wait}"
    return f"token {name!r} used {r.used} of its {r.allowed} tokens for today (UTC){asked}; {wait}"
