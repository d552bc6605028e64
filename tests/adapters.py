"""A real LoRA adapter for the built-in model, made with peft (non-zero weights, so it changes answers)."""

from __future__ import annotations

from pathlib import Path


def make_lora_adapter(model_dir: Path, out_dir: Path, seed: int = 7) -> Path:
    """Save a rank-8 q/v LoRA adapter of the built-in model under `out_dir` (PEFT format) and return it."""
    if (out_dir / "adapter_config.json").is_file():
        return out_dir
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out_dir)
    return out_dir
