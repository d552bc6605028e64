"""Chunks for the knowledge base: langchain-text-splitters with CJK-aware separators.

The library's default separators are paragraph, line, space, character; Chinese
has no spaces, so a long Chinese paragraph would be cut at an arbitrary
character, often in the middle of a word. Sentence and clause punctuation
(full-width and ASCII) come before the space and character fallbacks here, and
the punctuation stays with the sentence it ends. Markdown is first cut at its
headers, and every chunk of a section carries the section's header path so a
chunk deep in "Installation > Requirements" still says what it is about.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

CJK_AWARE_SEPARATORS = [
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "；",
    "．",  # sentence ends (full-width)
    ". ",
    "! ",
    "? ",
    "; ",  # sentence ends (ASCII, followed by a space so "3.5" stays whole)
    "，",
    "、",
    "：",
    ", ",
    ": ",  # clauses
    " ",
    "\u3000",
    "",  # last resort: characters
]
MARKDOWN_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]


@dataclass(frozen=True)
class SplitterSettings:
    chunk_size: int = 500
    chunk_overlap: int = 50


class DocumentSplitter:
    """Splits a loaded document's text into chunks of at most `chunk_size` characters (plus header path)."""

    def __init__(self, settings: SplitterSettings) -> None:
        if settings.chunk_overlap >= settings.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        self.settings = settings
        self._recursive = RecursiveCharacterTextSplitter(
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            separators=CJK_AWARE_SEPARATORS,
            keep_separator="end",
            strip_whitespace=True,
        )
        self._markdown = MarkdownHeaderTextSplitter(MARKDOWN_HEADERS, strip_headers=True)

    def split(self, text: str, kind: str = "text") -> list[str]:
        if kind == "markdown":
            return self.split_markdown(text)
        return [c for c in self._recursive.split_text(text) if c.strip()]

    def split_markdown(self, text: str) -> list[str]:
        chunks: list[str] = []
        for section in self._markdown.split_text(text):
            headers = [section.metadata[key] for _, key in MARKDOWN_HEADERS if key in section.metadata]
            path = " > ".join(headers)
            for piece in self._recursive.split_text(section.page_content):
                if piece.strip():
                    chunks.append(f"{path}\n{piece}" if path else piece)
        if not chunks and text.strip():  # a document that is only headers
            chunks = self._recursive.split_text(text)
        return chunks
