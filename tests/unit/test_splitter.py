"""The CJK-aware splitter: Chinese is cut at punctuation, never inside a word; Markdown by headers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_text_splitters import RecursiveCharacterTextSplitter

from chatllm.retrieval.lexical import _jieba
from chatllm.retrieval.splitter import DocumentSplitter, SplitterSettings

CHINESE = (
    "员工每年享有十五天带薪年假，入职满三年后增加到二十天。年假需提前两周在人事系统中申请，经直属经理批准后生效。"
    "未休完的年假可以顺延至次年第一季度，逾期作废！病假需要提供医院证明；事假每年累计不超过十天。"
    "差旅费用需在出差结束后三十天内提交发票，超过期限的发票财务部不予受理。"
)


def word_boundaries(text: str) -> set[int]:
    """Offsets where jieba says a word ends."""
    offsets, position = set(), 0
    for word in _jieba().cut(text):
        position += len(word)
        offsets.add(position)
    return offsets


@pytest.mark.parametrize("chunk_size", [30, 45, 60, 90])
def test_chinese_chunks_end_at_punctuation_and_keep_words_whole(chunk_size: int) -> None:
    chunks = DocumentSplitter(SplitterSettings(chunk_size, 5)).split(CHINESE)
    assert len(chunks) > 1
    boundaries = word_boundaries(CHINESE)
    for chunk in chunks:
        assert len(chunk) <= chunk_size
        assert chunk[-1] in "，。！；", chunk
        start = CHINESE.index(chunk)
        assert start + len(chunk) in boundaries


def test_the_library_default_would_cut_chinese_words() -> None:
    """Why the custom separators exist: the stock splitter cuts this text mid-word."""
    stock = RecursiveCharacterTextSplitter(chunk_size=45, chunk_overlap=5).split_text(CHINESE)
    boundaries = word_boundaries(CHINESE)
    assert any(CHINESE.index(c) + len(c) not in boundaries for c in stock)


def test_english_is_cut_between_sentences() -> None:
    text = "The valve opens at dawn. It closes at dusk. Version 3.5 adds a timer. Nothing else changed."
    chunks = DocumentSplitter(SplitterSettings(50, 0)).split(text)
    assert chunks == ["The valve opens at dawn. It closes at dusk.", "Version 3.5 adds a timer. Nothing else changed."]


def test_markdown_chunks_carry_their_header_path() -> None:
    text = (
        "# Router\n\nIntro.\n\n## Reset\n\nHold the button. "
        + "Wait for the lamp. " * 5
        + "\n\n## Lights\n\nRed is bad."
    )
    chunks = DocumentSplitter(SplitterSettings(60, 0)).split(text, "markdown")
    assert chunks[0] == "Router\nIntro."
    reset = [c for c in chunks if c.startswith("Router > Reset\n")]
    assert len(reset) >= 2 and all("Lights" not in c for c in reset)
    assert chunks[-1] == "Router > Lights\nRed is bad."


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError, match="chunk_overlap"):
        DocumentSplitter(SplitterSettings(100, 100))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="年假申请员工。，！ abc\n", min_size=1, max_size=400), st.integers(20, 120))
def test_every_chunk_fits_and_no_text_is_lost(text: str, chunk_size: int) -> None:
    chunks = DocumentSplitter(SplitterSettings(chunk_size, chunk_size // 5)).split(text)
    assert all(0 < len(c) <= chunk_size for c in chunks)
    covered = "".join(chunks)
    assert all(ch in covered for ch in set(text) if not ch.isspace())
