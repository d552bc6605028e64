"""Hostile documents are refused, not hung on: bounds checked before parsing, and parsing
itself runs in a child process with a time limit and a memory ceiling."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from chatllm.retrieval.errors import DocumentError
from chatllm.retrieval.isolation import IsolatedParser, ParseLimits
from chatllm.retrieval.loaders import MAX_PDF_PAGES, LoadedDocument


def zip_bomb_docx() -> bytes:
    """A .docx whose document.xml inflates from ~100 KB to 100 MB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"<w:t>" + b"A" * 100_000_000 + b"</w:t>")
    return buffer.getvalue()


def many_pages_pdf(pages: int) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=72, height=72)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sleepy_loader(filename: str, data: bytes, mime_type: str) -> LoadedDocument:
    time.sleep(60)
    return LoadedDocument("never", "text")


def greedy_loader(filename: str, data: bytes, mime_type: str) -> LoadedDocument:
    hoard = [bytearray(64 * 1024 * 1024) for _ in range(64)]  # 4 GiB
    return LoadedDocument(str(len(hoard)), "text")


def test_zip_bomb_docx_is_refused_before_inflating() -> None:
    data = zip_bomb_docx()
    assert len(data) < 1_000_000
    started = time.monotonic()
    with pytest.raises(DocumentError) as err:
        IsolatedParser().load("bomb.docx", data)
    assert "bomb.docx" in str(err.value) and "refused" in str(err.value)
    assert time.monotonic() - started < 30


def test_pdf_with_too_many_pages_is_refused() -> None:
    with pytest.raises(DocumentError) as err:
        IsolatedParser().load("huge.pdf", many_pages_pdf(MAX_PDF_PAGES + 1))
    assert "pages" in str(err.value)


def test_parsing_past_the_time_limit_is_killed_and_refused() -> None:
    parser = IsolatedParser(ParseLimits(timeout_seconds=2.0), loader=sleepy_loader)
    started = time.monotonic()
    with pytest.raises(DocumentError) as err:
        parser.load("slow.pdf", b"%PDF-1.4")
    assert "longer than 2 s" in str(err.value)
    assert time.monotonic() - started < 10


def test_parsing_past_the_memory_ceiling_is_refused() -> None:
    parser = IsolatedParser(ParseLimits(memory_bytes=256 * 1024 * 1024), loader=greedy_loader)
    with pytest.raises(DocumentError) as err:
        parser.load("fat.docx", b"PK")
    assert "memory" in str(err.value)


def test_good_documents_still_parse_in_the_child() -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("员工手册：年假为十五天。")
    out = io.BytesIO()
    document.save(out)
    loaded = IsolatedParser().load("handbook.docx", out.getvalue())
    assert "年假为十五天" in loaded.text and loaded.kind == "docx"
    assert IsolatedParser().load("a.txt", "plain 文本".encode()).text == "plain 文本"
