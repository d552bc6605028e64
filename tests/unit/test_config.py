from __future__ import annotations

import argparse

import pytest

from chatllm.kernel.config import Config
from chatllm.kernel.flags import add_config_arguments, from_args


def parse(argv: list[str], env: dict[str, str] | None = None, command: str = "server") -> Config:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, command)
    return from_args(parser.parse_args(argv), env=env or {})


def test_seed_flags_accept_dashed_and_underscored_spellings() -> None:
    dashed = parse(
        [
            "--max-new-tokens",
            "64",
            "--max-round",
            "2",
            "--top-k",
            "5",
            "--top-p",
            "0.5",
            "--model-type",
            "qwen",
            "--log-level",
            "DEBUG",
            "--no-template",
            "--cpu",
            "--precision",
            "bf16",
        ]
    )
    underscored = parse(
        [
            "--max_new_tokens",
            "64",
            "--max_round",
            "2",
            "--top_k",
            "5",
            "--top_p",
            "0.5",
            "--model_type",
            "qwen",
            "--log_level",
            "DEBUG",
            "--no_template",
            "--cpu",
            "--precision",
            "bf16",
        ]
    )
    assert dashed == underscored
    assert dashed.server.max_new_tokens == 64 and dashed.history.max_round == 2 and dashed.server.top_k == 5
    assert dashed.model.no_template and dashed.engine.cpu and dashed.engine.precision == "bf16"


def test_defaults_follow_the_seed() -> None:
    config = parse([])
    assert (config.server.max_new_tokens, config.server.temperature, config.history.max_round) == (2048, 0.95, 5)
    assert config.server.top_k is None and config.server.top_p is None
    assert config.server.grpc_port == 50051 and config.bridge.port == 8000
    assert config.history.export_interval == 3600 and config.history.export_history_path is None


def test_env_fills_what_flags_leave_unset_and_flags_win() -> None:
    env = {"CHATLLM_TEMPERATURE": "0.3", "CHATLLM_TOKEN": "s3cret", "CHATLLM_CPU": "true"}
    config = parse([], env)
    assert config.server.temperature == 0.3 and config.security.token == "s3cret" and config.engine.cpu is True
    assert parse(["--temperature", "0.7"], env).server.temperature == 0.7


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        parse([]).server.temperature = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--temperature", "3"], "--temperature"),
        (["--top_p", "0"], "--top_p"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
    ],
)
def test_impossible_settings_fail_with_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as err:
        parse(argv)
    assert message in str(err.value)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(SystemExit) as err:
        parse([], {"CHATLLM_MAX_ROUND": "many"})
    assert "CHATLLM_MAX_ROUND" in str(err.value)
