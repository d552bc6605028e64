"""The committed stubs must be what protoc generates from the committed .proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate_stubs", REPO / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.generate(tmp_path)
    assert written, "protoc produced nothing"
    for path in written:
        committed = REPO / "proto" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make proto`"


def test_every_rpc_and_field_is_documented() -> None:
    lines = (REPO / "proto" / "chatllm" / "v1" / "chatllm.proto").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("rpc "):
            assert lines[i - 1].strip().startswith("//"), f"undocumented RPC: {stripped}"
