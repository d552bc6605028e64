"""The CPU LoRA ops fix: tokens of the base model (adapter slot -1) get no LoRA update, with vLLM's real ops."""

from __future__ import annotations

import pytest
import torch

from chatllm.server.engines.vllm_plugin import expand_honouring_no_lora, shrink_honouring_no_lora

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops", reason="vLLM is not installed")


def test_base_rows_are_left_alone_and_adapter_rows_match_the_original() -> None:
    torch.manual_seed(0)
    tokens, hidden, rank, out = 4, 8, 2, 6
    x = torch.randn(tokens, hidden)
    lora_a = torch.randn(1, 1, rank, hidden)  # one adapter slot
    lora_b = torch.randn(1, 1, out, rank)
    indices = torch.tensor([0, -1, 0, -1])  # tokens 1 and 3 belong to base-model requests

    shrunk = torch.zeros(tokens, rank)
    bgmv_shrink = getattr(lora_ops.bgmv_shrink, "__wrapped__", lora_ops.bgmv_shrink)
    bgmv_expand = getattr(lora_ops.bgmv_expand, "__wrapped__", lora_ops.bgmv_expand)
    shrink_honouring_no_lora(bgmv_shrink)(x, lora_a, shrunk, indices, 1.0)
    assert torch.all(shrunk[1] == 0) and torch.all(shrunk[3] == 0)
    expected = torch.zeros(tokens, rank)
    bgmv_shrink(x, lora_a, expected, torch.zeros(tokens, dtype=torch.long), 1.0)
    assert torch.allclose(shrunk[[0, 2]], expected[[0, 2]])

    base = torch.randn(tokens, out)
    result = base.clone()
    expand_honouring_no_lora(bgmv_expand)(shrunk, lora_b, result, indices, add_inputs=True)
    assert torch.equal(result[[1, 3]], base[[1, 3]])  # the base model's output untouched
    assert not torch.allclose(result[[0, 2]], base[[0, 2]])  # the adapter's tokens changed


def test_the_unpatched_op_reads_slot_minus_one_as_the_last_adapter() -> None:
    """Why the fix exists: vLLM 0.32's CPU op applies the last adapter to a base-model token."""
    # A vLLM engine started in this process loads the plugin: take the op from under the wrapper.
    original = getattr(lora_ops.bgmv_shrink, "__wrapped__", lora_ops.bgmv_shrink)
    x = torch.ones(1, 4)
    lora_a = torch.ones(1, 1, 2, 4)
    shrunk = torch.zeros(1, 2)
    original(x, lora_a, shrunk, torch.tensor([-1]), 1.0)
    assert torch.all(shrunk != 0)
