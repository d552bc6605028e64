"""`chatllm server`: the gRPC server alone."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from chatllm.server.config import Config, add_config_arguments, from_args
from chatllm.server.errors import StartupError

DEFAULT_SERVER_METRICS_PORT = 8001


def register(subparsers: Any) -> None:
    server = subparsers.add_parser("server", help="run the gRPC server alone")
    add_config_arguments(server, "server")
    server.set_defaults(handler=run_server)


def start_metrics_http(config: Config, default_port: int) -> None:
    """Serve this process's Prometheus registry on its own port (-1 = default_port, 0 = off)."""
    port = default_port if config.metrics_port == -1 else config.metrics_port
    if port <= 0:
        return
    from prometheus_client import start_http_server

    start_http_server(port, addr=config.grpc_host)


def run_server(args: argparse.Namespace) -> int:
    from chatllm.clients.cli import setup_logging
    from chatllm.server.app import serve_until_signal

    config = from_args(args)
    setup_logging(config.log_level)
    try:
        start_metrics_http(config, DEFAULT_SERVER_METRICS_PORT)
        asyncio.run(serve_until_signal(config))
    except StartupError as exc:
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
    return 0
