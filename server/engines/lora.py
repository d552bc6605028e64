"""LoRA adapters for the vLLM engine (--lora-modules NAME=PATH), loaded the way `vllm serve` does:
every adapter is checked and loaded with `add_lora` at start-up (a bad adapter handed straight to
`generate` would kill the engine), then requests name one with a `LoRARequest`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatllm.server.engines.base import Adapter
from chatllm.server.errors import StartupError

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path
    rank: int


def adapter_specs(modules: Sequence[str], base_name: str) -> list[AdapterSpec]:
    """Parse and check --lora-modules (NAME=PATH, PEFT directories) before the engine starts."""
    specs: list[AdapterSpec] = []
    for module in modules:
        name, _, given = module.partition("=")
        path = Path(given).expanduser()
        if name == base_name or any(s.name == name for s in specs):
            raise StartupError(f"--lora-modules {module}: the name {name!r} is already taken")
        config_file = path / "adapter_config.json"
        try:
            rank = int(json.loads(config_file.read_text())["r"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StartupError(f"--lora-modules {module}: not a PEFT LoRA directory ({config_file}: {exc})") from None
        specs.append(AdapterSpec(name, path, rank))
    return specs


def engine_arguments(specs: Sequence[AdapterSpec]) -> dict[str, Any]:
    """AsyncEngineArgs for serving these adapters (all of them in one batch, next to the base model)."""
    if not specs:
        return {}
    rank = max(s.rank for s in specs)
    allowed = next((r for r in VLLM_LORA_RANKS if r >= rank), None)
    if allowed is None:
        raise StartupError(f"--lora-modules: rank {rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}")
    return {"enable_lora": True, "max_loras": len(specs), "max_cpu_loras": len(specs), "max_lora_rank": allowed}


class LoadedAdapters:
    """The adapters the engine has loaded, by name, as LoRARequests."""

    def __init__(self) -> None:
        self.requests: dict[str, Any] = {}
        self.adapters: list[Adapter] = []

    async def load(self, llm: Any, specs: Sequence[AdapterSpec]) -> None:
        from vllm.lora.request import LoRARequest

        for number, spec in enumerate(specs, 1):
            request = LoRARequest(spec.name, number, str(spec.path))
            try:
                await llm.add_lora(request)
            except Exception as exc:  # vLLM raises a plain Exception naming the worker's error
                raise StartupError(f"--lora-modules {spec.name}={spec.path}: vLLM could not load it: {exc}") from None
            self.requests[spec.name] = request
            self.adapters.append(Adapter(spec.name, str(spec.path), time.time()))

    def request_for(self, name: str | None) -> Any:
        return None if name is None else self.requests[name]
