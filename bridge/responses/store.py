"""Where /v1/responses keeps what it stored: one record per response, in the fleet's state store.

A record is the Response object as the client saw it plus the input items it was made from, so
a later request can continue the chain (`previous_response_id`) on any bridge that reaches the
same store, after a restart too; tool calls and their outputs are items like any other, so they
are kept. Two bounds keep a store from growing without end (vLLM's in-memory store has none):
`--responses-ttl` (a record expires that many seconds after it was last written) and
`--responses-max-bytes` (beyond it the least recently used records are evicted; reading a
response, or continuing its chain, counts as a use).

Both backends live in the state store (kernel/state, `--state-store`): `SqliteResponseStore` in the
embedded store's SQLite file under the data dir (bridges on one machine with the same data dir share
it) and `RedisResponseStore` (redis_store.py) in its Redis, which a fleet's bridges share. A store
that cannot be reached raises kernel.state's StoreUnavailable (already counted and logged).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from chatllm.kernel.state.connection import StateStore

log = logging.getLogger(__name__)
Record = dict[str, Any]
T = TypeVar("T")


class ResponseStore(Protocol):
    """Records by response id, bounded by a TTL and a size cap (LRU)."""

    async def put(self, response_id: str, record: Record) -> None:
        """Store (or replace) a record; evicts the least recently used beyond the size cap."""
        ...

    async def get(self, response_id: str) -> Record | None:
        """The record, or None when it never existed, expired, was evicted or deleted (a use, for the LRU)."""
        ...

    async def delete(self, response_id: str) -> bool:
        """True when there was a record to delete."""
        ...


def encode(record: Record) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def decode(data: bytes | str) -> Record:
    value = json.loads(data)
    assert isinstance(value, dict)
    return value


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at);
CREATE INDEX IF NOT EXISTS responses_use ON responses (used_at);
"""


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)


class SqliteResponseStore:
    """A table in the embedded state store's SQLite file (kernel/state: WAL, one transaction per call, so
    bridges on one machine with the same data dir share it)."""

    def __init__(self, state: StateStore, ttl: float, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._ready = False

    async def _call(self, operation: str, call: Callable[[sqlite3.Connection], T]) -> T:
        if not self._ready:
            await self.state.sqlite_call("responses.schema", _create_schema)
            self._ready = True
        return await self.state.sqlite_call(operation, call)

    async def put(self, response_id: str, record: Record) -> None:
        body, now = encode(record), self._clock()
        await self._call("responses.put", lambda db: self._put(db, response_id, body, now))

    async def get(self, response_id: str) -> Record | None:
        now = self._clock()
        body = await self._call("responses.get", lambda db: self._get(db, response_id, now))
        return decode(body) if body is not None else None

    async def delete(self, response_id: str) -> bool:
        return await self._call(
            "responses.delete", lambda db: db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0
        )

    async def total_bytes(self) -> int:
        return await self._call("responses.size", _total)

    def _put(self, db: sqlite3.Connection, response_id: str, body: bytes, now: float) -> None:
        db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
        db.execute(
            "INSERT OR REPLACE INTO responses (id, body, size, expires_at, used_at) VALUES (?, ?, ?, ?, ?)",
            (response_id, body, len(body), now + self.ttl, now),
        )
        total = _total(db)
        if total <= self.max_bytes:
            return
        victims = []
        for victim, size in db.execute("SELECT id, size FROM responses ORDER BY used_at, rowid"):
            victims.append((victim,))
            total -= size
            if total <= self.max_bytes:
                break
        db.executemany("DELETE FROM responses WHERE id = ?", victims)
        log.info("response store: evicted %d least recently used responses (--responses-max-bytes)", len(victims))

    @staticmethod
    def _get(db: sqlite3.Connection, response_id: str, now: float) -> bytes | None:
        row = db.execute("SELECT body FROM responses WHERE id = ? AND expires_at > ?", (response_id, now)).fetchone()
        if row is None:
            return None
        db.execute("UPDATE responses SET used_at = ? WHERE id = ?", (now, response_id))
        return bytes(row[0])


def _total(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0])


def open_response_store(state: StateStore, ttl: float, max_bytes: int) -> ResponseStore:
    """The response store in the state store `--state-store` opened: its SQLite file, or its Redis."""
    if state.embedded:
        return SqliteResponseStore(state, ttl, max_bytes)
    from chatllm.bridge.responses.redis_store import RedisResponseStore

    return RedisResponseStore(state, ttl, max_bytes)
