"""Usage per token name, model and UTC day: requests, prompt, cached-prompt and completion tokens.

Written once per finished request by the server that answered it (what the engine really used; a
cancelled stream counts what it consumed), read by `GET /api/usage` and `chatllm usage`:

- Redis: one hash per day, `chatllm:usage:<day>`, fields `<token>\\t<model>\\t<count>`, and the set of
  days `chatllm:usage:days`. Each request's increments are one Lua script guarded by the request's
  ticket, so sending them again after a lost reply never counts them twice.
- embedded: the `usage` table of the SQLite file, one row per (day, token, model).

A write the store cannot take stays in memory and is sent again once the store answers (every
second): an outage delays usage, it never loses it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from chatllm.kernel.state.connection import StateStore
from chatllm.kernel.state.failure import StoreUnavailable
from chatllm.kernel.state.repeating import repeating

log = logging.getLogger(__name__)
COUNTS = ("requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens")
RETRY_EVERY_S = 1.0
MAX_PENDING = 100_000  # requests' usage held through an outage; beyond that the oldest are merged
GUARD_TTL_S = 86400

# KEYS: the day's hash, the set of days, the request's guard. ARGV: guard ttl s, day, field, amount, ...
RECORD = """
if redis.call('SET', KEYS[3], 1, 'NX', 'EX', tonumber(ARGV[1])) then
  for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1])) end
  redis.call('SADD', KEYS[2], ARGV[2])
end
return 0
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL, token TEXT NOT NULL, model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    cached_prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, token, model)
)
"""


@dataclass(frozen=True)
class Usage:
    """What one request (or a sum of requests) used, under one token and model on one day."""

    day: str
    token: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def counts(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in COUNTS)

    def named(self) -> dict[str, Any]:
        """token, model and the counts by name: a report row's fields (its day apart)."""
        return {"token": self.token, "model": self.model, **dict(zip(COUNTS, self.counts(), strict=True))}

    def plus(self, other: Usage) -> Usage:
        added = {name: getattr(self, name) + getattr(other, name) for name in COUNTS}
        return Usage(self.day, self.token, self.model, **added)


@dataclass
class _Pending:
    guard: str  # the request's ticket: its increments are applied at most once
    usage: Usage


class UsageLedger:
    """Records usage in the state store and reads it back; `running()` keeps retrying what is pending."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._pending: list[_Pending] = []
        self._record = store.script(RECORD) if not store.embedded else None
        self._schema_ready = False

    @property
    def pending(self) -> int:
        """Requests whose usage waits for the store."""
        return len(self._pending)

    async def record(self, guard: str, usage: Usage) -> None:
        """Add a request's usage (never raises: what the store cannot take is kept and sent again)."""
        try:
            await self._write(guard, usage)
        except StoreUnavailable:
            self._keep(guard, usage)

    def _keep(self, guard: str, usage: Usage) -> None:
        if len(self._pending) >= MAX_PENDING:  # merge the oldest two when they add to the same row
            first, second = self._pending[0], self._pending[1]
            if _row_key(first.usage) == _row_key(second.usage):
                self._pending[1] = _Pending(second.guard, first.usage.plus(second.usage))
                del self._pending[0]
        self._pending.append(_Pending(guard, usage))

    async def _write(self, guard: str, usage: Usage) -> None:
        if self.store.embedded:
            await self._ensure_schema()
            await self.store.sqlite_call("usage", lambda db: _add_row(db, usage))
            return
        args: list[Any] = [GUARD_TTL_S, usage.day]
        for name, value in zip(COUNTS, usage.counts(), strict=True):
            if value:
                args += [f"{usage.token}\t{usage.model}\t{name}", value]
        keys = [self.store.key("usage", usage.day), self.store.key("usage", "days")]
        keys.append(self.store.key("usage", "seen", guard))
        assert self._record is not None
        record = self._record
        await self.store.redis_call("usage", lambda redis: record(keys=keys, args=args, client=redis))

    async def flush(self) -> int:
        """Send what is pending (oldest first) until the store refuses; how many are left."""
        while self._pending:
            item = self._pending[0]
            try:
                await self._write(item.guard, item.usage)
            except StoreUnavailable:
                break
            self._pending.pop(0)
        return len(self._pending)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[UsageLedger]:
        """Retry pending usage every second while open; one last try on exit."""
        try:
            async with repeating(self._retry, RETRY_EVERY_S):
                yield self
        finally:
            if await self.flush():
                log.error("state store unreachable at shutdown: usage of %d requests not recorded", self.pending)

    async def _retry(self) -> None:
        if self._pending:
            await self.flush()

    async def report(self, start: str | None = None, end: str | None = None, token: str | None = None) -> list[Usage]:
        """Usage per (day, token, model) for days in [start, end] (YYYY-MM-DD; None: unbounded)."""
        if self.store.embedded:
            await self._ensure_schema()
            rows = await self.store.sqlite_call("usage", lambda db: _select(db, start, end, token), write=False)
            return rows
        days_key = self.store.key("usage", "days")
        days = sorted(d.decode() for d in await self.store.redis_call("usage", lambda r: r.smembers(days_key)))
        days = [d for d in days if (start is None or d >= start) and (end is None or d <= end)]
        if not days:
            return []

        async def read(redis: Any) -> list[Any]:
            async with redis.pipeline(False) as pipe:
                for day in days:
                    pipe.hgetall(self.store.key("usage", day))
                return list(await pipe.execute())

        hashes = await self.store.redis_call("usage", read)
        return [row for day, fields_ in zip(days, hashes, strict=True) for row in _rows(day, fields_, token)]

    async def _ensure_schema(self) -> None:
        if not self._schema_ready:
            await self.store.sqlite_call("usage", lambda db: db.execute(SCHEMA))
            self._schema_ready = True


def parse_day(text: str) -> str:
    """A UTC day as YYYY-MM-DD (ValueError otherwise): the bounds of a usage report."""
    try:
        time.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise ValueError("a UTC day as YYYY-MM-DD") from None
    if len(text) != 10:
        raise ValueError("a UTC day as YYYY-MM-DD")
    return text


def _add_row(db: sqlite3.Connection, usage: Usage) -> None:
    db.execute(
        "INSERT INTO usage (day, token, model, requests, prompt_tokens, cached_prompt_tokens, completion_tokens) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, token, model) DO UPDATE SET "
        "requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
        "cached_prompt_tokens = cached_prompt_tokens + excluded.cached_prompt_tokens, "
        "completion_tokens = completion_tokens + excluded.completion_tokens",
        (usage.day, usage.token, usage.model, *usage.counts()),
    )


def _select(db: sqlite3.Connection, start: str | None, end: str | None, token: str | None) -> list[Usage]:
    query = f"SELECT day, token, model, {', '.join(COUNTS)} FROM usage WHERE day >= ? AND day <= ?"
    params: list[str] = [start or "", end or "9999-12-31"]
    if token is not None:
        query += " AND token = ?"
        params.append(token)
    return [Usage(*row) for row in db.execute(query + " ORDER BY day, token, model", params)]


def _rows(day: str, hash_fields: dict[bytes, bytes], token: str | None) -> Iterable[Usage]:
    by_key: dict[tuple[str, str], dict[str, int]] = {}
    for raw_field, raw_value in hash_fields.items():
        name, model, count = raw_field.decode().split("\t")
        if token is None or name == token:
            by_key.setdefault((name, model), {})[count] = int(raw_value)
    for (name, model), counts in sorted(by_key.items()):
        yield Usage(day, name, model, **{k: v for k, v in counts.items() if k in COUNTS})


def totals(rows: Iterable[Usage]) -> dict[tuple[str, str], Usage]:
    """Rows summed over their days: (token, model) -> usage (day: the range's first day)."""
    out: dict[tuple[str, str], Usage] = {}
    for row in rows:
        key = (row.token, row.model)
        out[key] = out[key].plus(row) if key in out else row
    return out


def _row_key(usage: Usage) -> tuple[str, str, str]:
    return usage.day, usage.token, usage.model
