"""The two Milvus back ends the knowledge-base tests run against: a milvus-lite file, and a real
Milvus server when one is given in CHATLLM_TEST_MILVUS_URI.

The server is the PyPI `milvus` package (standalone Milvus 2.3.5). It listens on every
interface and its components dial the machine's own non-loopback address, so it only ever
runs inside a network namespace that has nothing but `lo`:
tests/milvus_background.py creates one (for tests/component/test_knowledge_milvus_server.py),
starts the server in it and runs the knowledge-base tests there with this variable set
(tests/milvus_netns.py). Outside that,
the "server" cases are skipped here and run through that test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MILVUS_SERVER_URI_ENV = "CHATLLM_TEST_MILVUS_URI"
BACKENDS = ["lite", "server"]


def server_uri() -> str | None:
    return os.environ.get(MILVUS_SERVER_URI_ENV)


def milvus_uri_for(backend: str, folder: Path) -> str:
    """A store with nothing in it: a fresh milvus-lite path, or the test server emptied."""
    if backend == "lite":
        return str(folder / "milvus.db")
    uri = server_uri()
    if uri is None:
        pytest.skip(f"Milvus server cases run inside a network namespace ({MILVUS_SERVER_URI_ENV} unset here)")
    empty_server(uri)
    return uri


def empty_server(uri: str) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        for name in client.list_collections():
            client.drop_collection(name)
    finally:
        client.close()
