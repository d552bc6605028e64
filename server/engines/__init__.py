"""Engine selection: `--backend auto|hf|vllm` (the seed's "none" is hf)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import AsyncIterator

from chatllm.kernel.config import Config
from chatllm.server.engines.base import Engine, EngineInfo, EngineOutput, EngineStats, Finish
from chatllm.server.errors import StartupError
from chatllm.server.model_source import ModelSource

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineInfo", "EngineOutput", "EngineStats", "Finish", "choose_backend", "running_engine"]


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(config: Config) -> tuple[str, str]:
    """The backend to use and why (logged at start-up)."""
    wanted = config.engine.engine_backend
    if wanted == "hf":
        return "hf", "--backend hf"
    if wanted == "vllm":
        if not vllm_installed():
            raise StartupError("--backend vllm: vLLM is not installed (make run installs it; or pip install vllm)")
        return "vllm", "--backend vllm"
    if not vllm_installed():
        return "hf", "auto: vLLM is not installed"
    from chatllm.server.engines.vllm import vllm_unusable_reason

    reason = vllm_unusable_reason(config)
    if reason:
        return "hf", f"auto: vLLM cannot run here ({reason})"
    return "vllm", "auto: vLLM is installed and supports this device"


@contextlib.asynccontextmanager
async def running_engine(config: Config, source: ModelSource) -> AsyncIterator[Engine]:
    """Start the chosen engine; stop it (and any processes it spawned) on exit."""
    backend, why = choose_backend(config)
    log.info("engine backend: %s (%s)", backend, why)
    start_log = config.engine.engine_start_log
    record_start(start_log, "starting", backend, source)
    if backend == "vllm":
        from chatllm.server.engines.vllm import VLLMEngine

        async with VLLMEngine.running(config, source) as engine:
            record_start(start_log, "ready", backend, source)
            yield engine
    else:
        from chatllm.server.engines.hf import HFEngine

        async with HFEngine.running(config, source) as hf_engine:
            record_start(start_log, "ready", backend, source)
            yield hf_engine


def record_start(path: str | None, event: str, backend: str, source: ModelSource) -> None:
    """A line for --engine-start-log: `starting` when an engine begins to start, `ready` once it serves
    (lines this short are appended whole even when several processes share the file)."""
    if path:
        with open(path, "a", encoding="utf-8") as log_file:
            log_file.write(f"{event}\t{backend}\t{source.name}\t{os.getpid()}\n")
