"""Store details that need no Milvus: URIs, collection names, delete results, filter quoting."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatllm.kernel.config import Config
from chatllm.retrieval.store import (
    collection_name,
    deleted_count,
    is_server_uri,
    knowledge_base_of,
    missing_server_features,
    quoted,
)
from chatllm.server.knowledge import index_folder, milvus_uri


def test_lite_file_by_default_server_when_a_uri_is_given(tmp_path: Path) -> None:
    config = Config.build(data_dir=str(tmp_path))
    assert milvus_uri(config.kb, config.common.kb_dir) == str(tmp_path / "kb" / "milvus.db")
    assert not is_server_uri(milvus_uri(config.kb, config.common.kb_dir))
    server = Config.build(data_dir=str(tmp_path), milvus_uri="http://milvus:19530")
    assert milvus_uri(server.kb, server.common.kb_dir) == "http://milvus:19530" and is_server_uri("http://milvus:19530")
    assert is_server_uri("https://in03-x.cloud.example:443")


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_collection_names_are_valid_for_milvus_and_reversible(name: str) -> None:
    collection = collection_name(name)
    assert collection.replace("_", "").isalnum() and collection[0].isalpha()
    assert knowledge_base_of(collection) == name


def test_distinct_names_never_share_a_collection() -> None:
    names = ["a-b", "a_b", "a__b", "a_db", "a-db", "a_-b"]
    assert len({collection_name(n) for n in names}) == len(names)


def test_deleted_count_reads_lite_ids_and_server_counts() -> None:
    assert deleted_count(["d:g:0", "d:g:1"]) == 2  # milvus-lite returns the primary keys
    assert deleted_count({"delete_count": 7, "cost": 0}) == 7  # a server returns a count
    assert deleted_count([]) == 0 and deleted_count(None) == 0


def test_only_safe_values_reach_filter_expressions() -> None:
    assert quoted("abc-123_x") == '"abc-123_x"'
    with pytest.raises(ValueError):
        quoted('x" or pk != "')


def test_a_server_too_old_for_a_feature_is_named_at_start_up() -> None:
    assert missing_server_features("v2.3.5-lite") == [] and missing_server_features("v2.4.13") == []
    assert missing_server_features("v2.2.16") == ["the COSINE metric", "upsert", "query iterators"]
    assert missing_server_features("unknown") == []  # then the calls themselves report it


def test_indexes_are_saved_beside_a_lite_database_or_per_server_under_the_data_dir(tmp_path: Path) -> None:
    config = Config.build(data_dir=str(tmp_path))
    kb, kb_dir = config.kb, config.common.kb_dir
    assert index_folder(kb, kb_dir, str(tmp_path / "kb" / "milvus.db")) == tmp_path / "kb" / "milvus.db.indexes"
    assert index_folder(kb, kb_dir, "http://milvus:19530") == tmp_path / "kb" / "indexes" / "milvus_19530"
    chosen = config.replace(kb_index_dir=str(tmp_path / "x")).kb
    assert index_folder(chosen, kb_dir, "http://m:1") == tmp_path / "x"
