"""Shared fixtures: a session data dir (with the converted built-in model), in-process
servers on port 0, and subprocesses of `chatllm` that are always cleaned up.

Tiers: a test that needs a model (an LLM engine, the embedder, a `chatllm` process) is marked
`model`, by hand or here (every test under tests/e2e/ and every test using `model_dir` or
`chatllm_process`). `pytest --fast` (`make test-fast`) runs the others: the real servicer and
bridge over tests/fake_engine.py, and the unit tests; it fails if any engine starts. Every run
prints its model start-ups at the end (tests/startups.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.startups import StartupLog

if TYPE_CHECKING:
    from tests.fake_engine import FakeEngine
    from tests.stack import Stack

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "tests" / "output"
# redis_server, redis_url: a real Redis for the state-store tests; fleet, fleet_settings: the session's replicas.
pytest_plugins = ["tests.redis_server", "tests.fleet", "tests.milvus_background"]

# Tests never reach the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


MODEL_FIXTURES = {"model_dir", "chatllm_process"}
STARTUPS = pytest.StashKey[StartupLog]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast", action="store_true", help="the fast tier: no test marked `model`, and no engine may start"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "model: needs a model (LLM engine, embedder, or a chatllm process)")
    config.stash[STARTUPS] = StartupLog()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = REPO / "tests" / "e2e"
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & MODEL_FIXTURES or e2e in Path(item.path).parents:
            item.add_marker(pytest.mark.model)
    if config.getoption("--fast"):
        fast = [item for item in items if item.get_closest_marker("model") is None]
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("model")])
        items[:] = fast


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    started = item.config.stash[STARTUPS].attribute(item.nodeid.split("::", 1)[0])
    if started and item.config.getoption("--fast"):
        item.config.stash[STARTUPS].fast_tier_broken.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    startups = config.stash[STARTUPS]
    startups.attribute("(after the last test)")
    for line in startups.summary():
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    startups = session.config.stash[STARTUPS]
    if startups.fast_tier_broken:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[STARTUPS].close()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """One data dir per machine for the converted model (conversion takes ~20 s once);
    knowledge bases and history go to per-test folders instead."""
    path = Path(os.environ.get("CHATLLM_TEST_DATA_DIR", REPO / ".cache" / "test-data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model_dir(data_dir: Path) -> Path:
    """The built-in model converted to a safetensors directory."""
    from chatllm.server.model_source import resolve

    return resolve(None, data_dir / "models").path


@pytest.fixture
def fake_engine() -> FakeEngine:
    """The fake engine behind `fake_stack`: script it (answer, stall, fail, dead) before the request."""
    from tests.fake_engine import FakeEngine  # after the environment above is set

    return FakeEngine()


@pytest_asyncio.fixture(loop_scope="session")
async def fake_stack(tmp_path: Path, fake_engine: FakeEngine) -> AsyncIterator[Stack]:
    """The real gRPC server and bridge over `fake_engine` (no model; starts in milliseconds)."""
    from tests.stack import fake_config, serving_stack

    async with serving_stack(fake_config(tmp_path), fake_engine) as stack:
        yield stack


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def hf_stack(data_dir: Path, model_dir: Path) -> AsyncIterator[Stack]:
    """The real model on the hf engine behind the real server and bridge, default settings but fp32, for
    every test that checks what the model itself does: one model start-up for the whole run (tests
    pass the sampling they need; the protocol's own tests use `fake_stack`)."""
    from tests.servers import make_config
    from tests.stack import serving_stack

    # fp32: some of them compare with the exact text of transformers' model.generate (fp32), and
    # --precision auto is bf16 on CPUs with native bf16.
    async with serving_stack(make_config(data_dir, precision="fp32")) as stack:
        yield stack


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder under tests/output/ for files a test leaves for humans (screenshots, logs)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    path = OUTPUT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


CHATLLM = "chatllm.clients.cli"  # the `chatllm` command
FAKE_CHATLLM = "tests.fake_chatllm"  # the same command serving tests/fake_engine.py (no model)


class ChatllmProcess:
    """A `chatllm ...` subprocess (or `program`, e.g. FAKE_CHATLLM) in its own process group, with its
    log in a file."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None, program: str = CHATLLM
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", program, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """Poll the log until `pattern` appears (fails early if the process exits)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.log())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"chatllm exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.log()[-4000:]}")

    def grpc_port(self, timeout: float = 180) -> int:
        return int(self.wait_for_log(r"gRPC listening on [^:\s]+:(\d+)", timeout).group(1))

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Make sure nothing of this process group survives (it and its engine children)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started; catches orphaned children
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def chatllm_process(output_dir: Path) -> Iterator[type]:
    """Factory: `proc = chatllm_process(["server", ...])` (`program=FAKE_CHATLLM`: over the fake engine);
    all are stopped at teardown."""
    started: list[ChatllmProcess] = []

    def start(
        args: list[str], env: dict[str, str] | None = None, name: str = "chatllm", program: str = CHATLLM
    ) -> ChatllmProcess:
        proc = ChatllmProcess(args, output_dir / f"{name}-{len(started)}.log", env, program)
        started.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session", autouse=True)
def no_engine_process_survives_the_session() -> Iterator[None]:
    """Fail the run if any vLLM engine process the tests started is still alive at the end."""
    yield
    import psutil

    from chatllm.server.engines.process_owner import vllm_processes

    left = vllm_processes()
    described = []
    for proc in left:
        try:
            described.append(f"{proc.pid} {proc.name()}")
            proc.kill()  # children of this test process: ours to stop
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=10)
    assert not described, f"vLLM engine processes left running after the tests: {described}"
