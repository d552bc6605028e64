"""The knowledge-base tests against a real Milvus server (the PyPI `milvus` package, standalone 2.3.5),
run inside a network namespace this test creates, so that no traffic leaves loopback.

The server listens on every interface and its components dial the machine's own address
(even with every `ip:` in milvus.yaml set to 127.0.0.1), so it may only run where `lo` is the
only interface: `unshare --net` (root) gives a fresh namespace; tests/milvus_netns.py brings `lo`
up, checks that nothing else exists, starts the server and runs the "server" cases of the
same test bodies that run against milvus-lite elsewhere in the suite (those where the store matters).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
SERVER_CASES = ["tests/component/test_knowledge_library.py", "tests/component/test_knowledge_base.py"]
# The cases where the store is what is tested. Those that check what happens before anything reaches the
# store (refused files and streams), the model's answers, the retrieval scores and milvus-lite's own read
# path run against milvus-lite only: against a server they cost minutes and test nothing new.
NOT_THE_STORE = ("bad_files", "malformed", "generate_with", "off_topic", "below_the_threshold", "a_question_reads")
SELECTED = " and ".join(["server", *(f"not {case}" for case in NOT_THE_STORE)])
SERVER_CASE_COUNT = 18

pytestmark = pytest.mark.model  # the real embedder and model, in a pytest subprocess


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="creating a network namespace (unshare --net) needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is missing")
def test_knowledge_base_cases_pass_against_a_milvus_server_confined_to_loopback() -> None:
    command = [
        "unshare",
        "--net",
        "--",
        sys.executable,
        "-m",
        "tests.milvus_netns",
        *SERVER_CASES,
        "-k",
        SELECTED,
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    output = run.stdout + run.stderr
    assert "only interface: lo" in output, output[-4000:]
    assert run.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == SERVER_CASE_COUNT, summary  # every selected case ran, none skipped
    assert "skipped" not in summary and "deselected" in summary, summary
