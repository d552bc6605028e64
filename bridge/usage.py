"""GET /api/usage: tokens used per token name, model and UTC day, read from the state store
(`--state-store`: with Redis, the whole fleet's, whichever replicas answered). Only tokens marked
`admin` in the token file may read it (403 for others); without tokens, everyone may."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from chatllm.bridge.errors import ApiError, bad_request, unavailable
from chatllm.bridge.routes import JSON, Json, Reply, Route
from chatllm.bridge.state import ACCESS, CALLER, STATE_STORE
from chatllm.kernel.state.failure import StoreUnavailable
from chatllm.kernel.state.usage import Usage, UsageLedger, parse_day, totals


class UsageRecord(BaseModel):
    """What one token name used of one model (on one UTC day, or over the asked days in `totals`)."""

    day: str | None = Field(None, description="YYYY-MM-DD (UTC); absent in `totals`")
    token: str = Field(description="the token's name (never the token)")
    model: str
    requests: int
    prompt_tokens: int
    cached_prompt_tokens: int = Field(description="the part of prompt_tokens whose KV cache was reused")
    completion_tokens: int
    total_tokens: int


class UsageReport(BaseModel):
    object: Literal["usage"]
    state_store: str = Field(description="where the numbers come from: embedded, or the Redis URL without password")
    start: str | None
    end: str | None
    data: list[UsageRecord] = Field(description="per day, token and model, oldest first")
    totals: list[UsageRecord] = Field(description="per token and model, over the asked days")


def _record(row: Usage, day: bool = True) -> UsageRecord:
    """One row; `day` False: a total over the asked days, which has no `day` (left unset, so absent)."""
    return UsageRecord(**({"day": row.day} if day else {}), **row.named(), total_tokens=row.total_tokens)


def _day(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return parse_day(value)
    except ValueError as exc:
        raise bad_request(name, str(exc)) from None


async def usage(request: web.Request) -> UsageReport:
    """?start=YYYY-MM-DD&end=YYYY-MM-DD&token=NAME, each optional."""
    caller = request.get(CALLER)
    if request.app[ACCESS].required and (caller is None or not caller.admin):
        raise ApiError(
            403, "usage is for tokens marked `admin` in the token file", "permission_error", code="permission_denied"
        )
    start, end = _day(request, "start"), _day(request, "end")
    store = request.app[STATE_STORE]
    try:
        rows = await UsageLedger(store).report(start, end, request.query.get("token") or None)
    except StoreUnavailable:
        raise unavailable("the state store is unreachable; retry shortly", code="state_store_unavailable") from None
    return UsageReport(
        object="usage",
        state_store=store.location.description,
        start=start,
        end=end,
        data=[_record(row) for row in rows],
        totals=[_record(row, day=False) for _, row in sorted(totals(rows).items())],
    )


DAY = {"type": "string", "format": "date"}
ROUTES = (
    Route(
        "GET",
        "/api/usage",
        "usage",
        usage,
        "usage",
        "operations",
        "Tokens used per token name, model and UTC day, from the state store (admin tokens only)",
        {200: Reply("the usage", {JSON: Json(UsageReport)})},
        (400, 401, 403, 503),
        query={
            "start": {"description": "first UTC day, YYYY-MM-DD (default: unbounded)", "schema": DAY},
            "end": {"description": "last UTC day, YYYY-MM-DD (default: unbounded)", "schema": DAY},
            "token": {"description": "only this token name", "schema": {"type": "string"}},
        },
    ),
)
