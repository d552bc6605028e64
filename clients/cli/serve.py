"""`chatllm server` (the gRPC server alone), `chatllm serve` (server + bridge in one
process) and `chatllm bridge` (the HTTP/WebSocket bridge alone).

`serve` is where the two halves meet: the bridge and the server never import each other."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from chatllm.kernel.access import TokenFileError
from chatllm.kernel.config import Config
from chatllm.kernel.flags import add_config_arguments, from_args
from chatllm.kernel.tls import CertificateError

if TYPE_CHECKING:
    from chatllm.server.app import EngineFactory
    from chatllm.server.engines.base import Engine

DEFAULT_UPSTREAM = "localhost:50051"
log = logging.getLogger("chatllm.serve")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def register(subparsers: Any, engine: Engine | EngineFactory | None = None) -> None:
    """The serving commands; `server` and `serve` serve `engine` when given (default: the configured backend)."""
    for name, handler, help_text in (
        ("server", functools.partial(run_server, engine=engine), "run the gRPC server alone"),
        (
            "serve",
            functools.partial(run_serve, engine=engine),
            "run the gRPC server and the HTTP/WebSocket bridge in one process",
        ),
        ("bridge", run_bridge, "run the HTTP/WebSocket bridge alone, in front of --upstream"),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        add_config_arguments(parser, name)
        parser.set_defaults(handler=handler)


def _run(args: argparse.Namespace, main: Callable[[Config], Coroutine[Any, Any, None]]) -> int:
    """Build the config, log, run `main` until a signal; a start-up failure is one line and exit code 2."""
    from chatllm.server.errors import StartupError

    config = from_args(args)
    setup_logging(config.common.log_level)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(config.common.event_loop)) as runner:
            runner.run(main(config))
    except (StartupError, OSError, TokenFileError, CertificateError) as exc:
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
    return 0


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """--event-loop: uvloop's loop (None, asyncio's default, where uvloop is not installed or not asked for)."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("--event-loop uvloop: uvloop is not installed here; running on asyncio's loop")
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_server(args: argparse.Namespace, engine: Engine | EngineFactory | None = None) -> int:
    from chatllm.server.app import serve_until_signal

    return _run(args, lambda config: serve_until_signal(config, engine=engine))


def run_serve(args: argparse.Namespace, engine: Engine | EngineFactory | None = None) -> int:
    """gRPC server + bridge; /metrics of the bridge shows both (one registry), so the
    server's own metrics port stays off unless --metrics-port names one."""
    return _run(args, lambda config: serve_both_until_signal(config, engine))


def run_bridge(args: argparse.Namespace) -> int:
    from chatllm.bridge.routing.replicas import split_upstream
    from chatllm.bridge.runner import bridge_until_signal
    from chatllm.server.errors import StartupError

    async def bridge(config: Config) -> None:
        target = config.bridge.upstream or DEFAULT_UPSTREAM
        try:
            split_upstream(target)  # a bad --upstream is one line, not a traceback
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        await bridge_until_signal(config, target)

    return _run(args, bridge)


async def serve_both_until_signal(config: Config, engine: Engine | EngineFactory | None = None) -> None:
    """`chatllm serve`: gRPC server and bridge in this event loop. The bridge calls the server's Generate
    in process (chatllm.server.local_generate: the same handler and interceptors, no wire), and every other
    RPC, health included, over loopback gRPC, as a separate bridge would. StartupError propagates."""
    from chatllm.bridge.runner import BridgeServer, loopback_target, stop_event
    from chatllm.server.app import ChatLLMServer, running_engine

    stop = stop_event()
    # With TLS on the gRPC port, the bridge in this process uses a private Unix socket instead.
    server = ChatLLMServer(config, local_socket=config.security.tls_cert is not None, engine=engine or running_engine)
    async with contextlib.AsyncExitStack() as stack:
        await server.start()
        stack.push_async_callback(server.stop)
        target = server.local_target or loopback_target(config.server.grpc_host, server.port)
        bridge = BridgeServer(config, target, local_generate=server.local_generate)

        def reload_certificates() -> None:
            server.reload_certificates()
            bridge.reload_certificates()

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_certificates)
        await bridge.start()
        bridge_stopped = False
        try:
            if not await server.load_unless_stopped(stack, stop):
                return
            await stop.wait()
            log.info("shutdown requested: draining")
            # Both at once: the bridge's in-flight streams need the server while it drains.
            await asyncio.gather(server.drain(), bridge.stop())
            bridge_stopped = True
        finally:
            if not bridge_stopped:
                await bridge.stop()
