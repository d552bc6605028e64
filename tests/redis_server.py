"""Debian's `redis-server` as a test subprocess on a free loopback port, with no persistence.

`RedisServer(workdir)` is one server the test owns: `start()`, `stop()` (SIGTERM), `start()` again on
the same port (a store outage and its end). The session fixture `redis_server` is one shared server
for tests that only need a Redis; each test gets its own database number from `redis_url`, flushed
first, so tests never see each other's keys. tests/conftest.py loads this module as a plugin, so both
fixtures are there for every test.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess

DATABASES = 16  # redis-server's default; each test takes the next of 1-15 in turn
FLEET_DATABASE = 0  # the session's fleet (tests/fleet.py) keeps database 0; no test flushes it
_next_database = itertools.count()


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process (its own process group), bound to 127.0.0.1."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_loopback_port()
        self.log_path = workdir / f"redis-{self.port}.log"
        self.daemon: DaemonProcess | None = None

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30) -> RedisServer:
        argv = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.daemon = DaemonProcess("redis-server", "redis-server", argv, self.log_path, self.workdir)
        deadline = time.monotonic() + timeout
        while not self.answers():
            assert self.daemon.running, f"redis-server exited:\n{self.daemon.log_tail()}"
            assert time.monotonic() < deadline, f"redis-server did not answer:\n{self.daemon.log_tail()}"
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        """Whether it answers PING (a raw RESP exchange: no client library involved)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop(10)
        self.daemon = None

    def flush(self, database: int) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"SELECT {database}\r\nFLUSHDB\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                reply += sock.recv(64)
            assert reply == b"+OK\r\n+OK\r\n", reply

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL of the shared server with a database of its own for this test, empty."""
    database = 1 + next(_next_database) % (DATABASES - 1)
    redis_server.flush(database)
    return redis_server.url(database)
