"""Running a bench/ script as a program from a test (tests do not import bench/) and reading its JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO


def run_bench_program(
    script: str, args: list[str], report_file: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`python bench/<script> ARGS --report FILE` (blocking: call it in a thread); its report, or a failure
    showing the program's output."""
    command = [sys.executable, str(REPO / "bench" / script), *args, "--report", str(report_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert report_file.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(report_file.read_text())
    return report
