"""Parsing untrusted files in a child process with a time limit and a memory ceiling.

PDF and DOCX parsers can be made to loop, or to inflate a few kilobytes into
gigabytes (zip bombs, Flate bombs in PDF streams). The server must refuse such
files, not hang on them or be killed by the OOM killer: each document is parsed
in a process forked from a small fork server, under RLIMIT_AS, and killed when
it runs past its time. Plain text needs no parser and is decoded in process.
"""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from chatllm.retrieval.errors import DocumentError
from chatllm.retrieval.loaders import LoadedDocument, document_extension, load_document

ISOLATED_EXTENSIONS = frozenset({".pdf", ".docx"})


@dataclass(frozen=True)
class ParseLimits:
    timeout_seconds: float = 60.0
    memory_bytes: int = 1536 * 1024 * 1024  # on top of the child's own footprint


def _virtual_memory_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


Loader = Callable[[str, bytes, str], LoadedDocument]


def _child(conn: Connection, loader: Loader, filename: str, data: bytes, mime_type: str, memory_bytes: int) -> None:
    """Runs in the child: cap the address space, parse, send ("ok", text, kind) or ("error", message)."""
    ceiling = _virtual_memory_bytes() + memory_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        loaded = loader(filename, data, mime_type)
        conn.send(("ok", loaded.text, loaded.kind))
    except DocumentError as exc:
        conn.send(("error", exc.reason))
    except MemoryError:
        conn.send(("error", "parsing needs more memory than allowed (a decompression bomb?)"))
    finally:
        conn.close()


class IsolatedParser:
    """Parses PDF/DOCX in short-lived child processes; everything else in process."""

    def __init__(self, limits: ParseLimits | None = None, loader: Loader = load_document) -> None:
        self.limits = limits or ParseLimits()
        self._loader = loader  # a module-level function (it is pickled to the child)
        self._context: Any = multiprocessing.get_context("forkserver")
        # The fork server imports the parsers once; each document then costs a fork.
        self._context.set_forkserver_preload(["chatllm.retrieval.loaders", "pypdf", "docx", "pdfminer.high_level"])

    def load(self, filename: str, data: bytes, mime_type: str = "") -> LoadedDocument:
        if document_extension(filename, mime_type) not in ISOLATED_EXTENSIONS:
            return load_document(filename, data, mime_type)
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child,
            args=(sender, self._loader, filename, data, mime_type, self.limits.memory_bytes),
            daemon=True,
        )
        process.start()
        sender.close()
        try:
            if not receiver.poll(self.limits.timeout_seconds):
                raise DocumentError(filename, f"parsing took longer than {self.limits.timeout_seconds:g} s; refused")
            try:
                outcome = receiver.recv()
            except EOFError:  # the child died without answering: killed by the memory ceiling
                raise DocumentError(filename, "parsing needs more memory than allowed; refused") from None
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join(5)
        if outcome[0] == "error":
            raise DocumentError(filename, outcome[1])
        return LoadedDocument(text=outcome[1], kind=outcome[2])
