"""The one configuration object, built once from CLI flags and `CHATLLM_*` env.

Every option is a field of `Config` whose metadata describes its flag, so the
parser, the env lookup and the defaults cannot drift apart. Each flag accepts
both spellings (`--max-new-tokens` and `--max_new_tokens`), as the seed did.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

ENV_PREFIX = "CHATLLM_"

# Which command shows which group of flags.
GROUPS_BY_COMMAND: dict[str, tuple[str, ...]] = {
    "server": ("model", "engine", "vllm", "server", "kb", "history", "limits", "common"),
    "serve": ("model", "engine", "vllm", "server", "bridge", "kb", "history", "limits", "common"),
    "bridge": ("bridge", "limits", "common"),
}


def option(default: Any, help: str, group: str, *, choices: Sequence[str] | None = None) -> Any:
    """A config field that is also a CLI flag (and a CHATLLM_ env variable)."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices})


@dataclass(frozen=True)
class Config:
    # --- model -----------------------------------------------------------------
    model_path: str | None = option(
        None, "HF hub id, local HF directory or .gguf file; default: built-in SmolLM2-135M-Instruct", "model"
    )
    model_type: str | None = option(
        None, "chat template family when the tokenizer has none (llama3, qwen, chatglm, ...)", "model"
    )
    model_name: str | None = option(None, "name clients see (OpenAI `model`); default from the path", "model")
    no_template: bool = option(False, "send the raw prompt: no chat template, system prompt or history", "model")
    system_prompt: str = option("", "default system prompt", "model")
    # --- engine ----------------------------------------------------------------
    backend: str = option(
        "auto",
        "engine: auto (vLLM when it works here), hf, vllm; 'none' means hf",
        "engine",
        choices=("auto", "hf", "vllm", "none"),
    )
    cpu: bool = option(False, "run on CPU even when a GPU is present", "engine")
    precision: str = option("auto", "weights/activations dtype", "engine", choices=("auto", "fp32", "fp16", "bf16"))
    kv_cache_space: float = option(1.0, "GiB of KV cache on CPU (hf engine and vLLM CPU)", "engine")
    max_batch_tokens: int = option(512, "hf engine: tokens per forward step (bounds activation memory)", "engine")
    num_threads: int = option(0, "CPU threads for torch (0 = all cores)", "engine")
    # --- vLLM ------------------------------------------------------------------
    tensor_parallel_size: int = option(1, "vLLM: GPUs to shard each layer over", "vllm")
    pipeline_parallel_size: int = option(1, "vLLM: pipeline stages (GPUs or nodes)", "vllm")
    gpu_memory_utilization: float = option(0.9, "vLLM: fraction of GPU memory to use", "vllm")
    max_model_len: int = option(0, "cap on context length (0 = model's)", "engine")
    max_num_seqs: int = option(256, "vLLM: max sequences per batch", "vllm")
    enforce_eager: bool | None = option(None, "vLLM: no compilation/CUDA graphs (default: on for CPU)", "vllm")
    enable_prefix_caching: bool = option(True, "vLLM: reuse KV of shared prefixes", "vllm")
    distributed_executor_backend: str | None = option(
        None, "vLLM: mp or ray (ray for multi-node)", "vllm", choices=("mp", "ray")
    )
    # --- server ----------------------------------------------------------------
    grpc_host: str = option("0.0.0.0", "address the gRPC server binds", "server")
    grpc_port: int = option(50051, "gRPC port (0 = pick a free one)", "server")
    metrics_port: int = option(
        -1,
        "port of the gRPC server's own /metrics (-1: 8001 for `server`, off for `serve` whose bridge /metrics "
        "shows the same registry; 0: off)",
        "server",
    )
    max_new_tokens: int = option(2048, "default max new tokens per request", "server")
    temperature: float = option(0.95, "default temperature (0 = deterministic)", "server")
    top_k: int | None = option(None, "default top_k (unset = model's generation config)", "server")
    top_p: float | None = option(None, "default top_p (unset = model's generation config)", "server")
    max_round: int = option(5, "history rounds that reach the model", "server")
    shutdown_grace: float = option(30.0, "seconds in-flight requests get to finish on SIGTERM", "server")
    # --- bridge ----------------------------------------------------------------
    host: str = option("0.0.0.0", "address the HTTP/WebSocket bridge binds", "bridge")
    port: int = option(8000, "HTTP/WebSocket port of the bridge", "bridge")
    upstream: str | None = option(
        None, "gRPC server the bridge talks to (host:port, dns:///name:port for round-robin)", "bridge"
    )
    api_only: bool = option(False, "no web page, API only", "bridge")
    no_api: bool = option(False, "web page only: legacy API routes off", "bridge")
    # --- knowledge base --------------------------------------------------------
    knowledge_base: bool = option(True, "enable the knowledge base (embedder + Milvus)", "kb")
    embedding_model: str | None = option(
        None, "sentence-transformers model name or path; default: bundled all-MiniLM-L6-v2", "kb"
    )
    milvus_uri: str | None = option(
        None, "Milvus: http://host:19530 for a server; default: milvus-lite under the data dir", "kb"
    )
    chunk_size: int = option(500, "characters per knowledge-base chunk", "kb")
    chunk_overlap: int = option(50, "characters shared by neighbouring chunks", "kb")
    retrieval_top_k: int = option(3, "chunks retrieved per question by default", "kb")
    parse_timeout: float = option(60.0, "seconds a PDF/DOCX may take to parse before it is refused", "kb")
    max_upload_bytes: int = option(50 * 1024 * 1024, "largest document accepted for ingest", "kb")
    kb_min_score: float = option(
        0.34, "fused relevance score (0-1) a chunk needs to be retrieved; 0 retrieves top-k whatever they are", "kb"
    )
    embedding_precision: str = option(
        "auto",
        "embedding model dtype: auto (bf16 on CPUs with native bf16, else fp32)",
        "kb",
        choices=("auto", "fp32", "bf16"),
    )
    kb_index_dir: str | None = option(
        None,
        "folder for the saved search indexes and the ingest journal; default: beside the milvus-lite "
        "database, or <data-dir>/kb/indexes for a Milvus server",
        "kb",
    )
    milvus_shards: int = option(1, "Milvus server: shards of each new knowledge-base collection", "kb")
    milvus_replicas: int = option(1, "Milvus server: in-memory replicas each collection is loaded with", "kb")
    hnsw_m: int = option(32, "HNSW index: links per node (milvus-lite: in-process FAISS; server: Milvus index)", "kb")
    hnsw_ef_construction: int = option(200, "HNSW index: candidate list size while building", "kb")
    hnsw_ef_search: int = option(128, "HNSW index: candidate list size per search (recall vs latency)", "kb")
    # --- history export --------------------------------------------------------
    export_history_path: str | None = option(
        None, "directory for JSONL conversation history (off when unset)", "history"
    )
    export_interval: int = option(3600, "seconds per history file before rotating", "history")
    # --- limits ----------------------------------------------------------------
    max_concurrent: int = option(64, "requests generating at once (0 = engine's limit)", "limits")
    max_queue: int = option(256, "requests waiting beyond max_concurrent before refusing", "limits")
    request_timeout: float = option(600.0, "seconds a request may take end to end (0 = none)", "limits")
    max_prompt_chars: int = option(100_000, "longest prompt + system prompt accepted", "limits")
    max_history_rounds: int = option(100, "most history rounds a request may carry", "limits")
    max_body_bytes: int = option(4 * 1024 * 1024, "bridge: largest JSON/text request body", "limits")
    ws_max_connections: int = option(1000, "bridge: concurrent WebSocket connections", "limits")
    ws_max_pending: int = option(8, "bridge: queued frames per WebSocket connection", "limits")
    # --- common ----------------------------------------------------------------
    token: str | None = option(None, "require `Authorization: <token>` (HTTP, WS, gRPC metadata)", "common")
    protect_metrics: bool = option(False, "require the token on /metrics too", "common")
    data_dir: str = option(
        platformdirs.user_data_dir("chatllm"),
        "folder for everything the stack writes (converted models, knowledge base, history)",
        "common",
    )
    log_level: str = option("INFO", "logging level", "common", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    # --- derived ---------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def models_dir(self) -> Path:
        """Converted model copies (GGUF -> safetensors) live here."""
        return self.data_path / "models"

    @property
    def kb_dir(self) -> Path:
        return self.data_path / "kb"

    @property
    def engine_backend(self) -> str:
        return "hf" if self.backend == "none" else self.backend

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _flag_names(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    underscored = "--" + name
    return [dashed] if dashed == underscored else [dashed, underscored]


def _base_type(annotation: Any) -> type:
    hint = typing.get_type_hints(Config)[annotation] if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.cast(type, hint)


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of `command`'s groups to parser (defaults come later, in from_args)."""
    groups = GROUPS_BY_COMMAND[command]
    hints = typing.get_type_hints(Config)
    by_group: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(Config):
        group = f.metadata["group"]
        if group not in groups:
            continue
        arg_group = by_group.setdefault(group, parser.add_argument_group(group))
        kind = _base_type(hints[f.name])
        help_text = f"{f.metadata['help']} [env {ENV_PREFIX}{f.name.upper()}; default {f.default!r}]"
        if kind is bool and f.name.startswith("no_"):
            # Seed-style negative switches (--no-template, --no-api): no "--no-no-" twin.
            arg_group.add_argument(
                *_flag_names(f.name), dest=f.name, action="store_const", const=True, default=None, help=help_text
            )
        elif kind is bool:
            arg_group.add_argument(
                *_flag_names(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            arg_group.add_argument(
                *_flag_names(f.name),
                dest=f.name,
                type=kind,
                default=None,
                choices=f.metadata["choices"],
                help=help_text,
            )


def from_args(args: argparse.Namespace | Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build the Config: CLI flag, else CHATLLM_<NAME> env variable, else default."""
    env = os.environ if env is None else env
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    hints = typing.get_type_hints(Config)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if given.get(f.name) is not None:
            values[f.name] = given[f.name]
            continue
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        kind = _base_type(hints[f.name])
        try:
            values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as exc:
            raise SystemExit(f"error: {ENV_PREFIX}{f.name.upper()}={raw!r}: {exc}") from None
        choices = f.metadata["choices"]
        if choices and values[f.name] not in choices:
            raise SystemExit(f"error: {ENV_PREFIX}{f.name.upper()} must be one of {', '.join(choices)}")
    config = Config(**values)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Reject impossible settings at start-up with one clear line."""
    problems = []
    if config.max_new_tokens < 1:
        problems.append("--max-new-tokens must be >= 1")
    if not 0 <= config.temperature <= 2:
        problems.append("--temperature must be between 0 and 2")
    if config.top_k is not None and config.top_k < 0:
        problems.append("--top_k must be >= 0")
    if config.top_p is not None and not 0 < config.top_p <= 1:
        problems.append("--top_p must be in (0, 1]")
    if config.max_round < 0:
        problems.append("--max_round must be >= 0")
    if config.api_only and config.no_api:
        problems.append("--api-only and --no-api exclude each other")
    if config.chunk_overlap >= config.chunk_size:
        problems.append("--chunk-overlap must be smaller than --chunk-size")
    if config.kv_cache_space <= 0:
        problems.append("--kv-cache-space must be > 0")
    if not 0 <= config.kb_min_score <= 1:
        problems.append("--kb-min-score must be between 0 and 1")
    if config.milvus_shards < 1 or config.milvus_replicas < 1:
        problems.append("--milvus-shards and --milvus-replicas must be >= 1")
    if config.hnsw_m < 2 or config.hnsw_ef_construction < 1 or config.hnsw_ef_search < 1:
        problems.append("--hnsw-m must be >= 2, --hnsw-ef-construction and --hnsw-ef-search >= 1")
    if config.export_interval < 1:
        problems.append("--export-interval must be >= 1 second")
    for name in ("max_concurrent", "max_queue"):
        if getattr(config, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
