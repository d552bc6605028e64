"""The chunk texts held beside the search indexes: add, replace, remove, save and load."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatllm.retrieval.chunk_texts import ChunkTexts

TEXTS = {
    "d1:g1:0": "Hold the reset button\nfor twelve seconds.",
    "d1:g1:1": "员工每年享有十五天带薪年假。",
    "d2:g7:0": "",  # an empty chunk is still a chunk
}


def test_add_get_remove() -> None:
    texts = ChunkTexts()
    texts.add(list(TEXTS), list(TEXTS.values()))
    assert texts.get(["d1:g1:1", "missing"]) == {"d1:g1:1": TEXTS["d1:g1:1"]}
    texts.add(["d1:g1:1"], ["replaced"])
    assert texts.get(["d1:g1:1"]) == {"d1:g1:1": "replaced"} and len(texts) == 3
    assert texts.remove(["d1:g1:0", "d1:g1:0", "missing"]) == 1
    assert texts.keys() == {"d1:g1:1", "d2:g7:0"}


def test_save_and_load_keep_every_text_byte_for_byte(tmp_path: Path) -> None:
    texts = ChunkTexts()
    texts.add(list(TEXTS), list(TEXTS.values()))
    texts.remove(["d1:g1:0"])
    texts.save(tmp_path)
    loaded = ChunkTexts.load(tmp_path)
    assert loaded.get(TEXTS) == {k: v for k, v in TEXTS.items() if k != "d1:g1:0"}


def test_load_refuses_keys_that_disagree_with_the_texts(tmp_path: Path) -> None:
    texts = ChunkTexts()
    texts.add(list(TEXTS), list(TEXTS.values()))
    texts.save(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    ChunkTexts().save(empty)
    (tmp_path / "text-keys.npy").write_bytes((empty / "text-keys.npy").read_bytes())  # as if cut short
    with pytest.raises(ValueError, match="disagree"):
        ChunkTexts.load(tmp_path)
