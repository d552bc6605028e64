"""`chatllm server` (the gRPC server alone), `chatllm serve` (server + bridge in one
process) and `chatllm bridge` (the HTTP/WebSocket bridge alone)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from chatllm.server.config import Config, add_config_arguments, from_args
from chatllm.server.errors import StartupError

DEFAULT_SERVER_METRICS_PORT = 8001
DEFAULT_UPSTREAM = "localhost:50051"


def register(subparsers: Any) -> None:
    server = subparsers.add_parser("server", help="run the gRPC server alone")
    add_config_arguments(server, "server")
    server.set_defaults(handler=run_server)

    serve = subparsers.add_parser("serve", help="run the gRPC server and the HTTP/WebSocket bridge in one process")
    add_config_arguments(serve, "serve")
    serve.set_defaults(handler=run_serve)

    bridge = subparsers.add_parser("bridge", help="run the HTTP/WebSocket bridge alone, in front of --upstream")
    add_config_arguments(bridge, "bridge")
    # Server-group options the bridge also uses: the WebSocket history bound and the drain time.
    bridge.add_argument(
        "--max-round",
        "--max_round",
        dest="max_round",
        type=int,
        default=None,
        help="history rounds each WebSocket connection keeps [env CHATLLM_MAX_ROUND; default 5]",
    )
    bridge.add_argument(
        "--shutdown-grace",
        dest="shutdown_grace",
        type=float,
        default=None,
        help="seconds in-flight streams get on SIGTERM [env CHATLLM_SHUTDOWN_GRACE; default 30]",
    )
    bridge.set_defaults(handler=run_bridge)


def with_metrics_port(config: Config, default_port: int) -> Config:
    """--metrics-port -1 means this command's default (0 = off)."""
    return config.replace(metrics_port=default_port) if config.metrics_port == -1 else config


def run_server(args: argparse.Namespace) -> int:
    from chatllm.clients.cli import setup_logging
    from chatllm.server.app import serve_until_signal

    config = with_metrics_port(from_args(args), DEFAULT_SERVER_METRICS_PORT)
    setup_logging(config.log_level)
    try:
        asyncio.run(serve_until_signal(config))
    except StartupError as exc:
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """gRPC server + bridge; /metrics of the bridge shows both (one registry), so the
    server's own metrics port stays off unless --metrics-port names one."""
    from chatllm.bridge.runner import serve_until_signal
    from chatllm.clients.cli import setup_logging

    config = with_metrics_port(from_args(args), default_port=0)
    setup_logging(config.log_level)
    try:
        asyncio.run(serve_until_signal(config))
    except (StartupError, OSError) as exc:
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_bridge(args: argparse.Namespace) -> int:
    from chatllm.bridge.channel import channel_target
    from chatllm.bridge.runner import bridge_until_signal
    from chatllm.clients.cli import setup_logging

    config = from_args(args)
    setup_logging(config.log_level)
    try:
        channel_target(config.upstream or DEFAULT_UPSTREAM)  # a bad --upstream is one line, not a traceback
        asyncio.run(bridge_until_signal(config, config.upstream or DEFAULT_UPSTREAM))
    except (OSError, ValueError) as exc:
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
    return 0
