"""The state store's address and connection: what `--state-store` names, opened once per process.

    embedded                              in-process counters; durable records in one SQLite file,
                                          <data-dir>/state/state.sqlite3 (processes on one machine
                                          with the same data dir share it)
    redis://[[user]:password@]host:port/db   one Redis (7 or later) that every replica and bridge share
    rediss://...                          the same over TLS (redis-py's ssl_* query arguments apply)
    unix:///path/redis.sock?db=N          a Redis on a Unix socket

API, for every module that keeps something in the store (limits, usage, fair share, stored
responses):

    async with open_state_store(config.state, config.common.data_path) as store:
        store.location.kind            "embedded" or "redis"; store.location.description has no password
        store.embedded                 True for the embedded store
        store.key("responses", rid)    "chatllm:responses:<rid>": every Redis key carries the prefix
        await store.redis_call("op", lambda redis: redis.get(key))   a redis.asyncio.Redis (bytes replies)
        await store.sqlite_call("op", lambda db: db.execute(...))    a sqlite3.Connection, on the store's
                                                                     one thread (embedded only)
        store.policy.fail_closed       what to do when a call raises StoreUnavailable (failure.py)

Both calls raise `StoreUnavailable` when the store cannot be reached; the failure is already counted
and logged. Atomic updates on Redis are Lua scripts (`store.script(lua)` registers one; redis-py
reloads it after a Redis restart); on SQLite, one transaction per call (`BEGIN IMMEDIATE`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from chatllm.kernel.config import StateConfig
from chatllm.kernel.state.failure import FailurePolicy, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
EMBEDDED = "embedded"
KEY_PREFIX = "chatllm"
REDIS_SCHEMES = ("redis", "rediss", "unix")
# A store that does not answer within these seconds counts as unreachable: a request never hangs on it.
CONNECT_TIMEOUT_S = 0.5
COMMAND_TIMEOUT_S = 1.0
SQLITE_FILE = Path("state") / "state.sqlite3"


@dataclass(frozen=True)
class StoreLocation:
    """Where the state lives, parsed from `--state-store`."""

    kind: str  # "embedded" | "redis"
    url: str = ""  # the Redis URL as given (may hold a password: never log it; log `description`)

    @property
    def description(self) -> str:
        if self.kind == EMBEDDED:
            return EMBEDDED
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_state_store(text: str) -> StoreLocation:
    """The location `--state-store` names; ValueError saying what is wrong (never echoing a password)."""
    value = text.strip()
    if value == EMBEDDED:
        return StoreLocation(EMBEDDED)
    parts = urlsplit(value)
    if parts.scheme.lower() not in REDIS_SCHEMES:
        raise ValueError("--state-store: expected 'embedded' or a Redis URL (redis://host:port/db, rediss://, unix://)")
    if parts.scheme.lower() != "unix":
        if not parts.hostname:
            raise ValueError("--state-store: the Redis URL names no host (redis://host:port/db)")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            raise ValueError("--state-store: the Redis URL's port is not a number in 1-65535") from None
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"--state-store: the Redis database must be a number (redis://host:port/0): {database!r}")
    elif not parts.path:
        raise ValueError("--state-store: unix:// needs the socket's path (unix:///run/redis.sock)")
    return StoreLocation("redis", value)


class StateStore:
    """An open state store: a Redis client, or the embedded SQLite file (and its thread)."""

    def __init__(self, location: StoreLocation, policy: FailurePolicy, data_dir: Path) -> None:
        self.location = location
        self.policy = policy
        self.redis: Any = None  # redis.asyncio.Redis
        self.sqlite_path: Path | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        if location.kind == EMBEDDED:
            self.sqlite_path = data_dir / SQLITE_FILE
        else:
            self.redis = _redis_client(location.url)

    @property
    def embedded(self) -> bool:
        return self.location.kind == EMBEDDED

    def key(self, *parts: str) -> str:
        return ":".join((KEY_PREFIX, *parts))

    def script(self, lua: str) -> Any:
        """A Lua script registered with this Redis (call it with `keys=` and `args=` inside redis_call)."""
        return self.redis.register_script(lua)

    async def redis_call(self, operation: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """`call(redis)`, or StoreUnavailable when Redis cannot be reached (counted and logged)."""
        from redis.exceptions import RedisError

        self.policy.check(operation)
        try:
            result = await call(self.redis)
        except (RedisError, OSError) as exc:  # unreachable, timed out, loading, read-only, out of memory
            raise self.policy.failed(operation, exc) from None
        self.policy.succeeded()
        return result

    async def sqlite_call(self, operation: str, call: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """`call(connection)` in one transaction on the store's SQLite thread (a write transaction takes
        the file's lock at once: read-modify-write is atomic across processes); StoreUnavailable on I/O
        errors."""
        assert self._thread is not None, "sqlite_call needs the embedded store, opened"
        self.policy.watch(operation)
        loop = asyncio.get_running_loop()
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        try:
            result = await loop.run_in_executor(self._thread, self._transaction, call, begin)
        except sqlite3.OperationalError as exc:  # disk full, locked past the busy timeout, unreadable file
            raise self.policy.failed(operation, exc) from None
        self.policy.succeeded()
        return result

    def _transaction(self, call: Callable[[sqlite3.Connection], T], begin: str) -> T:
        assert self._sqlite is not None
        with self._sqlite:  # commits, or rolls back on an exception
            self._sqlite.execute(begin)
            return call(self._sqlite)

    async def open(self) -> None:
        self.policy.watch("connect")  # the failure counter is on /metrics from start-up
        if self.embedded:
            assert self.sqlite_path is not None
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chatllm-state")
            path = self.sqlite_path
            self._sqlite = await asyncio.get_running_loop().run_in_executor(self._thread, _open_sqlite, path)
            return
        try:
            await self.redis_call("connect", lambda redis: redis.ping())
        except StoreUnavailable:
            pass  # counted and logged; requests follow --state-store-failure until it answers
        else:
            log.info("state store: %s", self.location.description)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self._thread is not None:
            if self._sqlite is not None:
                self._thread.submit(self._sqlite.close).result()
            self._thread.shutdown(wait=True)


def _redis_client(url: str) -> Any:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # No retries inside the client: a failed call is reported at once and the failure policy decides.
    return Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


def _open_sqlite(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in each call).
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    connection.execute("PRAGMA journal_mode=WAL")  # readers in other processes never block the writer
    connection.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; fsync at checkpoints
    return connection


@contextlib.asynccontextmanager
async def open_state_store(state: StateConfig, data_dir: Path) -> AsyncIterator[StateStore]:
    """The store `--state-store` names, open for the block (ValueError for a URL that cannot work)."""
    store = StateStore(parse_state_store(state.state_store), FailurePolicy(state.state_store_failure), data_dir)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
