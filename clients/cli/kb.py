"""`chatllm ingest PATH...` and `chatllm kb list|docs|delete`: the knowledge base through gRPC.

The server owns the vector store (a milvus-lite file allows one process), so the
CLI never opens it: everything goes through the Ingest/ListDocuments/... RPCs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from chatllm.clients.cli.chat import add_target_arguments, fail, open_client
from chatllm.clients.wire import INGEST_CHUNK_BYTES
from chatllm.proto import pb

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".docx", ".pdf")


def register(subparsers: Any) -> None:
    ingest = subparsers.add_parser("ingest", help="add files (or folders of them) to a knowledge base")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help=".txt .md .docx .pdf files, or folders")
    ingest.add_argument("--kb", default="default", help="knowledge base name [default: default]")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    add_target_arguments(ingest)
    ingest.set_defaults(handler=run_ingest)

    kb = subparsers.add_parser("kb", help="list and delete knowledge bases and their documents")
    actions = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="knowledge bases, or the documents of one with --kb")
    listing.add_argument("--kb", default=None, help="list this knowledge base's documents")
    add_target_arguments(listing)
    listing.set_defaults(handler=run_kb_list)
    delete = actions.add_parser("delete", help="delete a document (by id) or a whole knowledge base")
    delete.add_argument("--kb", default="default", help="knowledge base name [default: default]")
    delete.add_argument("document_id", nargs="?", help="document id; omit it with --all to delete the whole KB")
    delete.add_argument("--all", action="store_true", help="delete the whole knowledge base")
    add_target_arguments(delete)
    delete.set_defaults(handler=run_kb_delete)


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders walked recursively for supported files."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            files.append(path)
    return files


def upload_messages(path: Path, knowledge_base: str, progress: tqdm) -> Iterator[pb.IngestRequest]:
    """Header, then the file in 1 MiB messages; advances the byte bar as gRPC pulls them."""
    yield pb.IngestRequest(header=pb.IngestHeader(knowledge_base=knowledge_base, filename=path.name))
    with path.open("rb") as file:
        while block := file.read(INGEST_CHUNK_BYTES):
            yield pb.IngestRequest(chunk=block)
            progress.update(len(block))


def run_ingest(args: argparse.Namespace) -> int:
    files = expand_paths(args.paths)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"chatllm: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    total_bytes = sum(f.stat().st_size for f in files)
    failures = chunks = 0
    with open_client(args, args.timeout) as client:
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="ingest", disable=args.quiet, file=sys.stderr)
        with bar:
            for number, path in enumerate(files, 1):
                bar.set_description(f"[{number}/{len(files)}] {path.name}")
                try:
                    response = client.ingest_messages(upload_messages(path, args.kb, bar))
                except grpc.RpcError as exc:
                    failures += 1
                    message = f"{path}: {exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
                    bar.write(message, file=sys.stderr)
                    continue
                chunks += response.chunks
                bar.set_postfix(chunks=chunks)
                bar.write(describe(path, response), file=sys.stdout)
    print(f"{len(files) - failures} of {len(files)} files in knowledge base {args.kb!r}, {chunks} chunks")
    return 1 if failures else 0


def describe(path: Path, response: pb.IngestResponse) -> str:
    state = "unchanged" if response.unchanged else f"{response.chunks} chunks"
    replaced = f", replaced {', '.join(i[:12] for i in response.replaced_document_ids)}" * bool(
        response.replaced_document_ids
    )
    return f"{path}: {response.document_id[:12]} {state}{replaced}"


def run_kb_list(args: argparse.Namespace) -> int:
    with open_client(args, args.timeout or 30) as client:
        try:
            rows: list[tuple[str, ...]]
            if args.kb is None:
                rows = [("NAME", "DOCUMENTS", "CHUNKS")]
                rows += [(k.name, str(k.documents), str(k.chunks)) for k in client.list_knowledge_bases()]
            else:
                rows = [("ID", "CHUNKS", "BYTES", "FILENAME")]
                rows += [(d.id, str(d.chunks), str(d.size_bytes), d.filename) for d in client.list_documents(args.kb)]
        except grpc.RpcError as exc:
            return fail(exc)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def run_kb_delete(args: argparse.Namespace) -> int:
    if bool(args.document_id) == bool(args.all):
        print("chatllm: give a document id, or --all to delete the whole knowledge base", file=sys.stderr)
        return 2
    with open_client(args, args.timeout or 60) as client:
        try:
            if args.all:
                documents = client.delete_knowledge_base(args.kb)
                print(f"deleted knowledge base {args.kb!r} ({documents} documents)")
            else:
                chunks = client.delete_document(args.document_id, knowledge_base=args.kb)
                print(f"deleted {args.document_id} ({chunks} chunks) from {args.kb!r}")
        except grpc.RpcError as exc:
            return fail(exc)
    return 0
