"""The sampling table's fields in the request bodies: each protocol's body model gets the fields the
table spells for it (chatllm.kernel.sampling_fields: name, type, description), and `sampling_pb` copies
them into the request's SamplingParams. A field added to the table reaches the bodies, the OpenAPI
document and the gRPC request without an edit here."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from chatllm.bridge.field_types import (
    INT32_MAX,
    UINT32_MAX,
    UINT64_MAX,
    Boolean,
    LegacyBoolean,
    Number,
    StringList,
    UInt32,
    bounded_integer,
)
from chatllm.kernel.sampling_fields import FIELDS_BY_NAME, SamplingField, Spelling, spelled_fields
from chatllm.proto import pb


def _token_ids_as_keys(bias: dict[str, float]) -> dict[int, float]:
    for key in bias:
        if not key.isdigit() or int(key) > UINT32_MAX:
            raise PydanticCustomError("invalid_field", "keys are token ids, got {key}", {"key": key})
    return {int(key): value for key, value in bias.items()}


# OpenAI's logit_bias: token ids as JSON object keys (strings), converted to ints.
TokenBias = Annotated[
    dict[str, Number],
    AfterValidator(_token_ids_as_keys),
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "number"}}),
]
_INTEGER_LIMITS = {
    "count": (1, UINT32_MAX),
    "uint32": (0, UINT32_MAX),
    "top_k": (0, INT32_MAX),
    "seed": (0, UINT64_MAX),
}


def body_type(field: SamplingField, spelling: Spelling) -> Any:
    """The pydantic type of a table field in a body: the proto's integer range narrowed to the table's."""
    if field.kind in _INTEGER_LIMITS:
        low, high = _INTEGER_LIMITS[field.kind]
        return bounded_integer(int(max(low, field.low if field.low is not None else low)),
                               int(min(high, field.high if field.high is not None else high)))  # fmt: skip
    if field.kind == "boolean":
        return LegacyBoolean if spelling == "legacy" else Boolean
    return {"number": Number, "strings": StringList, "token_ids": list[UInt32], "token_bias": TokenBias}[field.kind]


def sampling_body(spelling: Spelling, base: type[BaseModel]) -> type[BaseModel]:
    """A body model with the table's fields as `spelling` names them (all optional: null is "not given")."""
    fields: dict[str, Any] = {
        name: (body_type(f, spelling) | None, Field(None, description=f.doc))
        for f in spelled_fields(spelling)
        if (name := f.spelled(spelling))
    }
    return create_model(f"{spelling.title()}SamplingFields", __base__=base, **fields)


def sampling_pb(body: BaseModel, spelling: Spelling, **derived: Any) -> pb.SamplingParams:
    """The request's SamplingParams: the body's table fields as given, plus the fields the protocol derives
    (`derived`, by proto name); unset ones stay unset, for the server's defaults."""
    values = {f.name: getattr(body, name) for f in spelled_fields(spelling) if (name := f.spelled(spelling))}
    values.update(derived)
    return pb.SamplingParams(**{name: value for name, value in values.items() if value is not None})


def client_field(server_field: str, spelling: Spelling) -> str:
    """A sampling field the server names (`sampling.top_p`) as a client of `spelling` wrote it."""
    name = server_field.removeprefix("sampling.")
    field = FIELDS_BY_NAME.get(name)
    return (field.spelled(spelling) if field else None) or name
