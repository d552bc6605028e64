"""Who is calling: the tokens the server and the bridge accept, each with a name and optional limits.

Tokens come from `--token` (one token, named "unnamed") and `--token-file`, a text file with one
token per line:

    # name:token[:options]         blank lines and lines starting with # are ignored
    alice:6f1d0c8e2b7a4c59
    batch-jobs:0b9e44d1c2a35f7e:rpm=120,tpm=200000,streams=4,daily_tokens=5000000,priority=bulk
    ops:3c8a1f5e9d2b7c40:admin

- name: 1-64 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit; unique. It is what logs,
  metrics labels, usage and the history export show; "anonymous" and "unnamed" are reserved.
- token: printable ASCII without spaces or `:` (it travels in HTTP headers and gRPC metadata); unique.
- options (optional, comma-separated), each limit fleet-wide when the fleet shares a state store:
  `rpm=N`, at most N Generate requests in any 60 s; `tpm=N`, at most N prompt + completion tokens
  in any 60 s; `streams=N`, at most N Generate calls at once; `daily_tokens=N`, at most N tokens per
  UTC day; `priority=CLASS`, the highest class its requests get (interactive, default, bulk: see
  chatllm.kernel.priority); `admin`, may read everyone's usage (GET /api/usage, `chatllm usage`).

The file is re-read when it changes (checked on every lookup: one stat), so a token added or
removed takes effect on the next request, without a restart. A file that stops parsing is
reported in the log (line number and reason, never a token) and the tokens read last stay in
force. A token is only ever compared (in constant time, against every entry) and never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.kernel.priority import CLASS_NAMES, Priority

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"  # no token is configured: nobody is identified
UNNAMED = "unnamed"  # the single --token
RESERVED_NAMES = frozenset({ANONYMOUS, UNNAMED})
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TOKEN = re.compile(r"[!-9;-~]+")  # printable ASCII except space and ':'
LIMIT_KEYS = ("rpm", "tpm", "streams", "daily_tokens")
ADMIN = "admin"
# A file written within this many seconds of being read may change again without its stat changing
# (timestamps have a coarse tick): it is read again until it is older than that.
RACY_WINDOW_NS = 2_000_000_000


class TokenFileError(Exception):
    """The token file cannot be read or parsed; the message names the line, never a token."""


@dataclass(frozen=True)
class TokenLimits:
    """Per-token limits on Generate; None: no limit."""

    rpm: int | None = None
    tpm: int | None = None
    streams: int | None = None
    daily_tokens: int | None = None

    def describe(self) -> str:
        parts = [f"{key}={value}" for key in LIMIT_KEYS if (value := getattr(self, key)) is not None]
        return ",".join(parts) or "none"

    @property
    def counts_tokens(self) -> bool:
        """Whether admission must reserve the request's tokens (a tpm or daily limit)."""
        return self.tpm is not None or self.daily_tokens is not None


NO_LIMITS = TokenLimits()


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the token's name, the token itself (to forward), its limits, the highest
    priority class its requests get, and whether it may read everyone's usage."""

    name: str
    token: str | None = field(default=None, repr=False)
    limits: TokenLimits = NO_LIMITS
    priority: Priority = Priority.INTERACTIVE  # the ceiling: a token without one may ask for any class
    admin: bool = False

    def describe(self) -> str:
        """Name and options, for the log (never the token)."""
        options = [self.limits.describe()] if self.limits != NO_LIMITS else []
        if self.priority is not Priority.INTERACTIVE:
            options.append(f"priority={self.priority.label}")
        if self.admin:
            options.append(ADMIN)
        return f"{self.name}[{','.join(options)}]" if options else self.name


ANONYMOUS_CALLER = Caller(ANONYMOUS)


def presented_value(header: str) -> str:
    """The token an Authorization header value carries: the value itself, or what follows `Bearer `."""
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value


OPTIONS_HELP = "rpm=N, tpm=N, streams=N, daily_tokens=N, priority=CLASS, admin"


def _options(name: str, token: str, text: str, where: str) -> Caller:
    """The caller a line's options describe (see the module docstring)."""
    limits: dict[str, int] = {}
    seen: set[str] = set()
    priority, admin = Priority.INTERACTIVE, False
    for item in text.split(","):
        key, sep, raw = (part.strip() for part in item.strip().partition("="))
        if key in seen:
            raise TokenFileError(f"{where}: {key} is given twice")
        seen.add(key)
        if key == ADMIN and not sep:
            admin = True
        elif key == "priority" and sep:
            if raw.lower() not in CLASS_NAMES:
                raise TokenFileError(f"{where}: priority must be one of {', '.join(CLASS_NAMES)}")
            priority = Priority[raw.upper()]
        elif key in LIMIT_KEYS and sep:
            if not raw.isdigit() or int(raw) < 1:
                raise TokenFileError(f"{where}: {key} must be a whole number >= 1")
            limits[key] = int(raw)
        else:
            raise TokenFileError(f"{where}: option {item.strip()!r} is not one of {OPTIONS_HELP}")
    return Caller(name, token, TokenLimits(**limits), priority, admin)


def parse_token_file(text: str, source: str = "token file") -> list[Caller]:
    """The callers a token file names (see the module docstring for the format)."""
    callers: list[Caller] = []
    names: set[str] = set()
    tokens: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        parts = line.split(":")
        if len(parts) not in (2, 3):
            raise TokenFileError(f"{where}: expected name:token or name:token:options")
        name, token = parts[0].strip(), parts[1].strip()
        if not NAME.fullmatch(name):
            raise TokenFileError(f"{where}: name {name[:64]!r} must be 1-64 of A-Z a-z 0-9 _ . - (letter/digit first)")
        if name in RESERVED_NAMES:
            raise TokenFileError(f"{where}: the name {name!r} is reserved")
        if not TOKEN.fullmatch(token):
            raise TokenFileError(f"{where}: the token must be printable ASCII without spaces or ':'")
        if name in names:
            raise TokenFileError(f"{where}: the name {name!r} is given twice")
        if token in tokens:
            raise TokenFileError(f"{where}: this token is already given to another name")
        names.add(name)
        tokens.add(token)
        callers.append(_options(name, token, parts[2], where) if len(parts) == 3 else Caller(name, token))
    return callers


class TokenRegistry:
    """The accepted tokens: `--token` (named "unnamed") plus the token file's, re-read on change.

    Thread-safe (the gRPC server may look tokens up from several threads)."""

    def __init__(self, token: str | None = None, token_file: str | os.PathLike[str] | None = None) -> None:
        self._single = [Caller(UNNAMED, token)] if token else []
        self._path = Path(token_file).expanduser() if token_file else None
        self._file_callers: list[Caller] = []
        self._signature: tuple[int, int, int, int] | None = None
        self._read_at_ns = 0
        self._lock = threading.Lock()
        if self._path is not None:
            self._load(self._stat())  # a broken file at start-up is an error, not a warning

    @property
    def required(self) -> bool:
        """Whether requests must carry a token (a configured but empty token file refuses everyone)."""
        return bool(self._single) or self._path is not None

    def callers(self) -> list[Caller]:
        """Every accepted token's caller (the EAS signature check tries each token)."""
        self.refresh()
        return self._single + self._file_callers

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller whose token an Authorization value carries; None when it carries no accepted token.

        Without any token configured, everyone is the anonymous caller."""
        if not self.required:
            return ANONYMOUS_CALLER
        if authorization is None:
            return None
        presented = presented_value(authorization).encode("utf-8", "surrogateescape")
        found = None
        for caller in self.callers():  # every entry is compared: the time taken does not reveal which matched
            assert caller.token is not None
            if hmac.compare_digest(presented, caller.token.encode("utf-8")) and found is None:
                found = caller
        return found

    def refresh(self) -> None:
        """Re-read the token file if it changed since it was last read."""
        if self._path is None:
            return
        try:
            stat = self._stat()
        except TokenFileError as exc:
            log.error("%s; keeping the %d tokens read before", exc, len(self._file_callers))
            return
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if signature == self._signature and stat.st_mtime_ns < self._read_at_ns - RACY_WINDOW_NS:
            return
        with self._lock:
            try:
                self._load(stat)
            except TokenFileError as exc:
                self._signature = signature  # report a broken file once, not on every request
                log.error("%s; keeping the %d tokens read before", exc, len(self._file_callers))

    def _stat(self) -> os.stat_result:
        assert self._path is not None
        try:
            return self._path.stat()
        except OSError as exc:
            raise TokenFileError(f"--token-file {self._path}: {exc.strerror or exc}") from None

    def _load(self, stat: os.stat_result) -> None:
        assert self._path is not None
        read_at = time.time_ns()
        try:
            text = self._path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"--token-file {self._path}: cannot read it ({exc})") from None
        callers = parse_token_file(text, f"--token-file {self._path}")
        clash = {c.name for c in callers if self._single and c.token == self._single[0].token}
        if clash:
            raise TokenFileError(f"--token-file {self._path}: the --token is also the token of {clash.pop()!r}")
        self._signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        self._read_at_ns = read_at
        if callers != self._file_callers:
            log.info("token file %s: %d tokens (%s)", self._path, len(callers), describe(callers))
        self._file_callers = callers


def describe(callers: Sequence[Caller]) -> str:
    """Names and options, for the log (never the tokens)."""
    return ", ".join(c.describe() for c in callers) or "none"
