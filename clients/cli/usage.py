"""`chatllm usage`: tokens used per token name and model, from the fleet's state store (an admin token)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from chatllm.clients.cli.chat import add_target_arguments, fail, open_client
from chatllm.proto import pb

COUNTS = ("requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens")
HEADINGS = ("REQUESTS", "PROMPT", "CACHED", "COMPLETION", "TOTAL")


def register(subparsers: Any) -> None:
    usage = subparsers.add_parser(
        "usage", help="tokens used per token name and model (needs a token marked `admin` in the token file)"
    )
    usage.add_argument("--start", default="", help="first UTC day, YYYY-MM-DD (default: the first recorded)")
    usage.add_argument("--end", default="", help="last UTC day, YYYY-MM-DD (default: today)")
    usage.add_argument("--of", default="", metavar="NAME", help="only this token name's usage")
    usage.add_argument("--by-day", action="store_true", help="a row per day instead of totals over the days")
    usage.add_argument("--json", action="store_true", help="the records as JSON lines")
    add_target_arguments(usage)
    usage.set_defaults(handler=run_usage)


def run_usage(args: argparse.Namespace) -> int:
    with open_client(args, args.timeout or 30) as client:
        try:
            reply = client.usage(args.start, args.end, args.of)
        except grpc.RpcError as exc:
            return fail(exc)
    if args.json:
        for record in reply.records:
            print(
                json.dumps(
                    MessageToDict(record, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
                )
            )
        return 0
    rows = list(reply.records) if args.by_day else totals(reply.records)
    print(table(rows, args.by_day), end="")
    print(f"(from the state store: {reply.state_store})", file=sys.stderr)
    return 0


def totals(records: Iterable[pb.UsageRecord]) -> list[pb.UsageRecord]:
    """The records summed over their days, one per (token, model)."""
    summed: dict[tuple[str, str], pb.UsageRecord] = {}
    for record in records:
        row = summed.setdefault((record.token, record.model), pb.UsageRecord(token=record.token, model=record.model))
        for name in COUNTS:
            setattr(row, name, getattr(row, name) + getattr(record, name))
    return [summed[key] for key in sorted(summed)]


def table(rows: list[pb.UsageRecord], by_day: bool) -> str:
    lines = [(("DAY",) if by_day else ()) + ("TOKEN", "MODEL", *HEADINGS)]
    for r in rows:
        counts = [str(getattr(r, name)) for name in COUNTS] + [str(r.prompt_tokens + r.completion_tokens)]
        lines.append(((r.day,) if by_day else ()) + (r.token, r.model, *counts))
    if len(lines) == 1:
        return "no usage recorded\n"
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text_columns = 3 if by_day else 2
    out = []
    for line in lines:
        cells = [
            c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"
