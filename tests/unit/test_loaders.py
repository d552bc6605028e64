"""Loaders on files generated here: python-docx writes .docx, LibreOffice turns them into .pdf."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import docx
import pytest

from chatllm.retrieval.errors import DocumentError
from chatllm.retrieval.loaders import clean_filename, document_extension, load_document

ENGLISH = ("Pressure valve maintenance", "Replace the brass gasket every 400 operating hours.")
CHINESE = ("压力阀维护", "每运行四百小时更换一次黄铜垫圈，并检查密封圈是否老化。")
TABLE = [("型号", "Model", "最大压力"), ("PV-9", "Valve nine", "16 bar")]


def write_docx(path: Path, heading: str, body: str) -> Path:
    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph(body)
    table = document.add_table(rows=len(TABLE), cols=len(TABLE[0]))
    for r, row in enumerate(TABLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("After the table.")
    document.save(str(path))
    return path


@pytest.fixture(scope="module")
def office_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """English and Chinese .docx, and their .pdf conversions by LibreOffice (CJK fonts installed)."""
    folder = tmp_path_factory.mktemp("office")
    files = {
        "en.docx": write_docx(folder / "en.docx", *ENGLISH),
        "zh.docx": write_docx(folder / "zh.docx", *CHINESE),
    }
    office = shutil.which("libreoffice") or shutil.which("soffice")
    assert office, "LibreOffice is needed to make test PDFs (apt-get install libreoffice-writer-nogui)"
    profile = folder / "lo-profile"  # a private profile: several LibreOffice runs at once otherwise collide
    subprocess.run(
        [
            office,
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(folder),
            str(files["en.docx"]),
            str(files["zh.docx"]),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    files["en.pdf"], files["zh.pdf"] = folder / "en.pdf", folder / "zh.pdf"
    return files


@pytest.mark.parametrize(("lang", "texts"), [("en", ENGLISH), ("zh", CHINESE)])
def test_docx_keeps_paragraphs_and_tables_in_order(office_files: dict[str, Path], lang: str, texts: tuple) -> None:
    loaded = load_document(f"{lang}.docx", office_files[f"{lang}.docx"].read_bytes())
    assert loaded.kind == "docx"
    heading, body = texts
    lines = loaded.text.splitlines()
    assert heading in lines and body in lines
    assert "型号 | Model | 最大压力" in lines and "PV-9 | Valve nine | 16 bar" in lines
    assert loaded.text.index(body) < loaded.text.index("PV-9") < loaded.text.index("After the table.")


@pytest.mark.parametrize(("lang", "texts"), [("en", ENGLISH), ("zh", CHINESE)])
def test_pdf_text_survives_including_chinese(office_files: dict[str, Path], lang: str, texts: tuple) -> None:
    loaded = load_document(f"{lang}.pdf", office_files[f"{lang}.pdf"].read_bytes())
    assert loaded.kind == "pdf"
    flat = "".join(loaded.text.split())
    for text in (*texts, "PV-9", "最大压力"):
        assert "".join(text.split()) in flat


def test_pdfminer_takes_over_when_pypdf_finds_nothing(office_files: dict[str, Path], monkeypatch) -> None:
    from chatllm.retrieval import loaders

    monkeypatch.setattr(loaders, "_pypdf_text", lambda data: "")
    loaded = load_document("zh.pdf", office_files["zh.pdf"].read_bytes())
    assert "黄铜垫圈" in "".join(loaded.text.split())


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "gb18030"])
def test_text_files_in_the_encodings_chinese_users_have(encoding: str) -> None:
    text = "第一行：压力阀维护\r\n第二行：Replace the gasket.\r\n"
    loaded = load_document("notes.txt", text.encode(encoding))
    assert loaded.text == "第一行：压力阀维护\n第二行：Replace the gasket."
    assert loaded.kind == "text"


def test_markdown_is_markdown_and_mime_type_rescues_a_missing_extension() -> None:
    assert load_document("guide.md", "# 标题\n\n正文".encode()).kind == "markdown"
    assert load_document("README", b"# Title\n\nBody", "text/markdown").kind == "markdown"
    assert document_extension("scan", "application/pdf; charset=binary") == ".pdf"


@pytest.mark.parametrize(
    ("filename", "data", "reason"),
    [
        ("a.exe", b"MZ", "unsupported file type .exe"),
        ("noextension", b"hello", "unsupported file type (no extension)"),
        ("bad.pdf", b"%PDF-1.7 garbage", "not a valid .pdf file"),
        ("bad.pdf", b"hello", "not a valid .pdf file"),
        ("bad.docx", b"not a zip", "not a valid .docx file"),
        ("bin.txt", bytes(range(256)), "not a valid .txt file"),
        ("blank.md", b"  \n\n  ", "no text found"),
    ],
)
def test_bad_files_raise_a_document_error_naming_the_file(filename: str, data: bytes, reason: str) -> None:
    with pytest.raises(DocumentError) as err:
        load_document(filename, data)
    assert str(err.value).startswith(f"{filename}: ") and reason in str(err.value)


def test_filenames_lose_their_directories() -> None:
    assert clean_filename("../../etc/passwd.txt") == "passwd.txt"
    assert clean_filename("C:\\Users\\李雷\\报告.docx") == "报告.docx"
