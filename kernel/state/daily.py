"""The embedded store's daily token budgets: tokens reserved and used per token name and UTC day, in the
SQLite file, so a restart does not hand a token a fresh budget (and processes on one machine that
share the data dir share the budget). Each step is one write transaction: check and update are atomic.
"""

from __future__ import annotations

import sqlite3

from chatllm.kernel.state.connection import StateStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS daily_tokens (
    token TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (token, day)
)
"""


class SqliteDaily:
    """reserve / settle as windows.DailyCounter's, in SQLite (StoreUnavailable when the file fails)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._schema_ready = False

    async def reserve(self, name: str, day: str, tokens: int, allowed: int) -> int | None:
        """None when reserved; else the tokens already used today (nothing reserved)."""
        await self._ensure_schema()

        def reserve(db: sqlite3.Connection) -> int | None:
            used = _used(db, name, day)
            if used and used + tokens > allowed:
                return used
            _add(db, name, day, tokens)
            return None

        return await self.store.sqlite_call("reserve", reserve)

    async def used(self, name: str, day: str) -> int:
        await self._ensure_schema()
        return await self.store.sqlite_call("admit", lambda db: _used(db, name, day), write=False)

    async def settle(self, name: str, day: str, reserved: int, used: int) -> None:
        await self._ensure_schema()
        await self.store.sqlite_call("settle", lambda db: _add(db, name, day, used - reserved))

    async def _ensure_schema(self) -> None:
        if not self._schema_ready:
            await self.store.sqlite_call("daily", lambda db: db.execute(SCHEMA))
            self._schema_ready = True


def _used(db: sqlite3.Connection, name: str, day: str) -> int:
    row = db.execute("SELECT tokens FROM daily_tokens WHERE token = ? AND day = ?", (name, day)).fetchone()
    return int(row[0]) if row else 0


def _add(db: sqlite3.Connection, name: str, day: str, tokens: int) -> None:
    db.execute(
        "INSERT INTO daily_tokens (token, day, tokens) VALUES (?, ?, ?) "
        "ON CONFLICT (token, day) DO UPDATE SET tokens = tokens + excluded.tokens",
        (name, day, tokens),
    )
