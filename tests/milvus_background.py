"""The Milvus-server run of the knowledge-base cases, started in the background when the session begins.

tests/component/test_knowledge_milvus_server.py checks a run of `tests.milvus_netns` (a real Milvus
standalone server in a network namespace of its own, and the knowledge-base cases against it). That
run spends most of its three minutes waiting on the server (collection loads, flushes, compactions),
so it starts as soon as the session's tests are collected, beside the rest of the suite; the test waits
for it where it stands in the order and reads its output. Nothing starts when the test is not
selected (`--fast`, `-k`, another file) or cannot run here (not root, no `unshare`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.startups import ENV as ENGINE_START_LOG

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "tests" / "output" / "milvus_server"  # the run's output and start-up log, kept for a look
TEST_FILE = "tests/component/test_knowledge_milvus_server.py"
SERVER_CASES = ["tests/component/test_knowledge_library.py", "tests/component/test_knowledge_base.py"]
# The cases where the store is what is tested. Those that check what happens before anything reaches the
# store (refused files and streams), the model's answers, the retrieval scores and milvus-lite's own read
# path run against milvus-lite only: against a server they cost minutes and test nothing new.
NOT_THE_STORE = ("bad_files", "malformed", "generate_with", "off_topic", "below_the_threshold", "a_question_reads")
SELECTED = " and ".join(["server", *(f"not {case}" for case in NOT_THE_STORE)])
TIMEOUT_S = 1800
RUN = pytest.StashKey["MilvusServerRun"]()


def can_run_here() -> str | None:
    """Why the run cannot happen on this machine, or None."""
    if os.geteuid() != 0:
        return "creating a network namespace (unshare --net) needs root"
    if shutil.which("unshare") is None:
        return "util-linux unshare is missing"
    return None


@dataclass
class MilvusServerRun:
    proc: subprocess.Popen[bytes]
    output: Path
    engine_starts: Path  # the run's own start-up log, added to the session's when the test reads the run

    @classmethod
    def start(cls, output_dir: Path) -> MilvusServerRun:
        command = ["unshare", "--net", "--", sys.executable, "-m", "tests.milvus_netns", *SERVER_CASES]
        command += ["-k", SELECTED, "-q", "-p", "no:cacheprovider"]
        output = output_dir / "milvus-server-run.log"
        engine_starts = output_dir / "engine-starts.log"
        env = dict(os.environ, **{ENGINE_START_LOG: str(engine_starts)})
        with output.open("wb") as sink:
            # Its own session, so that stopping it early reaches the server and the inner pytest too.
            proc = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(proc, output, engine_starts)

    def result(self) -> tuple[int, str]:
        """Waits for the run to end; its exit status and everything it printed."""
        try:
            returncode = self.proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            returncode = -1
        session_log = os.environ.get(ENGINE_START_LOG)
        if session_log and self.engine_starts.exists():
            # Charged to the test that reads the run, as when it ran in the test's own time.
            with open(session_log, "a", encoding="utf-8") as log:
                log.write(self.engine_starts.read_text(encoding="utf-8"))
        return returncode, self.output.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or can_run_here() is not None:
        return
    if any(item.nodeid.startswith(TEST_FILE + "::") for item in session.items):
        shutil.rmtree(OUTPUT, ignore_errors=True)
        OUTPUT.mkdir(parents=True)
        session.config.stash[RUN] = MilvusServerRun.start(OUTPUT)


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(RUN, None)
    if run is not None:
        run.stop()  # a session that ended before the test read it (-x, Ctrl-C)


@pytest.fixture
def milvus_server_run(request: pytest.FixtureRequest) -> MilvusServerRun:
    """The background run this session started (the test is skipped where it cannot run)."""
    reason = can_run_here()
    if reason is not None:
        pytest.skip(reason)
    run = request.config.stash.get(RUN, None)
    assert run is not None, "the Milvus-server run was not started at collection"
    return run
