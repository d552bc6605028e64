"""Who may import whom. The `chatllm.*` packages form a DAG:

    kernel                      configuration, flags, access tokens, TLS, input limits, fleet state
    proto, retrieval            the contract; the knowledge base's library
    server | clients            the gRPC server; the Python client (never each other)
    bridge                      the HTTP front; talks to servers through the client core, never imports server
    clients.cli                 the `chatllm` command: the composition root, may import anything

Every import is walked, inside functions too (an import moved into a function to dodge a cycle is
still a cycle). Tests run bench/ scripts as programs, never import them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {
    "chatllm.kernel": "kernel",
    "chatllm.proto": "proto",
    "chatllm.retrieval": "retrieval",
    "chatllm.server": "server",
    "chatllm.clients": "clients",
    "chatllm.bridge": "bridge",
}
# Each package and the chatllm packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "chatllm.kernel": set(),
    "chatllm.proto": set(),
    "chatllm.retrieval": {"chatllm.kernel"},
    "chatllm.server": {"chatllm.kernel", "chatllm.proto", "chatllm.retrieval"},
    "chatllm.clients": {"chatllm.kernel", "chatllm.proto"},
    "chatllm.bridge": {"chatllm.kernel", "chatllm.proto", "chatllm.clients"},
    "chatllm.clients.cli": {"*"},
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an `import` / `from ... import` names, wherever it stands in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def layer_of(module: str) -> str | None:
    """The layer (key of ALLOWED) a module belongs to: the longest matching prefix."""
    best = None
    for layer in ALLOWED:
        if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO)
    for package, folder in FOLDERS.items():
        if relative.parts[0] == folder:
            parts = [*package.split("."), *relative.with_suffix("").parts[1:]]
            return ".".join(p for p in parts if p != "__init__")
    raise AssertionError(path)


def package_graph() -> dict[str, set[tuple[str, str]]]:
    """layer -> {(importing module, imported chatllm module)} across layers."""
    edges: dict[str, set[tuple[str, str]]] = {}
    for folder in FOLDERS.values():
        for path in (REPO / folder).rglob("*.py"):
            if "_pb2" in path.name:
                continue
            source = module_name(path)
            here = layer_of(source)
            assert here is not None, source
            for target in imported_modules(path):
                there = layer_of(target)
                if there is not None and there != here:
                    edges.setdefault(here, set()).add((source, target))
    return edges


def test_every_chatllm_import_follows_the_layers() -> None:
    graph = package_graph()
    offenders = sorted(
        f"{source} imports {target}"
        for layer, edges in graph.items()
        for source, target in edges
        if "*" not in ALLOWED[layer] and layer_of(target) not in ALLOWED[layer]
    )
    assert offenders == []
    # The walk saw the cross-layer imports it should: an empty graph would pass anything.
    assert {"chatllm.server", "chatllm.bridge", "chatllm.clients.cli"} <= graph.keys()


def test_the_layers_have_no_cycle() -> None:
    allowed = {layer: {t for t in targets if t != "*"} for layer, targets in ALLOWED.items()}
    seen: set[str] = set()

    def visit(layer: str, path: tuple[str, ...]) -> None:
        assert layer not in path, f"cycle: {' -> '.join((*path, layer))}"
        if layer in seen:
            return
        for target in allowed[layer]:
            visit(target, (*path, layer))
        seen.add(layer)

    for layer in allowed:
        visit(layer, ())


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The walk finds an import hidden inside a function."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from chatllm.server.app import ChatLLMServer\n")
    assert "chatllm.server.app" in imported_modules(module)
    assert layer_of("chatllm.server.app") == "chatllm.server"
    assert layer_of("chatllm.clients.cli.serve") == "chatllm.clients.cli"


@pytest.mark.parametrize(("folder", "forbidden"), [("tests", "bench")])
def test_tests_run_bench_scripts_as_programs(folder: str, forbidden: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in imported_modules(path) if m.split(".")[0] == forbidden)
        for path in (REPO / folder).rglob("*.py")
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}
    assert any((REPO / folder).rglob("*.py"))
