"""The sampling table (chatllm.kernel.sampling_fields) against the proto, vLLM and the server's checks:
a field missing from the table, a vLLM name vLLM does not know, a range the server does not enforce or a
backend refusal the table does not say all fail here."""

from __future__ import annotations

import pytest

from chatllm.kernel.sampling_fields import FIELDS_BY_NAME, SAMPLING_FIELDS, SamplingField
from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument, Unsupported
from chatllm.server.sampling import SamplingDefaults, SamplingOptions, from_pb, refuse_unsupported

DEFAULTS = SamplingDefaults(max_new_tokens=2048, temperature=0.95, top_k=30, top_p=0.8)
# A value other than the default for each field (what a request that uses the field sends).
GIVEN = {f.name: f.example for f in SAMPLING_FIELDS}


def test_every_field_of_the_proto_is_in_the_table_and_nothing_else() -> None:
    proto = [field.name for field in pb.SamplingParams.DESCRIPTOR.fields]
    assert proto == [f.name for f in SAMPLING_FIELDS]  # the same fields, in the proto's order
    assert all(GIVEN[name] != f.default for name, f in FIELDS_BY_NAME.items())


def test_every_vllm_name_is_an_argument_of_vllms_sampling_params() -> None:
    import msgspec
    from vllm import SamplingParams

    arguments = {field.name for field in msgspec.structs.fields(SamplingParams)}
    assert {f.vllm for f in SAMPLING_FIELDS if f.vllm} <= arguments


def test_the_vllm_mapping_passes_every_field_it_names() -> None:
    from chatllm.server.engines.vllm import sampling_params

    params = sampling_params(SamplingOptions.resolved(**GIVEN))
    for field in SAMPLING_FIELDS:
        if field.vllm is None:
            continue
        sent = getattr(params, field.vllm)
        expected = GIVEN[field.name]
        if field.kind == "token_bias":
            expected = dict(expected)
        elif isinstance(expected, tuple):
            expected = list(expected)
        assert sent == pytest.approx(expected), field.name


def test_a_request_that_gives_every_field_resolves_to_what_it_gave() -> None:
    request = {**GIVEN, "logit_bias": dict(GIVEN["logit_bias"])}
    options = from_pb(pb.SamplingParams(**request), DEFAULTS)
    for name, given in GIVEN.items():  # floats went through float32
        assert options.values[name] == (pytest.approx(given) if isinstance(given, float) else given), name
    assert options.greedy  # do_sample false


def test_unset_fields_take_the_tables_defaults_or_the_servers() -> None:
    options = from_pb(None, DEFAULTS)
    for field in SAMPLING_FIELDS:
        expected = (
            getattr(DEFAULTS, field.name)
            if field.name in ("max_new_tokens", "temperature", "top_k", "top_p")
            else field.default
        )
        assert options.values[field.name] == expected, field.name


def outside(field: SamplingField) -> list[float]:
    """Values just outside the field's range that its proto type can carry (no negative unsigned ints)."""
    values = []
    if field.low is not None:
        values.append(field.low if field.low_open else field.low - 1)
    if field.high is not None:
        values.append(field.high + 1)
    signed = field.kind in ("number", "top_k")
    return [v for v in values if signed or v >= 0]


RANGED = [(f.name, value) for f in SAMPLING_FIELDS if f.kind != "token_bias" for value in outside(f)]


@pytest.mark.parametrize(("name", "value"), RANGED)
def test_a_value_outside_the_tables_range_is_refused_naming_the_field(name: str, value: float) -> None:
    with pytest.raises(InvalidArgument) as err:
        from_pb(pb.SamplingParams(**{name: value}), DEFAULTS)
    assert err.value.field == f"sampling.{name}"


def test_a_logit_bias_outside_the_tables_range_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        from_pb(pb.SamplingParams(logit_bias={5: 150.0}), DEFAULTS)
    assert err.value.field == "sampling.logit_bias" and "between -100 and 100" in err.value.description


@pytest.mark.parametrize("field", SAMPLING_FIELDS, ids=lambda f: f.name)
def test_the_hf_backend_refuses_exactly_the_fields_the_table_says_it_cannot_honour(field: SamplingField) -> None:
    options = SamplingOptions.resolved(**{field.name: GIVEN[field.name]})
    if "hf" in field.backends:
        refuse_unsupported(options, "hf")
        return
    with pytest.raises(Unsupported) as err:
        refuse_unsupported(options, "hf")
    assert err.value.field == f"sampling.{field.name}" and "not supported by the hf backend" in err.value.description


def as_json(field: SamplingField, value: object) -> object:
    """A GIVEN value as a client writes it in a JSON body."""
    if field.kind == "token_bias":
        return {str(token): bias for token, bias in value}  # type: ignore[attr-defined]
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("spelling", ["openai", "legacy"])
def test_each_body_carries_the_fields_the_table_spells_for_it_into_the_request(spelling: str) -> None:
    from chatllm.bridge.legacy.request import LegacyRequest
    from chatllm.bridge.openai.request import ChatCompletionRequest
    from chatllm.bridge.validation import parse
    from chatllm.kernel.sampling_fields import spelled_fields

    fields = spelled_fields(spelling)  # type: ignore[arg-type]
    assert fields
    given = {f.spelled(spelling): as_json(f, GIVEN[f.name]) for f in fields}  # type: ignore[arg-type]
    if spelling == "openai":
        body = {"messages": [{"role": "user", "content": "hi"}], **given}
        sampling = parse(ChatCompletionRequest, body).to_generate_request("r").sampling
    else:
        sampling = parse(LegacyRequest, {"prompt": "hi", **given}).to_generate_request("http", "r", []).sampling
    for field in fields:
        sent = getattr(sampling, field.name)
        expected = GIVEN[field.name]
        if field.kind == "token_bias":
            sent, expected = dict(sent), dict(expected)  # type: ignore[arg-type]
        elif isinstance(expected, tuple):
            sent = tuple(sent)
        assert sent == (pytest.approx(expected) if isinstance(expected, float) else expected), field.name
