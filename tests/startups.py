"""Counting model start-ups across a test run: every engine start, in the test process and in the
`chatllm` processes it spawns, appends a line to one file (--engine-start-log, inherited by
subprocesses as CHATLLM_ENGINE_START_LOG); the run attributes each start to the test module that
caused it and prints the count at the end."""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

ENV = "CHATLLM_ENGINE_START_LOG"
# The full suite's budget (CI time): at most this many model start-ups per run.
BUDGET = 12


class StartupLog:
    """The run's start-up file, and which module each start happened in."""

    def __init__(self) -> None:
        given = os.environ.get(ENV)
        if given:  # an outer runner aggregates several runs in one file
            self.path, self._own = Path(given), False
        else:
            handle, name = tempfile.mkstemp(prefix="chatllm-engine-starts-", suffix=".log")
            os.close(handle)
            self.path, self._own = Path(name), True
            os.environ[ENV] = name  # chatllm subprocesses append to it too
        self._seen = self._count()
        self.by_module: collections.Counter[str] = collections.Counter()
        self.by_backend: collections.Counter[str] = collections.Counter()
        self.fast_tier_broken: list[str] = []  # tests that started an engine in a --fast run

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def _count(self) -> int:
        return len(self._lines())

    def attribute(self, module: str) -> int:
        """Charge the starts since the last call to `module`; returns how many there were."""
        lines = self._lines()
        new = lines[self._seen :]
        self._seen = len(lines)
        for line in new:
            self.by_backend[line.split("\t", 1)[0]] += 1
        if new:
            self.by_module[module] += len(new)
        return len(new)

    @property
    def total(self) -> int:
        return sum(self.by_backend.values())

    def summary(self) -> list[str]:
        backends = ", ".join(f"{name} {count}" for name, count in sorted(self.by_backend.items())) or "none"
        lines = [f"model start-ups: {self.total} ({backends}); the full suite's budget is {BUDGET}"]
        lines += [f"  {count:3d}  {module}" for module, count in self.by_module.most_common()]
        if self.fast_tier_broken:
            lines.append(f"--fast: these tests started a model (mark them `model`): {self.fast_tier_broken}")
        return lines

    def close(self) -> None:
        if self._own:
            self.path.unlink(missing_ok=True)
            os.environ.pop(ENV, None)
