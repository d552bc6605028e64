"""The `chatllm` command: serve, server, bridge, chat, ingest, kb, models, info, usage.

The command line is the composition root: the only package that imports both the server and the
bridge (`serve`). Each group of subcommands lives in its own module with a `register(subparsers)`
function; this module only assembles them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chatllm.clients.cli import chat, kb, serve, usage
from chatllm.kernel.tls import CertificateError

COMMAND_MODULES = [serve, chat, kb, usage]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatllm", description="ChatLLM Serve: gRPC serving stack for chat LLMs")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CertificateError as exc:  # a client's --tls-ca/--tls-cert/--tls-key file
        print(f"chatllm: error: {exc}", file=sys.stderr)
        return 2
