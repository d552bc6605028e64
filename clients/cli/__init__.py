"""The `chatllm` command: serve, server, bridge, chat, ingest, kb, models, info, usage.

The command line is the composition root: the only package that imports both the server and the
bridge (`serve`). Each group of subcommands lives in its own module with a `register(subparsers)`
function; this module only assembles them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatllm.clients.cli import chat, kb, serve, usage
from chatllm.kernel.tls import CertificateError

if TYPE_CHECKING:
    from chatllm.server.app import EngineFactory
    from chatllm.server.engines.base import Engine


def build_parser(engine: Engine | EngineFactory | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatllm", description="ChatLLM Serve: gRPC serving stack for chat LLMs")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(subparsers, engine)
    for module in (chat, kb, usage):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, engine: Engine | EngineFactory | None = None) -> int:
    """Run one command. `engine`: what `server` and `serve` serve instead of the configured backend
    (the seam tests/fake_chatllm.py uses to run the real processes over a scripted engine)."""
    args = build_parser(engine).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CertificateError as exc:  # a client's --tls-ca/--tls-cert/--tls-key file
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
