from __future__ import annotations

import pytest
from transformers import GenerationConfig

from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument
from chatllm.server.sampling import SEED_TOP_K, SEED_TOP_P, SamplingDefaults, from_pb

DEFAULTS = SamplingDefaults(max_new_tokens=2048, temperature=0.95, top_k=30, top_p=0.8)


def test_unset_fields_take_defaults() -> None:
    options = from_pb(None, DEFAULTS)
    assert (options.max_new_tokens, options.temperature, options.top_k, options.top_p) == (2048, 0.95, 30, 0.8)
    assert not options.greedy


def test_request_values_win_and_zero_temperature_is_greedy() -> None:
    options = from_pb(pb.SamplingParams(temperature=0.0, top_k=5, max_new_tokens=7, stop=["x"]), DEFAULTS)
    assert options.greedy and options.top_k == 5 and options.max_new_tokens == 7 and options.stop == ("x",)
    assert from_pb(pb.SamplingParams(do_sample=False), DEFAULTS).greedy


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (pb.SamplingParams(temperature=-0.1), "sampling.temperature"),
        (pb.SamplingParams(top_p=1.01), "sampling.top_p"),
        (pb.SamplingParams(top_k=-3), "sampling.top_k"),
        (pb.SamplingParams(repetition_penalty=0.0), "sampling.repetition_penalty"),
        (pb.SamplingParams(stop=["a"] * 17), "sampling.stop"),
        (pb.SamplingParams(stop=["x" * 300]), "sampling.stop"),
    ],
)
def test_bad_values_name_the_field(params: pb.SamplingParams, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        from_pb(params, DEFAULTS)
    assert err.value.field == field


def test_defaults_resolution_order() -> None:
    # flags win
    assert SamplingDefaults.resolve(10, 0.5, 7, 0.6, GenerationConfig(top_k=3, top_p=0.2)).top_k == 7
    # then the model's explicit generation config
    resolved = SamplingDefaults.resolve(10, 0.5, None, None, GenerationConfig(top_k=3, top_p=0.2))
    assert (resolved.top_k, resolved.top_p) == (3, 0.2)
    # then the seed's request defaults (transformers' class defaults do not count)
    resolved = SamplingDefaults.resolve(10, 0.5, None, None, GenerationConfig())
    assert (resolved.top_k, resolved.top_p) == (SEED_TOP_K, SEED_TOP_P)


def test_tiny_temperature_is_greedy_not_an_overflow() -> None:
    assert from_pb(pb.SamplingParams(temperature=1e-30), DEFAULTS).greedy
    assert not from_pb(pb.SamplingParams(temperature=0.01), DEFAULTS).greedy
