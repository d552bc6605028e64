"""Usage per token name and model: each finished request's tokens go to /metrics (this process's
counters; Prometheus sums the fleet) and to the state store's usage ledger (the fleet's totals, read by
GET /api/usage and `chatllm usage`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from chatllm.kernel.state.failure import StoreUnavailable
from chatllm.kernel.state.limits import utc_day
from chatllm.kernel.state.usage import Usage, UsageLedger, parse_day
from chatllm.proto import pb
from chatllm.server import metrics
from chatllm.server.errors import InvalidArgument, NotReady, Reason


@dataclass(frozen=True)
class RequestUsage:
    """What one request used, as its client was told (or, for a request cut short, what it consumed)."""

    model: str
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int


class UsageRecorder:
    def __init__(self, ledger: UsageLedger | None = None) -> None:
        self.ledger = ledger

    async def record(self, token: str, used: RequestUsage, guard: str | None = None, day: str | None = None) -> None:
        """Count one request (never raises: the ledger keeps what the store cannot take yet)."""
        for kind, tokens in (
            ("prompt", used.prompt_tokens),
            ("cached_prompt", used.cached_prompt_tokens),
            ("completion", used.completion_tokens),
        ):
            metrics.TOKEN_TOKENS.labels(token, used.model, kind).inc(tokens)
        if self.ledger is None:
            return
        usage = Usage(
            day or utc_day(time.time()),
            token,
            used.model,
            requests=1,
            prompt_tokens=used.prompt_tokens,
            cached_prompt_tokens=used.cached_prompt_tokens,
            completion_tokens=used.completion_tokens,
        )
        await self.ledger.record(guard or uuid.uuid4().hex, usage)


async def usage_report(ledger: UsageLedger, request: pb.GetUsageRequest) -> pb.GetUsageResponse:
    """GetUsage: the ledger's rows for the asked days and token."""
    for name in ("start", "end"):
        day = getattr(request, name)
        try:
            if day:
                parse_day(day)
        except ValueError as exc:
            raise InvalidArgument(name, str(exc)) from None
    try:
        rows = await ledger.report(request.start or None, request.end or None, request.token or None)
    except StoreUnavailable:
        raise NotReady("the state store is unreachable; retry shortly", Reason.STATE_STORE_UNAVAILABLE) from None
    records = [pb.UsageRecord(day=row.day, **row.named()) for row in rows]
    return pb.GetUsageResponse(records=records, state_store=ledger.store.location.description)
