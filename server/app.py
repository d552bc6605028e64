"""The gRPC server's life: bind, report NOT_SERVING, load the model, SERVING, drain, stop.

Start-up is explicit and ordered: the port is bound and health answers before
the (slow) model load, so probes see "alive but not ready". On SIGTERM the
server flips readiness to NOT_SERVING, refuses new work, lets in-flight streams
finish within --shutdown-grace, then stops. On SIGHUP it re-reads its TLS
certificates: new connections get the new ones, open connections go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from chatllm.kernel.access import TokenFileError, TokenRegistry
from chatllm.kernel.config import Config
from chatllm.kernel.state.connection import StateStore, open_state_store, parse_state_store
from chatllm.kernel.state.fair_share import FairShareCounters
from chatllm.kernel.state.limits import TokenLimiter
from chatllm.kernel.state.usage import UsageLedger
from chatllm.kernel.tls import CertificateError, GrpcCertificates, HttpsContext
from chatllm.proto import SERVICE_NAME, pb, pb_grpc
from chatllm.server import metrics
from chatllm.server.admission import Admission
from chatllm.server.chat import Chat
from chatllm.server.embeddings import EmbeddingService
from chatllm.server.engines import running_engine
from chatllm.server.engines.base import Engine
from chatllm.server.errors import StartupError
from chatllm.server.generation import GenerateService
from chatllm.server.interceptors import server_interceptors
from chatllm.server.local_generate import LocalGenerate
from chatllm.server.metrics_http import MetricsEndpoint
from chatllm.server.model_source import ModelSource, resolve
from chatllm.server.models import ServedModels
from chatllm.server.servicer import ChatLLMServicer, ServerState, server_info
from chatllm.server.tokenization import TokenizationService
from chatllm.server.tools import ToolCalling
from chatllm.server.usage import UsageRecorder

log = logging.getLogger(__name__)

# What starts the engine for a model: `running_engine` (the --backend flag's choice) unless a caller passes its own.
EngineFactory = Callable[[Config, ModelSource], contextlib.AbstractAsyncContextManager[Engine]]

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Clients resolve `dns:///` names again only when a connection ends: ageing connections out
    # (GOAWAY, in-flight streams get the grace) lets round-robin clients find new replicas.
    ("grpc.max_connection_age_ms", 5 * 60_000),
    ("grpc.max_connection_age_grace_ms", 15 * 60_000),
]


def served_models(source: ModelSource, engine: Engine, template_source: str) -> ServedModels:
    """The base model and the engine's adapters, as ListModels describes them."""
    info = engine.info
    now = time.time()
    base = pb.ModelInfo(
        id=source.name,
        model_path=source.given or f"builtin:{source.path.name}",
        backend=info.backend,
        device=info.device,
        dtype=info.dtype,
        context_length=info.context_length,
        chat_template=template_source,
        tensor_parallel_size=info.tensor_parallel_size,
        pipeline_parallel_size=info.pipeline_parallel_size,
        created_unix=now,
    )
    adapters = []
    for adapter in engine.adapters:
        card = pb.ModelInfo()
        card.CopyFrom(base)
        card.id, card.model_path, card.parent, card.created_unix = adapter.name, adapter.path, base.id, adapter.loaded
        adapters.append(card)
    return ServedModels(base, adapters)


def package_version() -> str:
    try:
        return importlib.metadata.version("chatllm-serve")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class ChatLLMServer:
    """One gRPC server. `running()` for in-process use; `serve_until_signal()` for the CLI.

    With `local_socket` it also listens on a Unix socket in a private folder (`local_target`), for
    a bridge in the same process (`chatllm serve`) when the TCP port speaks TLS.

    `engine` is the seam between serving and the model: a factory that starts an engine for the
    resolved model (default: the backend the config chooses), or an engine object that is already
    running (the fast tests pass tests/fake_engine.py's; then no model is resolved or loaded, and
    the base model is served as --served-model-name). `store`: a state store opened by the caller
    (`chatllm serve` shares one with its bridge); by default the server opens --state-store itself."""

    def __init__(
        self,
        config: Config,
        *,
        local_socket: bool = False,
        engine: Engine | EngineFactory = running_engine,
        store: StateStore | None = None,
    ) -> None:
        self.config = config
        self._engine = engine
        self._given_store = store
        security = config.security
        try:
            self.access = TokenRegistry(security.token, security.token_file)
            self.certificates, metrics_tls = None, None
            if security.tls_cert and security.tls_key:
                self.certificates = GrpcCertificates(security.tls_cert, security.tls_key, security.tls_client_ca)
                metrics_tls = HttpsContext(security.tls_cert, security.tls_key, security.tls_client_ca)
        except (TokenFileError, CertificateError) as exc:
            raise StartupError(str(exc)) from None
        try:
            parse_state_store(config.state.state_store)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self.serving = False  # readiness (chatllm.v1.ChatLLM) is SERVING
        self.state = ServerState(
            Admission(
                config.limits.max_concurrent,
                config.limits.max_queue,
                aging=config.limits.priority_aging,
                interactive_slots=config.limits.interactive_slots,
                fair_share=config.limits.fair_share,
            ),
            self.access.required,
            package_version(),
        )
        self.state.access = self.access
        self.health = health_aio.HealthServicer()
        interceptors = server_interceptors(self.access)
        self._server = grpc.aio.server(interceptors=interceptors, options=GRPC_OPTIONS)
        servicer = ChatLLMServicer(self.state)
        pb_grpc.add_ChatLLMServicer_to_server(servicer, self._server)
        # For a bridge in this process (`chatllm serve`): Generate without the wire, same handler and interceptors.
        self.local_generate = LocalGenerate(servicer, interceptors)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = (
            pb.DESCRIPTOR.services_by_name["ChatLLM"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, self._server)
        self.port = 0
        self._local_socket = local_socket
        self._socket_dir: str | None = None
        self.local_target: str | None = None
        # Requests only wait when concurrency is limited; the queue alert divides by this.
        metrics.QUEUE_LIMIT.set(config.limits.max_queue if config.limits.max_concurrent > 0 else 0)
        self.metrics: MetricsEndpoint | None = None
        if config.server.metrics_port > 0:
            self.metrics = MetricsEndpoint(
                security,
                config.server.grpc_host,
                config.server.metrics_port,
                metrics_tls,
                self.access,
                lambda: (self.serving, server_info(self.state)),
            )

    @property
    def transport(self) -> str:
        if self.certificates is None:
            return "plaintext"
        return "mutual TLS" if self.certificates.mutual else "TLS"

    def _bind(self) -> None:
        address = f"{self.config.server.grpc_host}:{self.config.server.grpc_port}"
        try:
            if self.certificates is not None:
                self.port = self._server.add_secure_port(address, self.certificates.credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {address}: {exc}") from None
        if self.port == 0:
            raise StartupError(f"cannot listen on {address} (port in use?)")
        if self._local_socket:
            # Only this user can open the folder; gRPC's local credentials accept Unix-socket peers only.
            self._socket_dir = tempfile.mkdtemp(prefix="chatllm-grpc-")
            self.local_target = f"unix:{self._socket_dir}/grpc.sock"
            local = grpc.local_server_credentials(grpc.LocalConnectionType.UDS)
            self._server.add_secure_port(self.local_target, local)

    async def start(self) -> None:
        """Bind and start answering (liveness SERVING, readiness NOT_SERVING)."""
        self._bind()
        await self._server.start()
        if self.metrics is not None:
            await self.metrics.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        metrics.READY.set(0)
        self.serving = False
        log.info(
            "gRPC listening on %s:%d, %s (loading the model)", self.config.server.grpc_host, self.port, self.transport
        )

    def reload_certificates(self) -> None:
        """SIGHUP: read the TLS files again; a bad file is logged and the current certificates stay."""
        parts = [("gRPC", self.certificates), ("metrics", self.metrics.tls if self.metrics else None)]
        for name, part in parts:
            if part is None:
                continue
            try:
                part.reload()
            except CertificateError as exc:
                log.error("%s TLS: kept the current certificate: %s", name, exc)
            else:
                log.info("%s TLS: certificates re-read", name)

    async def load(self, stack: contextlib.AsyncExitStack) -> None:
        """Load model, knowledge base and history export; then report SERVING."""
        config = self.config
        model = config.model
        await self._open_state(stack)
        source, engine = await self._start_engine(stack)
        chat = self._chat(engine)
        tool_calling = None
        if model.tool_call_parser != "none":
            # In a thread: the parsers are vLLM's, and importing vLLM takes seconds the probes must not wait.
            parser, strict = model.tool_call_parser, model.tool_strict_level
            tool_calling = await asyncio.to_thread(ToolCalling, parser, strict, engine.tokenizer)
        retriever = history = None
        if config.kb.knowledge_base:
            from chatllm.server.knowledge import KnowledgeService

            knowledge = KnowledgeService.running(config.kb, config.common.kb_dir, config.limits.max_upload_bytes)
            retriever = await stack.enter_async_context(knowledge)
        if config.history.export_history_path:
            from chatllm.server.history import HistoryExporter

            history = await stack.enter_async_context(HistoryExporter.running(config.history))
        models = served_models(source, engine, chat.template_source)
        info = engine.info
        self.state.models = models
        metrics.MODEL_INFO.labels(source.name, info.backend, info.device, info.dtype).set(1)
        metrics.ENGINES.sources.append(engine.stats)
        stack.callback(metrics.ENGINES.sources.remove, engine.stats)
        self.state.knowledge = retriever
        if retriever is not None:
            self.state.embeddings = EmbeddingService(retriever.library.embedder)
        self.state.tokens = TokenizationService(chat, models, config.limits)
        self.state.engine = engine
        self.state.generate = GenerateService(
            config.server,
            config.limits,
            config.kb,
            engine,
            chat,
            self.state.admission,
            models,
            tool_calling,
            retriever,
            history,
        )
        stack.push_async_callback(self._watch_engine(engine))
        if not isinstance(self._engine, Engine):
            freeze_startup_heap()
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        metrics.READY.set(1)
        self.serving = True
        log.info("ready: %s via %s on %s/%s", ", ".join(models.names), info.backend, info.device, info.dtype)

    async def _start_engine(self, stack: contextlib.AsyncExitStack) -> tuple[ModelSource, Engine]:
        """The model and its engine: resolved and started (stopped by `stack`), or the engine passed in."""
        model = self.config.model
        if isinstance(self._engine, Engine):
            name = model.served_model_name or "model"
            given = model.model_path or f"engine:{self._engine.info.backend}"
            return ModelSource(name, Path(name), given), self._engine
        models_dir = self.config.common.models_dir
        source = await asyncio.to_thread(resolve, model.model_path, models_dir, model.served_model_name)
        return source, await stack.enter_async_context(self._engine(self.config, source))

    async def _open_state(self, stack: contextlib.AsyncExitStack) -> None:
        """The state store and what admission keeps in it: limits, fair-share counters, usage."""
        store = self._given_store
        if store is None:
            store = await stack.enter_async_context(open_state_store(self.config.state, self.config.common.data_path))
        admission = self.state.admission
        admission.limiter = await stack.enter_async_context(TokenLimiter(store).running())
        admission.fair = await stack.enter_async_context(FairShareCounters(store).running())
        ledger = await stack.enter_async_context(UsageLedger(store).running())
        admission.usage = UsageRecorder(ledger)
        self.state.usage = ledger

    def _chat(self, engine: Engine) -> Chat:
        model = self.config.model
        try:
            return Chat(
                engine.tokenizer,
                engine.info.context_length,
                max_round=self.config.history.max_round,
                max_round_trim=self.config.history.max_round_trim,
                default_system_prompt=model.system_prompt,
                no_template=model.no_template,
                model_type=model.model_type,
                chat_template=model.chat_template,
            )
        except ValueError as exc:
            raise StartupError(str(exc)) from None

    def _watch_engine(self, engine: Engine) -> Callable[[], Awaitable[None]]:
        """Flip readiness when the engine dies; returns the stopper for the exit stack."""

        async def watch() -> None:
            while True:
                await asyncio.sleep(1.0)
                try:
                    await engine.check_health()
                except Exception as exc:
                    # Liveness too: a dead engine does not come back, so let the orchestrator restart us.
                    log.error("engine is dead: %s; readiness and liveness NOT_SERVING", exc)
                    await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
                    await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
                    metrics.READY.set(0)
                    self.serving = False
                    return

        task = asyncio.create_task(watch())

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return stop

    async def drain(self, grace: float | None = None) -> None:
        """Refuse new work, report NOT_SERVING, give in-flight requests `grace` seconds."""
        grace = self.config.limits.shutdown_grace if grace is None else grace
        self.state.admission.draining = True
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        metrics.READY.set(0)
        self.serving = False
        idle = await self.state.admission.wait_idle(grace)
        log.info("drained: %s", "all requests finished" if idle else f"grace of {grace:g}s over, cancelling the rest")

    async def stop(self) -> None:
        await self._server.stop(grace=1.0)
        self.local_generate.cancel_all()  # as the gRPC server's stop just did to its calls
        if self.metrics is not None:
            await self.metrics.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def load_unless_stopped(self, stack: contextlib.AsyncExitStack, stop: asyncio.Event) -> bool:
        """Load the model, unless `stop` is set first (then cancel the load: False).
        StartupError and friends propagate."""
        load = asyncio.create_task(self.load(stack))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({load, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not load.done():
            log.info("stop requested while loading")
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
            return False
        load.result()
        return True

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, config: Config, engine: Engine | EngineFactory = running_engine
    ) -> AsyncIterator[ChatLLMServer]:
        """Started and loaded on entry; drained and stopped on exit."""
        server = cls(config, engine=engine)
        async with contextlib.AsyncExitStack() as stack:
            await server.start()
            stack.push_async_callback(server.stop)
            await server.load(stack)
            try:
                yield server
            finally:
                await server.drain()


async def serve_until_signal(
    config: Config, on_ready: asyncio.Event | None = None, engine: Engine | EngineFactory | None = None
) -> None:
    """Run until SIGTERM/SIGINT, then drain and stop. StartupError propagates."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = ChatLLMServer(config, engine=engine or running_engine)
    loop.add_signal_handler(signal.SIGHUP, server.reload_certificates)
    async with contextlib.AsyncExitStack() as stack:
        await server.start()
        stack.push_async_callback(server.stop)
        if not await server.load_unless_stopped(stack, stop):
            return
        if on_ready is not None:
            on_ready.set()
        await stop.wait()
        log.info("shutdown requested: draining")
        await server.drain()


def freeze_startup_heap() -> None:
    """Move everything loaded so far into the permanent generation, out of the collector's way.

    After start-up the heap holds millions of long-lived objects (torch, vLLM, transformers,
    the tokenizer, pymilvus). Every full collection walks them all again, and the per-token
    garbage of a busy stream triggers full collections often: profiled at 32 concurrent
    streams, they took about a quarter of the serving thread. vLLM's own API server freezes
    its start-up heap for the same reason. Objects made after this point are collected as usual.
    """
    gc.collect()
    gc.freeze()
    log.debug("froze %d start-up objects out of the garbage collector's reach", gc.get_freeze_count())
