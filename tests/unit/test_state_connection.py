"""The state store's URL, the embedded store's SQLite transactions and the failure policy (no Redis here)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from chatllm.kernel.config import StateConfig
from chatllm.kernel.state.connection import EMBEDDED, StoreLocation, open_state_store, parse_state_store
from chatllm.kernel.state.failure import FAILURES, FailurePolicy, StoreUnavailable


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("embedded", EMBEDDED),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("redis://:s3cret@redis.internal:6380/2", "redis"),
        ("rediss://user:pw@redis.example.com:6380/0?ssl_cert_reqs=required", "redis"),
        ("unix:///run/redis/redis.sock?db=1", "redis"),
        ("redis://redis", "redis"),
    ],
)
def test_accepted_urls(url: str, kind: str) -> None:
    assert parse_state_store(url).kind == kind


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("memcached://host:11211", "expected 'embedded' or a Redis URL"),
        ("redis:///0", "names no host"),
        ("redis://host:99999/0", "port"),
        ("redis://:hunter2@host:6379/orders", "must be a number"),
        ("unix://", "socket's path"),
        ("", "expected 'embedded'"),
    ],
)
def test_refused_urls_say_why_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_state_store(url)
    assert "hunter2" not in str(caught.value)


def test_description_hides_the_password() -> None:
    location = StoreLocation("redis", "redis://admin:hunter2@10.0.0.5:6379/3")
    assert location.description == "redis://10.0.0.5:6379/3"


def test_policy_counts_logs_once_a_minute_and_fails_fast_while_down(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    policy = FailurePolicy("open", retry_after=1.0, clock=lambda: now[0])
    before = FAILURES.labels("admit")._value.get()
    with caplog.at_level(logging.WARNING, "chatllm.kernel.state.failure"):
        for _ in range(3):
            error = policy.failed("admit", ConnectionRefusedError("refused"))
            assert isinstance(error, StoreUnavailable)
            now[0] += 2.0
        now[0] += 60.0
        policy.failed("admit", ConnectionRefusedError("refused"))
    assert len(caplog.records) == 2  # the first failure, and the first one a minute later
    assert "serving without the shared state" in caplog.records[0].getMessage()
    with pytest.raises(StoreUnavailable):
        policy.check("admit")  # within retry_after of the last failure: no attempt, counted
    now[0] += 1.5
    policy.check("admit")  # retry_after passed: the next call may try the store again
    policy.succeeded()
    assert FAILURES.labels("admit")._value.get() - before == 5
    assert not policy.fail_closed and FailurePolicy("closed").fail_closed


def test_policy_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="open or closed"):
        FailurePolicy("sometimes")


async def test_embedded_store_runs_transactions_in_its_sqlite_file(tmp_path: Path) -> None:
    def create(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)")
        db.execute("INSERT INTO t VALUES ('a', 1)")

    def fail_half_way(db: sqlite3.Connection) -> None:
        db.execute("UPDATE t SET v = v + 1")
        raise RuntimeError("after the update")

    async with open_state_store(StateConfig(), tmp_path) as store:
        assert store.embedded and store.redis is None
        assert store.sqlite_path == tmp_path / "state" / "state.sqlite3"
        await store.sqlite_call("create", create)
        with pytest.raises(RuntimeError):
            await store.sqlite_call("update", fail_half_way)  # rolled back as a whole
        rows = await store.sqlite_call("read", lambda db: db.execute("SELECT k, v FROM t").fetchall(), write=False)
    assert rows == [("a", 1)]
    async with open_state_store(StateConfig(), tmp_path) as store:  # durable: a new process reads it back
        assert await store.sqlite_call("read", lambda db: db.execute("SELECT v FROM t").fetchone()) == (1,)


def test_keys_carry_the_prefix(tmp_path: Path) -> None:
    from chatllm.kernel.state.connection import StateStore

    store = StateStore(StoreLocation(EMBEDDED), FailurePolicy(), tmp_path)
    assert store.key("responses", "resp_1") == "chatllm:responses:resp_1"
