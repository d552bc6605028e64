"""Counting model start-ups across a test run: every engine start, in the test process and in the
`chatllm` processes it spawns, appends lines to one file (--engine-start-log, which subprocesses
inherit as CHATLLM_ENGINE_START_LOG): `starting` when it begins, `ready` once the model is loaded
and serving. The run charges each line to the test module that caused it and prints the counts at
the end: start-ups are the engines that became ready; starts a test stopped or that were refused
before that are listed beside them."""

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
        self._seen = len(self._lines())
        self.ready: collections.Counter[str] = collections.Counter()  # by backend
        self.starting = 0
        self.by_module: collections.Counter[str] = collections.Counter()  # ready engines
        self.fast_tier_broken: list[str] = []  # tests that started an engine in a --fast run

    def _lines(self) -> list[list[str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line.split("\t") for line in text.splitlines()]

    def attribute(self, module: str) -> int:
        """Charge the lines since the last call to `module`; returns how many engines began to start."""
        lines = self._lines()
        new = lines[self._seen :]
        self._seen = len(lines)
        started = 0
        for event, backend, *_ in new:
            if event == "ready":
                self.ready[backend] += 1
                self.by_module[module] += 1
            else:
                started += 1
        self.starting += started
        return started

    @property
    def total(self) -> int:
        return sum(self.ready.values())

    def summary(self) -> list[str]:
        backends = ", ".join(f"{name} {count}" for name, count in sorted(self.ready.items())) or "none"
        lines = [f"model start-ups: {self.total} ({backends}); the full suite's budget is {BUDGET}"]
        if self.starting > self.total:
            lines.append(
                f"  and {self.starting - self.total} more starts stopped or refused before the engine was ready"
            )
        lines += [f"  {count:3d}  {module}" for module, count in self.by_module.most_common()]
        if self.fast_tier_broken:
            lines.append(f"--fast: these tests started a model (mark them `model`): {self.fast_tier_broken}")
        return lines

    def close(self) -> None:
        if self._own:
            self.path.unlink(missing_ok=True)
            os.environ.pop(ENV, None)
