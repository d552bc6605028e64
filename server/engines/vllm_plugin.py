"""A vLLM general plugin (entry point group `vllm.general_plugins`, loaded by vLLM in every process it
starts): on CPU, tokens without a LoRA adapter must get no LoRA update.

vLLM 0.32's CPU LoRA path (`vllm.lora.ops.torch_ops`, used by `PunicaWrapperCPU`) indexes the stacked
adapter weights with each token's adapter slot, and a token of the base model has slot -1, which
PyTorch reads as "the last slot": in a batch that mixes base-model and adapter requests, the base
requests are computed with an adapter's weights (their answers change). The GPU kernels skip slot -1.
These wrappers make the CPU ops do the same: compute with a valid slot, then leave the rows of
slot -1 as they were (shrink: zero, so nothing is expanded; expand: the base output untouched).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

_PATCHED = "_chatllm_no_lora_rows"


def honouring_no_lora(op: Callable[..., Any], untouched: bool) -> Callable[..., Any]:
    """Wrap a bgmv op: compute with a valid slot, then give slot -1's rows back: zero (`untouched` False,
    a shrink: nothing is expanded from them) or what they held before (an expand: the base output)."""

    @functools.wraps(op)
    def fixed(
        inputs: torch.Tensor,
        weights: torch.Tensor,
        output: torch.Tensor,
        indices: torch.Tensor,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        none = indices < 0
        if not bool(none.any()) or none.shape[0] != output.shape[0]:
            return op(inputs, weights, output, indices, *args, **kwargs)
        before = output[none].clone() if untouched else 0
        op(inputs, weights, output, indices.clamp(min=0), *args, **kwargs)
        output[none] = before
        return None

    setattr(fixed, _PATCHED, True)
    return fixed


def shrink_honouring_no_lora(shrink: Callable[..., Any]) -> Callable[..., Any]:
    return honouring_no_lora(shrink, untouched=False)


def expand_honouring_no_lora(expand: Callable[..., Any]) -> Callable[..., Any]:
    return honouring_no_lora(expand, untouched=True)


def register() -> None:
    """Called by vLLM in each of its processes (see pyproject.toml's entry points)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import vllm.lora.ops.torch_ops as ops
    import vllm.lora.ops.torch_ops.lora_ops as lora_ops

    wrappers = {"bgmv_shrink": shrink_honouring_no_lora, "bgmv_expand": expand_honouring_no_lora}
    wrappers["bgmv_expand_slice"] = expand_honouring_no_lora
    for name, wrap in wrappers.items():
        original = getattr(lora_ops, name)
        if getattr(original, _PATCHED, False):
            continue
        fixed = wrap(original)
        # The sgmv_* (prefill) ops call these through lora_ops' globals; PunicaWrapperCPU imported the names.
        for module in (lora_ops, ops, sys.modules.get("vllm.lora.punica_wrapper.punica_cpu")):
            if module is not None:
                setattr(module, name, fixed)
