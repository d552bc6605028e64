"""`--precision auto` and `--embedding-precision auto` on a CPU: bf16 where the CPU computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatllm.kernel.cpu import auto_cpu_precision, cpu_flags, cpu_precision, has_native_bf16, read_cpuinfo
from chatllm.retrieval.embedder import resolve_precision

# Trimmed /proc/cpuinfo texts: a Sapphire Rapids (AMX), a Cooper Lake (AVX512-BF16 only), a
# Skylake server (AVX-512 without bf16), a desktop with AVX2 only, and an Arm Neoverse V1.
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
bugs\t\t: spectre_v1
"""
COOPER_LAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"
SKYLAKE = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n"
AVX2_DESKTOP = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"
# A flag's name inside another line (the bugs line, a model name) is not a flag.
BF16_IN_OTHER_LINES = "processor\t: 0\nmodel name\t: avx512_bf16 lookalike\nflags\t\t: fpu avx2\nbugs\t\t: amx_bf16\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (SAPPHIRE_RAPIDS, "bf16"),
        (COOPER_LAKE, "bf16"),
        (SKYLAKE, "fp32"),
        (AVX2_DESKTOP, "fp32"),
        (NEOVERSE_V1, "fp32"),  # Arm's bf16 extension: never measured here, so it keeps fp32
        (BF16_IN_OTHER_LINES, "fp32"),
        ("", "fp32"),
    ],
)
def test_auto_precision_is_bf16_only_with_native_bf16(cpuinfo: str, expected: str) -> None:
    assert auto_cpu_precision(cpuinfo) == expected
    assert has_native_bf16(cpuinfo) == (expected == "bf16")


def test_an_explicit_precision_wins_over_the_cpu() -> None:
    assert cpu_precision("fp32", SAPPHIRE_RAPIDS) == "fp32"
    assert cpu_precision("bf16", AVX2_DESKTOP) == "bf16"
    assert cpu_precision("auto", SAPPHIRE_RAPIDS) == "bf16"
    assert cpu_precision("auto", SKYLAKE) == "fp32"


def test_flags_come_from_the_flags_line_only() -> None:
    assert cpu_flags(SKYLAKE) == {"fpu", "avx2", "avx512f", "avx512bw", "avx512_vnni"}
    assert "bf16" in cpu_flags(NEOVERSE_V1)
    assert cpu_flags("processor\t: 0\n") == frozenset()


def test_a_missing_cpuinfo_reads_as_no_flags(tmp_path: Path) -> None:
    assert read_cpuinfo(tmp_path / "absent") == ""
    assert auto_cpu_precision(read_cpuinfo(tmp_path / "absent")) == "fp32"


def test_the_embedder_asks_the_same_question() -> None:
    here = auto_cpu_precision(read_cpuinfo())
    assert resolve_precision("auto", "cpu") == here
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
