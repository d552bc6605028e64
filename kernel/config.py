"""The one configuration object, built once from CLI flags and `CHATLLM_*` env, in sections.

`Config` holds one frozen section per concern (model, engine, vllm, server, bridge, kb,
history, limits, security, state, common); each component is given only the sections it uses (the
bridge never sees the engine's). Every field's metadata describes its flag, so the parser, the
env lookup and the defaults cannot drift apart. Field names are unique across sections, so a flag
`--max-new-tokens` is field `max_new_tokens` of exactly one section. Each flag accepts both
spellings (`--max-new-tokens` and `--max_new_tokens`), as the PAI-EAS service did; the parser and the
start-up checks are in `chatllm.kernel.flags`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

ENV_PREFIX = "CHATLLM_"
COMMANDS = ("server", "serve", "bridge")
SERVER_COMMANDS = ("server", "serve")


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    commands: Sequence[str] = COMMANDS,
    command_defaults: Mapping[str, Any] | None = None,
    secret: bool = False,
) -> Any:
    """A config field that is also a CLI flag (and a CHATLLM_ env variable) of `commands`.

    `command_defaults` gives a command its own default (e.g. the server's metrics port is on for
    `chatllm server` but off for `chatllm serve`, whose bridge already shows the same metrics)."""
    metadata = {"help": help, "choices": choices, "commands": tuple(commands), "command_defaults": command_defaults}
    return field(default=default, metadata=metadata, repr=not secret)  # a secret never shows in a logged config


@dataclass(frozen=True)
class ModelConfig:
    model_path: str | None = option(
        None,
        "HF hub id, local HF directory or .gguf file; default: built-in SmolLM2-135M-Instruct",
        commands=SERVER_COMMANDS,
    )
    model_type: str | None = option(
        None, "chat template family when the tokenizer has none (llama3, qwen, chatglm, ...)", commands=SERVER_COMMANDS
    )
    served_model_name: str | None = option(
        None, "the base model's name (OpenAI `model`, gRPC `model`); default from the path", commands=SERVER_COMMANDS
    )
    lora_modules: tuple[str, ...] = option(
        (),
        "LoRA adapters to serve beside the base model, as NAME=PATH (PEFT directories; --backend vllm)",
        commands=SERVER_COMMANDS,
    )
    chat_template: str | None = option(
        None,
        "chat template to use instead of the tokenizer's: a Jinja file, or a family name (chatml-tools, qwen, ...)",
        commands=SERVER_COMMANDS,
    )
    tool_call_parser: str = option(
        "hermes",
        "vLLM tool parser that reads tool calls out of the model's text (hermes, llama3_json, mistral, qwen3_xml, "
        "...; none: refuse tools)",
        commands=SERVER_COMMANDS,
    )
    tool_strict_level: str = option(
        "parameter",
        "what the grammar enforces in tool calls: parameter (arguments valid against the tool's schema), function "
        "(the call's envelope), auto (vLLM's default: only tools marked strict)",
        choices=("auto", "function", "parameter"),
        commands=SERVER_COMMANDS,
    )
    no_template: bool = option(
        False, "send the raw prompt: no chat template, system prompt or history", commands=SERVER_COMMANDS
    )
    system_prompt: str = option("", "default system prompt", commands=SERVER_COMMANDS)


@dataclass(frozen=True)
class EngineConfig:
    backend: str = option(
        "auto",
        "engine: auto (vLLM when it works here), hf, vllm; 'none' means hf",
        choices=("auto", "hf", "vllm", "none"),
        commands=SERVER_COMMANDS,
    )
    cpu: bool = option(False, "run on CPU even when a GPU is present", commands=SERVER_COMMANDS)
    precision: str = option(
        "auto", "weights/activations dtype", choices=("auto", "fp32", "fp16", "bf16"), commands=SERVER_COMMANDS
    )
    kv_cache_space: float = option(1.0, "GiB of KV cache on CPU (hf engine and vLLM CPU)", commands=SERVER_COMMANDS)
    max_batch_tokens: int = option(
        512, "hf engine: tokens per forward step (bounds activation memory)", commands=SERVER_COMMANDS
    )
    num_threads: int = option(0, "CPU threads for torch (0 = all cores)", commands=SERVER_COMMANDS)
    max_model_len: int = option(0, "cap on context length (0 = model's)", commands=SERVER_COMMANDS)
    engine_start_log: str | None = option(
        None,
        "append a line (starting or ready, backend, model, process id) to this file as each engine starts and "
        "once it is ready (the test suite counts model start-ups with it)",
        commands=SERVER_COMMANDS,
    )

    @property
    def engine_backend(self) -> str:
        return "hf" if self.backend == "none" else self.backend


@dataclass(frozen=True)
class VLLMConfig:
    tensor_parallel_size: int = option(1, "vLLM: GPUs to shard each layer over", commands=SERVER_COMMANDS)
    pipeline_parallel_size: int = option(1, "vLLM: pipeline stages (GPUs or nodes)", commands=SERVER_COMMANDS)
    gpu_memory_utilization: float = option(0.9, "vLLM: fraction of GPU memory to use", commands=SERVER_COMMANDS)
    max_num_seqs: int = option(256, "vLLM: max sequences per batch", commands=SERVER_COMMANDS)
    enforce_eager: bool | None = option(
        None, "vLLM: no compilation/CUDA graphs (default: on for CPU)", commands=SERVER_COMMANDS
    )
    enable_prefix_caching: bool = option(True, "vLLM: reuse KV of shared prefixes", commands=SERVER_COMMANDS)
    json_whitespace: str = option(
        "compact",
        "vLLM: JSON answers (response_format, tool arguments) with no free whitespace (compact; xgrammar), or any "
        "whitespace (any; vLLM's grammar backend chosen per request)",
        choices=("compact", "any"),
        commands=SERVER_COMMANDS,
    )
    scheduling_policy: str = option(
        "priority",
        "vLLM: order of its own waiting queue and its preemption victims: priority (by each request's class, "
        "then arrival; see docs/operations.md) or fcfs",
        choices=("priority", "fcfs"),
        commands=SERVER_COMMANDS,
    )
    distributed_executor_backend: str | None = option(
        None, "vLLM: mp or ray (ray for multi-node)", choices=("mp", "ray"), commands=SERVER_COMMANDS
    )
    speculative: str = option(
        "off",
        "vLLM: speculative decoding preset: ngram (prompt lookup, for answers that quote their "
        "context, off above a few sequences per batch; docs/engines.md) or off",
        choices=("off", "ngram"),
        commands=SERVER_COMMANDS,
    )
    speculative_config: str | None = option(
        None,
        "vLLM: speculative decoding as vllm serve's --speculative-config JSON, passed to vLLM as it is (with "
        "--speculative ngram, its keys override the preset's)",
        commands=SERVER_COMMANDS,
    )


@dataclass(frozen=True)
class ServerConfig:
    grpc_host: str = option("0.0.0.0", "address the gRPC server binds", commands=SERVER_COMMANDS)
    grpc_port: int | None = option(
        50051,
        "gRPC port (0 = pick a free one); `chatllm bridge`: the port of its gRPC front door, which forwards "
        "chatllm.v1.ChatLLM to the replicas (off unless given; it binds --host)",
        commands=(*SERVER_COMMANDS, "bridge"),
        command_defaults={"bridge": None},
    )
    metrics_port: int = option(
        8001,
        "port of the gRPC server's own /metrics (0: off; `serve` defaults to off, its bridge's /metrics "
        "shows the same registry)",
        commands=SERVER_COMMANDS,
        command_defaults={"serve": 0},
    )
    max_new_tokens: int = option(2048, "default max new tokens per request", commands=SERVER_COMMANDS)
    temperature: float = option(0.95, "default temperature (0 = deterministic)", commands=SERVER_COMMANDS)
    top_k: int | None = option(None, "default top_k (unset = model's generation config)", commands=SERVER_COMMANDS)
    top_p: float | None = option(None, "default top_p (unset = model's generation config)", commands=SERVER_COMMANDS)


@dataclass(frozen=True)
class BridgeConfig:
    host: str = option("0.0.0.0", "address the HTTP/WebSocket bridge binds", commands=("serve", "bridge"))
    port: int = option(8000, "HTTP/WebSocket port of the bridge", commands=("serve", "bridge"))
    upstream: str | None = option(
        None,
        "gRPC server(s) the bridge talks to: host:port, host:port,host:port,... or dns:///name:port (one replica "
        "per address, re-resolved); each request goes to a replica whose readiness is SERVING, chosen by --routing "
        "(default localhost:50051)",
        commands=("bridge",),
    )
    routing: str = option(
        "prefix",
        "how the bridge picks a replica per request: prefix (the one that likely has the longest part of the "
        "prompt cached, unless the loads are imbalanced), round-robin, least-load (docs/operations.md)",
        choices=("prefix", "round-robin", "least-load"),
        commands=("bridge",),
    )
    routing_cache_threshold: float = option(
        0.3,
        "--routing prefix: share (0-1) of a request's prefix a replica must hold for the prefix to decide",
        commands=("bridge",),
    )
    routing_balance_abs: int = option(
        4,
        "--routing prefix: the loads are imbalanced (least-loaded replica wins) when the busiest replica has "
        "more than this many outstanding requests more than the idlest...",
        commands=("bridge",),
    )
    routing_balance_rel: float = option(1.5, "...and more than this many times as many", commands=("bridge",))
    legacy_stream: str = option(
        "cumulative",
        "legacy NUL/SSE streams: `response` is the whole answer so far (cumulative, the PAI-EAS clients) or the "
        "new text only (delta, LangChain's PAI-EAS classes); a request's `stream_mode` overrides it",
        choices=("cumulative", "delta"),
        commands=("serve", "bridge"),
    )
    api_only: bool = option(False, "no web page, API only", commands=("serve", "bridge"))
    no_api: bool = option(False, "web page only: legacy API routes off", commands=("serve", "bridge"))


@dataclass(frozen=True)
class KnowledgeConfig:
    knowledge_base: bool = option(True, "enable the knowledge base (embedder + Milvus)", commands=SERVER_COMMANDS)
    embedding_model: str | None = option(
        None, "sentence-transformers model name or path; default: bundled all-MiniLM-L6-v2", commands=SERVER_COMMANDS
    )
    milvus_uri: str | None = option(
        None,
        "Milvus: http://host:19530 for a server; default: milvus-lite under the data dir",
        commands=SERVER_COMMANDS,
    )
    chunk_size: int = option(500, "characters per knowledge-base chunk", commands=SERVER_COMMANDS)
    chunk_overlap: int = option(50, "characters shared by neighbouring chunks", commands=SERVER_COMMANDS)
    retrieval_top_k: int = option(3, "chunks retrieved per question by default", commands=SERVER_COMMANDS)
    parse_timeout: float = option(
        60.0, "seconds a PDF/DOCX may take to parse before it is refused", commands=SERVER_COMMANDS
    )
    kb_min_score: float = option(
        0.34,
        "fused relevance score (0-1) a chunk needs to be retrieved; 0 retrieves top-k whatever they are",
        commands=SERVER_COMMANDS,
    )
    embedding_precision: str = option(
        "auto",
        "embedding model dtype: auto (bf16 on CPUs with native bf16, else fp32)",
        choices=("auto", "fp32", "bf16"),
        commands=SERVER_COMMANDS,
    )
    embedding_question_runtime: str = option(
        "auto",
        "what embeds a question: auto (ONNX Runtime, one thread, on a CPU; else torch), onnx, torch",
        choices=("auto", "onnx", "torch"),
        commands=SERVER_COMMANDS,
    )
    kb_index_dir: str | None = option(
        None,
        "folder for the saved search indexes and the ingest journal; default: beside the milvus-lite "
        "database, or <data-dir>/kb/indexes for a Milvus server",
        commands=SERVER_COMMANDS,
    )
    milvus_shards: int = option(
        1, "Milvus server: shards of each new knowledge-base collection", commands=SERVER_COMMANDS
    )
    milvus_replicas: int = option(
        1, "Milvus server: in-memory replicas each collection is loaded with", commands=SERVER_COMMANDS
    )
    hnsw_m: int = option(
        32, "HNSW index: links per node (milvus-lite: in-process FAISS; server: Milvus index)", commands=SERVER_COMMANDS
    )
    hnsw_ef_construction: int = option(200, "HNSW index: candidate list size while building", commands=SERVER_COMMANDS)
    hnsw_ef_search: int = option(
        192, "HNSW index: candidate list size per search (recall vs latency)", commands=SERVER_COMMANDS
    )


@dataclass(frozen=True)
class HistoryConfig:
    """The conversation's history: what reaches the model, and the export of every exchange."""

    max_round: int = option(5, "history rounds that reach the model (and each WebSocket connection keeps)")
    max_round_trim: str = option(
        "exact",
        "how the history is cut to --max_round: exact (the last N rounds every turn) or stable (grow to 2N "
        "rounds, then cut back to N, so the prompt's prefix stays the same, and cached, for N turns)",
        choices=("exact", "stable"),
    )
    export_history_path: str | None = option(
        None, "directory for JSONL conversation history (off when unset)", commands=SERVER_COMMANDS
    )
    export_interval: int = option(3600, "seconds per history file before rotating", commands=SERVER_COMMANDS)


@dataclass(frozen=True)
class LimitsConfig:
    max_concurrent: int = option(64, "requests generating at once (0 = engine's limit)", commands=SERVER_COMMANDS)
    max_queue: int = option(256, "requests waiting beyond max_concurrent before refusing", commands=SERVER_COMMANDS)
    interactive_slots: int = option(
        4,
        "slots beyond --max-concurrent that only interactive requests may take, so a chat request starts at once "
        "even when bulk work fills the server",
        commands=SERVER_COMMANDS,
    )
    fair_share: bool = option(
        True,
        "serve waiting requests of one priority class in proportion per token name (virtual token counters, the "
        "VTC scheduler); --no-fair-share: in arrival order",
        commands=SERVER_COMMANDS,
    )
    priority_aging: float = option(
        30.0,
        "seconds of waiting that raise a queued request one priority class (bulk -> default -> interactive), so "
        "no class starves; 0: never",
        commands=SERVER_COMMANDS,
    )
    request_timeout: float = option(600.0, "seconds a request may take end to end (0 = none)")
    shutdown_grace: float = option(30.0, "seconds in-flight requests get to finish on SIGTERM")
    max_prompt_chars: int = option(100_000, "longest prompt + system prompt accepted", commands=SERVER_COMMANDS)
    max_history_rounds: int = option(100, "most history rounds a request may carry", commands=SERVER_COMMANDS)
    max_body_bytes: int = option(
        4 * 1024 * 1024, "bridge: largest JSON/text request body", commands=("serve", "bridge")
    )
    ws_max_connections: int = option(1000, "bridge: concurrent WebSocket connections", commands=("serve", "bridge"))
    ws_max_pending: int = option(8, "bridge: queued frames per WebSocket connection", commands=("serve", "bridge"))
    max_upload_bytes: int = option(50 * 1024 * 1024, "largest document accepted for ingest")


@dataclass(frozen=True)
class SecurityConfig:
    token: str | None = option(None, "require `Authorization: <token>` (HTTP, WS, gRPC metadata)", secret=True)
    token_file: str | None = option(
        None,
        "named tokens, one `name:token` (or `name:token:rpm=N,streams=N`) a line; re-read when it changes "
        "(docs/security.md)",
    )
    protect_metrics: bool = option(False, "require the token on /metrics too")
    eas_clock_skew: float = option(
        900.0,
        "seconds an EAS-signed request's Date may differ from the bridge's local clock (the SDK signs local time)",
        commands=("serve", "bridge"),
    )
    tls_cert: str | None = option(
        None, "PEM certificate (chain) of this process: gRPC over TLS, HTTPS/wss on the bridge; re-read on SIGHUP"
    )
    tls_key: str | None = option(None, "PEM private key of --tls-cert")
    tls_client_ca: str | None = option(
        None, "PEM CA certificate(s): require client certificates they signed (mutual TLS) on gRPC and HTTPS"
    )
    tls_ca: str | None = option(
        None,
        "bridge: PEM CA certificate(s) that signed the upstream servers' certificates; the bridge then "
        "connects to --upstream over TLS",
        commands=("bridge",),
    )
    upstream_tls_cert: str | None = option(
        None,
        "bridge: client certificate it shows the upstream servers (for servers with --tls-client-ca)",
        commands=("bridge",),
    )
    upstream_tls_key: str | None = option(None, "bridge: private key of --upstream-tls-cert", commands=("bridge",))
    cors_origins: tuple[str, ...] = option(
        (),
        "origins (scheme://host[:port], or *) whose web pages may call the HTTP API and open WebSockets; "
        "the bridge's own page always may",
        commands=("serve", "bridge"),
    )


@dataclass(frozen=True)
class StateConfig:
    """Where what a fleet shares lives: per-token limits and usage, priorities and fair share, stored responses."""

    state_store: str = option(
        "embedded",
        "the fleet's shared state: embedded (in-process counters, a SQLite file under the data dir) or "
        "redis://host:port/db (every replica and bridge pointing at one Redis enforce one limit)",
    )
    state_store_failure: str = option(
        "open",
        "when the state store cannot be reached: open (count limits in this process instead, log once a minute, "
        "count the failures on /metrics) or closed (refuse the requests of tokens with limits with 503 until it "
        "is back); usage waits in memory either way",
        choices=("open", "closed"),
    )
    responses_ttl: float = option(
        30 * 24 * 3600.0,
        "seconds a stored /v1/responses response (and its chain) is kept; OpenAI keeps them 30 days",
        commands=("serve", "bridge"),
    )
    responses_max_bytes: int = option(
        1024**3,
        "size cap of the stored /v1/responses responses; beyond it the least recently used are evicted",
        commands=("serve", "bridge"),
    )


@dataclass(frozen=True)
class CommonConfig:
    data_dir: str = option(
        platformdirs.user_data_dir("chatllm"),
        "folder for everything the stack writes (converted models, knowledge base, history, the embedded state store)",
    )
    log_level: str = option("INFO", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    event_loop: str = option(
        "uvloop",
        "the event loop every process runs on: uvloop (what vLLM's own servers run on: less CPU per token) or "
        "asyncio (Python's own); uvloop falls back to asyncio where it is not installed",
        choices=("uvloop", "asyncio"),
    )

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


@dataclass(frozen=True)
class Config:
    """All sections. Build with `from_args` (CLI) or `Config.build(**fields)` (code, tests)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    kb: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    state: StateConfig = field(default_factory=StateConfig)
    common: CommonConfig = field(default_factory=CommonConfig)

    @classmethod
    def build(cls, **values: Any) -> Config:
        """A Config from field names (`Config.build(max_round=2, token="t")`); unknown names are a TypeError."""
        return cls().replace(**values)

    def replace(self, **values: Any) -> Config:
        """A copy with the named fields changed, whatever section each lives in."""
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            section = SECTION_OF.get(name)
            if section is None:
                raise TypeError(f"no config field named {name!r}")
            by_section.setdefault(section, {})[name] = value
        changes = {s: dataclasses.replace(getattr(self, s), **v) for s, v in by_section.items()}
        return dataclasses.replace(self, **changes)


def _sections() -> Iterator[tuple[str, type]]:
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        yield f.name, hints[f.name]


def option_fields() -> Iterator[tuple[str, dataclasses.Field[Any], type]]:
    """(section, field, base type) for every option, in declaration order."""
    for section, cls in _sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield section, f, _base_type(hints[f.name])


def _base_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.cast(type, typing.get_origin(hint) or hint)  # tuple[str, ...] -> tuple


SECTION_OF: dict[str, str] = {f.name: section for section, f, _ in option_fields()}
