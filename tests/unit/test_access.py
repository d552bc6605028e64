"""Named tokens: the token file's format (names, limits, priority ceiling, admin) and re-reading it on change."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chatllm.kernel.access import (
    ANONYMOUS,
    UNNAMED,
    TokenFileError,
    TokenLimits,
    TokenRegistry,
    describe,
    parse_token_file,
)
from chatllm.kernel.config import Config
from chatllm.kernel.flags import security_problems
from chatllm.kernel.priority import Priority

ALICE = "alice-token-0123456789"
BOB = "bob-token-9876543210"


def test_a_token_file_names_tokens_and_their_limits() -> None:
    callers = parse_token_file(
        f"# comment\n\nalice:{ALICE}\n  bob : {BOB} : rpm=60, streams=4 \n",
    )
    assert [(c.name, c.token, c.limits) for c in callers] == [
        ("alice", ALICE, TokenLimits()),
        ("bob", BOB, TokenLimits(rpm=60, streams=4)),
    ]
    assert ALICE not in repr(callers) and BOB not in repr(callers)  # a logged caller shows no token


def test_options_give_token_limits_a_priority_ceiling_and_the_admin_marker() -> None:
    batch, ops, plain = parse_token_file(
        f"batch:{ALICE}:rpm=120, tpm=200000,streams=4,daily_tokens=5000000,priority=Bulk\n"
        f"ops:{BOB}:admin\nplain:plain-token\n"
    )
    assert batch.limits == TokenLimits(rpm=120, tpm=200000, streams=4, daily_tokens=5000000)
    assert batch.limits.counts_tokens and not plain.limits.counts_tokens
    assert (batch.priority, batch.admin) == (Priority.BULK, False)
    assert (ops.priority, ops.admin, ops.limits) == (Priority.INTERACTIVE, True, TokenLimits())
    assert describe([batch, ops, plain]) == (
        "batch[rpm=120,tpm=200000,streams=4,daily_tokens=5000000,priority=bulk], ops[admin], plain"
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("alice", "line 1: expected name:token"),
        (f"alice:{ALICE}:rpm=1:x", "line 1: expected name:token"),
        (f"al ice:{ALICE}", "name 'al ice'"),
        (f"-alice:{ALICE}", "name '-alice'"),
        (f"anonymous:{ALICE}", "reserved"),
        (f"unnamed:{ALICE}", "reserved"),
        ("alice:", "the token must be printable ASCII"),
        ("alice:tök", "the token must be printable ASCII"),
        (f"alice:{ALICE}\nalice:{BOB}", "line 2: the name 'alice' is given twice"),
        (f"alice:{ALICE}\nbob:{ALICE}", "line 2: this token is already given"),
        (f"alice:{ALICE}:rpm=0", "rpm must be a whole number >= 1"),
        (f"alice:{ALICE}:rpm=1.5", "rpm must be a whole number >= 1"),
        (f"alice:{ALICE}:burst=3", "'burst=3' is not one of rpm=N, tpm=N, streams=N, daily_tokens=N"),
        (f"alice:{ALICE}:tpm=-5", "tpm must be a whole number >= 1"),
        (f"alice:{ALICE}:priority=urgent", "priority must be one of interactive, default, bulk"),
        (f"alice:{ALICE}:admin=yes", "'admin=yes' is not one of"),
        (f"alice:{ALICE}:admin,admin", "admin is given twice"),
        (f"alice:{ALICE}:rpm=3,rpm=4", "rpm is given twice"),
    ],
)
def test_a_broken_line_is_named_and_its_token_never_shown(text: str, complaint: str) -> None:
    with pytest.raises(TokenFileError) as err:
        parse_token_file(text)
    assert complaint in str(err.value)
    assert ALICE not in str(err.value) and BOB not in str(err.value)


def write(path: Path, text: str) -> None:
    path.write_text(text)


def test_the_registry_identifies_raw_and_bearer_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    write(tokens, f"alice:{ALICE}\nbob:{BOB}:streams=2\n")
    access = TokenRegistry("single-token", tokens)
    assert access.required
    assert access.identify(ALICE).name == "alice"  # type: ignore[union-attr]
    assert access.identify(f"Bearer {BOB}").limits.streams == 2  # type: ignore[union-attr]
    assert access.identify("single-token").name == UNNAMED  # type: ignore[union-attr]
    for wrong in (None, "", "alice", ALICE + "x", f"Bearer {ALICE[:-1]}", "tök€n"):
        assert access.identify(wrong) is None


def test_without_tokens_everyone_is_anonymous() -> None:
    access = TokenRegistry()
    assert not access.required
    assert access.identify(None).name == ANONYMOUS  # type: ignore[union-attr]


def test_an_empty_token_file_refuses_everyone(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    write(tokens, "# nobody yet\n")
    access = TokenRegistry(None, tokens)
    assert access.required and access.identify(ALICE) is None


def test_a_changed_file_takes_effect_on_the_next_lookup(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    write(tokens, f"alice:{ALICE}\nbob:{BOB}\n")
    access = TokenRegistry(None, tokens)
    assert access.identify(BOB) is not None
    write(tokens, f"alice:{ALICE}\n")  # bob removed
    assert access.identify(BOB) is None
    assert access.identify(ALICE) is not None
    write(tokens, f"alice:{ALICE}\ncarol:carol-token-000\n")  # carol added
    assert access.identify("carol-token-000").name == "carol"  # type: ignore[union-attr]


def test_a_same_size_rewrite_in_the_same_clock_tick_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's stat cannot tell two writes within one timestamp tick apart: a recently written file
    is read again until it is older than that."""
    tokens = tmp_path / "tokens"
    write(tokens, f"alice:{ALICE}\n")
    access = TokenRegistry(None, tokens)
    unchanged = tokens.stat()
    write(tokens, "alice:" + "z" * len(ALICE) + "\n")
    monkeypatch.setattr(access, "_stat", lambda: unchanged)  # the rewrite left every stat field as it was
    assert access.identify(ALICE) is None
    assert access.identify("z" * len(ALICE)) is not None


def test_a_broken_rewrite_keeps_the_tokens_read_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tokens = tmp_path / "tokens"
    write(tokens, f"alice:{ALICE}\n")
    access = TokenRegistry(None, tokens)
    write(tokens, f"alice:{ALICE}\nbob {BOB}\n")
    with caplog.at_level(logging.ERROR):
        assert access.identify(ALICE) is not None
    assert "line 2" in caplog.text and "keeping the 1 tokens" in caplog.text
    assert BOB not in caplog.text and ALICE not in caplog.text
    tokens.unlink()
    assert access.identify(ALICE) is not None  # a file that vanished mid-rotation does not open or shut the door


def test_a_missing_or_broken_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="No such file"):
        TokenRegistry(None, tmp_path / "missing")
    write(tmp_path / "bad", "alice\n")
    with pytest.raises(TokenFileError, match="line 1"):
        TokenRegistry(None, tmp_path / "bad")


def test_the_single_token_may_not_hide_in_the_file(tmp_path: Path) -> None:
    write(tmp_path / "tokens", f"alice:{ALICE}\n")
    with pytest.raises(TokenFileError, match="also the token of 'alice'"):
        TokenRegistry(ALICE, tmp_path / "tokens")


def test_security_flags_that_only_work_together() -> None:
    def problems(**values: object) -> list[str]:
        return security_problems(Config.build(**values).security)

    assert problems() == []
    assert problems(tls_cert="c") == ["--tls-cert and --tls-key go together"]
    assert problems(tls_client_ca="ca") == [
        "--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked in TLS)"
    ]
    assert problems(upstream_tls_key="k") == ["--upstream-tls-cert and --upstream-tls-key go together"]
    assert problems(cors_origins=("https://app.example:8443", "*", "null", "http://localhost:3000")) == []
    assert problems(cors_origins=("app.example",)) == [
        "--cors-origins 'app.example': give scheme://host[:port] (no path), or *"
    ]
    assert problems(cors_origins=("https://app.example/",)) != []


def test_the_token_never_shows_in_a_printed_config() -> None:
    config = Config.build(token="very-secret-token")
    assert "very-secret-token" not in repr(config) and "very-secret-token" not in str(config.security)
