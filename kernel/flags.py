"""The configuration's command line: one flag per `Config` field (`--max-new-tokens` and
`--max_new_tokens`), the `CHATLLM_*` env variable behind each, the command's defaults, and the
start-up checks of settings that cannot work."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from chatllm.kernel.config import ENV_PREFIX, BridgeConfig, Config, SecurityConfig, option_fields

ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+|null")  # a browser's Origin header value


def _flag_names(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    underscored = "--" + name
    return [dashed] if dashed == underscored else [dashed, underscored]


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _default_for(f: dataclasses.Field[Any], command: str) -> Any:
    overrides = f.metadata["command_defaults"] or {}
    return overrides.get(command, f.default if f.default is not dataclasses.MISSING else None)


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of `command` to parser, one argument group per section.

    Defaults are filled in later by `from_args` (so an env variable can fill what a flag leaves unset)."""
    parser.set_defaults(_config_command=command)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, f, kind in option_fields():
        if command not in f.metadata["commands"]:
            continue
        group = groups.setdefault(section, parser.add_argument_group(section))
        default = _default_for(f, command)
        help_text = f"{f.metadata['help']} [env {ENV_PREFIX}{f.name.upper()}; default {default!r}]"
        names = _flag_names(f.name)
        if kind is bool and f.name.startswith("no_"):
            # Seed-style negative switches (--no-template, --no-api): no "--no-no-" twin.
            group.add_argument(*names, dest=f.name, action="store_const", const=True, default=None, help=help_text)
        elif kind is bool:
            group.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is tuple:
            group.add_argument(*names, dest=f.name, nargs="+", default=None, metavar="VALUE", help=help_text)
        else:
            group.add_argument(
                *names, dest=f.name, type=kind, default=None, choices=f.metadata["choices"], help=help_text
            )


def from_args(args: argparse.Namespace | Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build the Config: CLI flag, else CHATLLM_<NAME> env variable, else the command's default."""
    env = os.environ if env is None else env
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    command = given.get("_config_command", "server")
    values: dict[str, Any] = {}
    for _, f, kind in option_fields():
        if command not in f.metadata["commands"]:
            continue
        if given.get(f.name) is not None:
            values[f.name] = tuple(given[f.name]) if kind is tuple else given[f.name]
            continue
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            default = _default_for(f, command)
            if default != f.default:
                values[f.name] = default
            continue
        try:
            values[f.name] = _parse_bool(raw) if kind is bool else tuple(raw.split()) if kind is tuple else kind(raw)
        except ValueError as exc:
            raise SystemExit(f"error: {ENV_PREFIX}{f.name.upper()}={raw!r}: {exc}") from None
        choices = f.metadata["choices"]
        if choices and values[f.name] not in choices:
            raise SystemExit(f"error: {ENV_PREFIX}{f.name.upper()} must be one of {', '.join(choices)}")
    config = Config.build(**values)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Reject impossible settings at start-up with one clear line."""
    server, limits = config.server, config.limits
    problems = []
    if server.max_new_tokens < 1:
        problems.append("--max-new-tokens must be >= 1")
    if not 0 <= server.temperature <= 2:
        problems.append("--temperature must be between 0 and 2")
    if server.top_k is not None and server.top_k < 0:
        problems.append("--top_k must be >= 0")
    if server.top_p is not None and not 0 < server.top_p <= 1:
        problems.append("--top_p must be in (0, 1]")
    if config.history.max_round < 0:
        problems.append("--max_round must be >= 0")
    if config.bridge.api_only and config.bridge.no_api:
        problems.append("--api-only and --no-api exclude each other")
    kb = config.kb
    if kb.chunk_overlap >= kb.chunk_size:
        problems.append("--chunk-overlap must be smaller than --chunk-size")
    if not 0 <= kb.kb_min_score <= 1:
        problems.append("--kb-min-score must be between 0 and 1")
    if kb.milvus_shards < 1 or kb.milvus_replicas < 1:
        problems.append("--milvus-shards and --milvus-replicas must be >= 1")
    if kb.hnsw_m < 2 or kb.hnsw_ef_construction < 1 or kb.hnsw_ef_search < 1:
        problems.append("--hnsw-m must be >= 2, --hnsw-ef-construction and --hnsw-ef-search >= 1")
    if config.engine.kv_cache_space <= 0:
        problems.append("--kv-cache-space must be > 0")
    if config.history.export_interval < 1:
        problems.append("--export-interval must be >= 1 second")
    for name in ("max_concurrent", "max_queue"):
        if getattr(limits, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0")
    problems.extend(security_problems(config.security))
    problems.extend(routing_problems(config.bridge))
    problems.extend(speculative_problems(config))
    for module in config.model.lora_modules:
        name, sep, path = module.partition("=")
        if not (sep and name and path):
            problems.append(f"--lora-modules {module!r}: give NAME=PATH")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def routing_problems(bridge: BridgeConfig) -> list[str]:
    problems = []
    if not 0 <= bridge.routing_cache_threshold <= 1:
        problems.append("--routing-cache-threshold must be between 0 and 1")
    if bridge.routing_balance_abs < 0 or bridge.routing_balance_rel < 1:
        problems.append("--routing-balance-abs must be >= 0 and --routing-balance-rel >= 1")
    return problems


def security_problems(security: SecurityConfig) -> list[str]:
    """Flags that only make sense together (the files themselves are read when the server starts)."""
    problems = []
    for cert, key in (("tls_cert", "tls_key"), ("upstream_tls_cert", "upstream_tls_key")):
        if (getattr(security, cert) is None) != (getattr(security, key) is None):
            problems.append(f"--{cert.replace('_', '-')} and --{key.replace('_', '-')} go together")
    if security.tls_client_ca and not security.tls_cert:
        problems.append("--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked in TLS)")
    for origin in security.cors_origins:
        if origin != "*" and not ORIGIN.fullmatch(origin):
            problems.append(f"--cors-origins {origin!r}: give scheme://host[:port] (no path), or *")
    return problems


def speculative_problems(config: Config) -> list[str]:
    """--speculative-config must be a JSON object (vLLM checks its keys), and only vLLM speculates."""
    vllm = config.vllm
    problems = []
    if vllm.speculative_config is not None:
        try:
            parsed = json.loads(vllm.speculative_config)
        except ValueError as exc:
            parsed = exc
        if not isinstance(parsed, dict):
            problems.append(
                "--speculative-config takes a JSON object, as vllm serve does, e.g. "
                f'\'{{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}}\' (got: {parsed})'
            )
    wants = vllm.speculative != "off" or vllm.speculative_config is not None
    if wants and config.engine.engine_backend == "hf":
        problems.append(SPECULATIVE_NEEDS_VLLM)
    return problems


SPECULATIVE_NEEDS_VLLM = (
    "--speculative / --speculative-config need --backend vllm: transformers' continuous batching (hf) has no "
    "speculative decoding"
)
