"""Text out of uploaded files: .txt, .md, .docx (paragraphs and tables), .pdf.

Loaders take bytes, not paths, because documents arrive over gRPC and HTTP.
Chinese must survive every path: text files are decoded as UTF-8 (with or
without BOM), UTF-16 with a BOM, or GB18030 (the superset of GBK that older
Chinese Windows tools write).
"""

from __future__ import annotations

import io
import logging
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from chatllm.retrieval.errors import DocumentError

log = logging.getLogger(__name__)

MIME_EXTENSIONS = {
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}
EXTENSION_ALIASES = {".markdown": ".md", ".text": ".txt"}
# Bounds on what a document may expand to (on top of the parse-time limits of
# chatllm.retrieval.isolation): refused before the parser sees them.
MAX_PDF_PAGES = 2000
MAX_DOCX_UNZIPPED_BYTES = 256 * 1024 * 1024
MAX_ZIP_RATIO = 200  # deflate reaches ~1000:1 only on degenerate (bomb) data
# C0 controls other than tab/newline/carriage return/form feed mean "this is not text".
BINARY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")


class EncryptedPdfError(ValueError):
    """pdfminer cannot do better, so no fallback."""


class TooLargeError(ValueError):
    """The document expands beyond the bounds above: refused, no fallback parser."""


@dataclass(frozen=True)
class LoadedDocument:
    text: str
    kind: str  # "text" | "markdown" | "docx" | "pdf": picks the splitter mode


def clean_filename(filename: str) -> str:
    """Only the last path component (either slash), so names cannot smuggle paths."""
    name = PureWindowsPath(PurePosixPath(filename).name).name.strip()
    return name


def document_extension(filename: str, mime_type: str = "") -> str:
    """The loader key for a file: its extension, else its MIME type's; raises DocumentError if unsupported."""
    suffix = PurePosixPath(filename).suffix.lower()
    suffix = EXTENSION_ALIASES.get(suffix, suffix)
    if suffix in LOADERS:
        return suffix
    from_mime = MIME_EXTENSIONS.get(mime_type.split(";")[0].strip().lower())
    if from_mime:
        return from_mime
    shown = suffix or "(no extension)"
    raise DocumentError(filename, f"unsupported file type {shown}; supported: {', '.join(sorted(LOADERS))}")


def load_document(filename: str, data: bytes, mime_type: str = "") -> LoadedDocument:
    """Extract the text of one file; DocumentError names the file when it cannot be read."""
    extension = document_extension(filename, mime_type)
    kind, loader = LOADERS[extension]
    try:
        text = loader(data)
    except DocumentError:
        raise
    except TooLargeError as exc:
        raise DocumentError(filename, f"refused: {exc}") from None
    except Exception as exc:  # each library has its own zoo of parse errors
        log.info("cannot read %s as %s: %r", filename, extension, exc)
        raise DocumentError(filename, f"not a valid {extension} file ({type(exc).__name__}: {exc})") from None
    text = normalise(text)
    if not text.strip():
        raise DocumentError(filename, "no text found in the file (empty, or a scanned PDF without a text layer)")
    return LoadedDocument(text=text, kind=kind)


def normalise(text: str) -> str:
    """One newline convention, no NULs, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\u3000]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if not BINARY_CONTROLS.search(text):
            return text
    raise ValueError("not UTF-8, UTF-16 or GB18030 text (binary data?)")


def load_docx(data: bytes) -> str:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            blocks.append(table_text(block))
        elif block.text.strip():
            blocks.append(block.text)
    return "\n\n".join(b for b in blocks if b)


def table_text(table: object) -> str:
    """Rows as 'cell | cell' lines; merged cells repeat in python-docx, so adjacent repeats are dropped."""
    lines = []
    for row in table.rows:  # type: ignore[attr-defined]
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if not cells or cells[-1] != text:
                cells.append(text)
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def load_pdf(data: bytes) -> str:
    """pypdf first (fast); pdfminer.six when pypdf fails or finds no text."""
    try:
        text = _pypdf_text(data)
    except (EncryptedPdfError, TooLargeError):
        raise
    except Exception as exc:
        log.info("pypdf failed (%r); trying pdfminer.six", exc)
        text = ""
    if text.strip():
        return text
    from pdfminer.high_level import extract_text

    return str(extract_text(io.BytesIO(data)))


def _pypdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pypdf warns about benign spec deviations
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedPdfError("the PDF is encrypted with a password")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise TooLargeError(f"{len(reader.pages)} pages; at most {MAX_PDF_PAGES} are accepted")
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)


def load_pdf_checked(data: bytes) -> str:
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise ValueError("missing the %PDF header")
    return load_pdf(data)


def load_docx_checked(data: bytes) -> str:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError("not a ZIP container (a .docx file is one)")
    check_zip_bounds(data)
    return load_docx(data)


def check_zip_bounds(data: bytes) -> None:
    """Refuse zip bombs from the central directory, before anything is inflated."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    total = sum(m.file_size for m in members)
    if total > MAX_DOCX_UNZIPPED_BYTES:
        raise TooLargeError(f"unpacks to {total} bytes; at most {MAX_DOCX_UNZIPPED_BYTES} are accepted")
    for member in members:
        if member.file_size > 1024 * 1024 and member.file_size > MAX_ZIP_RATIO * max(member.compress_size, 1):
            raise TooLargeError(
                f"{member.filename} inflates {member.file_size // max(member.compress_size, 1)}:1 (a zip bomb?)"
            )


LOADERS: dict[str, tuple[str, Callable[[bytes], str]]] = {
    ".txt": ("text", decode_text),
    ".md": ("markdown", decode_text),
    ".docx": ("docx", load_docx_checked),
    ".pdf": ("pdf", load_pdf_checked),
}
