"""What this machine's CPU can do, decided from the text of /proc/cpuinfo.

The decisions take the text, not the file, so a test can hand them any CPU's flags. Both the
model engines (`--precision auto`) and the knowledge base's embedder (`--embedding-precision
auto`) ask the same question here: does the CPU compute bf16 natively? Where it does
(AVX512-BF16 or AMX), bf16 runs faster than fp32 (bench/results/precision-*.md); where it does
not, PyTorch emulates bf16 and it runs slower than fp32.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Either one means the CPU's own instructions compute bf16 dot products.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def read_cpuinfo(path: Path = CPUINFO) -> str:
    """The text of /proc/cpuinfo ("" where there is none, e.g. outside Linux)."""
    try:
        return path.read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The first processor's feature flags (`flags` on x86, `Features` on Arm)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_native_bf16(cpuinfo: str) -> bool:
    """Whether the CPU computes bf16 natively (else bf16 is emulated, slower than fp32)."""
    return not NATIVE_BF16_FLAGS.isdisjoint(cpu_flags(cpuinfo))


def auto_cpu_precision(cpuinfo: str) -> str:
    """What `auto` precision means on this CPU: "bf16" where native, else "fp32"."""
    return "bf16" if has_native_bf16(cpuinfo) else "fp32"


def cpu_precision(requested: str, cpuinfo: str) -> str:
    """The precision an engine on this CPU runs: the one asked for, or `auto`'s choice."""
    return auto_cpu_precision(cpuinfo) if requested == "auto" else requested
