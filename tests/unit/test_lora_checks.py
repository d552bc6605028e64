"""--lora-modules is checked before any engine starts: each refusal is one line naming the module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatllm.kernel.config import Config
from chatllm.server.engines.hf import HFEngine
from chatllm.server.engines.lora import adapter_specs, engine_arguments
from chatllm.server.errors import StartupError


def peft_dir(folder: Path, rank: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return folder


def test_adapters_are_read_with_their_rank(tmp_path: Path) -> None:
    a, b = peft_dir(tmp_path / "a", 8), peft_dir(tmp_path / "b", 12)
    specs = adapter_specs([f"sql={a}", f"pirate={b}"], "smol")
    assert [(s.name, s.path, s.rank) for s in specs] == [("sql", a, 8), ("pirate", b, 12)]
    # vLLM takes one of its allowed ranks: the next one up from the largest adapter's.
    assert engine_arguments(specs) == {"enable_lora": True, "max_loras": 2, "max_cpu_loras": 2, "max_lora_rank": 16}
    assert engine_arguments([]) == {}


@pytest.mark.parametrize("name", ["smol", "sql"])
def test_a_name_already_taken_is_refused(tmp_path: Path, name: str) -> None:
    a = peft_dir(tmp_path / "a", 8)
    with pytest.raises(StartupError, match=f"--lora-modules {name}=.*the name '{name}' is already taken"):
        adapter_specs([f"sql={a}", f"{name}={a}"], "smol")


def test_a_directory_that_is_not_a_peft_adapter_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    for folder in (tmp_path / "missing", tmp_path / "broken"):
        with pytest.raises(StartupError, match=r"not a PEFT LoRA directory .*adapter_config\.json"):
            adapter_specs([f"x={folder}"], "smol")


def test_a_rank_above_vllms_largest_is_refused(tmp_path: Path) -> None:
    specs = adapter_specs([f"big={peft_dir(tmp_path / 'big', 1024)}"], "smol")
    with pytest.raises(StartupError, match="rank 1024 is above vLLM's largest LoRA rank 512"):
        engine_arguments(specs)


def test_the_hf_backend_refuses_adapters_before_loading_anything(tmp_path: Path) -> None:
    config = Config.build(backend="hf", lora_modules=(f"sql={peft_dir(tmp_path / 'a', 8)}",))
    with pytest.raises(StartupError, match="--lora-modules needs --backend vllm"):
        HFEngine._load(config, source=None)  # type: ignore[arg-type]  # refused before the model is read
