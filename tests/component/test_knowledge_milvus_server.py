"""The knowledge-base tests against a real Milvus server (the PyPI `milvus` package, standalone 2.3.5),
run inside a network namespace this test creates, so that no traffic leaves loopback.

The server listens on every interface and its components dial the machine's own address
(even with every `ip:` in milvus.yaml set to 127.0.0.1), so it may only run where `lo` is the
only interface: `unshare --net` (root) gives a fresh namespace; tests/milvus_netns.py brings `lo`
up, checks that nothing else exists, starts the server and runs the "server" cases of the
same test bodies that run against milvus-lite elsewhere in the suite (those where the store matters).
The run starts in the background as soon as the session is collected (tests/milvus_background.py):
it is mostly waiting on the server, so the rest of the suite goes on beside it.
"""

from __future__ import annotations

import re

import pytest

from tests.milvus_background import MilvusServerRun

SERVER_CASE_COUNT = 18

pytestmark = pytest.mark.model  # the real embedder and model, in a pytest subprocess


@pytest.mark.slow
def test_knowledge_base_cases_pass_against_a_milvus_server_confined_to_loopback(
    milvus_server_run: MilvusServerRun,
) -> None:
    returncode, output = milvus_server_run.result()
    assert "only interface: lo" in output, output[-4000:]
    assert returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == SERVER_CASE_COUNT, summary  # every selected case ran, none skipped
    assert "skipped" not in summary and "deselected" in summary, summary
