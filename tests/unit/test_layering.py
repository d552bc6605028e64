"""Who may import whom: the bridge talks to the server only over gRPC, and tests run bench/ scripts as
programs, never as libraries (issue 12). A new import across these lines fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("bridge", "chatllm.server"), ("tests", "bench")],
)
def test_no_module_imports_across_the_line(folder: str, forbidden: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in imported_modules(path) if m.split(".")[: len(forbidden.split("."))] == forbidden.split(".")
        )
        for path in (REPO / folder).rglob("*.py")
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}
    assert any((REPO / folder).rglob("*.py"))  # the walk saw files: an empty glob would pass anything
