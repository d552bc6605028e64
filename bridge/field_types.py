"""Field types of the request models: exactly what real clients send, a 400 naming the field otherwise.

Pydantic's lax mode would take `"12"` for an integer or `true` for a number; these types
accept what the protocols define and nothing else. `null` means "not given" everywhere
(real clients send it for unset options: LangChain's PaiEasEndpoint sends `"stop": null`).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from chatllm.kernel.json_depth import nesting_depth
from chatllm.kernel.sampling_fields import MAX_CHOICES
from chatllm.kernel.sampling_fields import MAX_LOGPROBS as MAX_TOP_LOGPROBS

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
TRUE_STRINGS = ("true", "1", "yes")
FALSE_STRINGS = ("false", "0", "no")
_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    return _KINDS.get(type(value), type(value).__name__)


def _fail(message: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError("invalid_field", message, {"got": kind(value)})


def _integer(value: Any) -> Any:
    """An integer; a float with no fraction (7.0) also passes, booleans and strings do not."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("must be an integer, got {got}", value)
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail("must be a number, got {got}", value)
    if not math.isfinite(value):
        raise PydanticCustomError("invalid_field", "must be a finite number")
    return float(value)


def _string(value: Any) -> Any:
    if not isinstance(value, str):
        raise _fail("must be a string, got {got}", value)
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise _fail("must be a boolean, got {got}", value)
    return value


def _legacy_boolean(value: Any) -> Any:
    """A JSON boolean, or the strings "true"/"false" (any case) that legacy clients send."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS + FALSE_STRINGS:
        return value.strip().lower() in TRUE_STRINGS
    raise _fail('must be a boolean (true/false or "True"/"False"), got {got}', value)


def _string_list(value: Any) -> Any:
    """A string or a list of strings (as `stop` is in both legacy and OpenAI requests)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise _fail("must be a string or a list of strings, got {got}", value)


def integer_in(minimum: int, maximum: int) -> Any:
    """The validator of an integer within [minimum, maximum]."""

    def in_range(value: Any) -> Any:
        value = _integer(value)
        if not minimum <= value <= maximum:
            raise PydanticCustomError("invalid_field", "must be between {minimum} and {maximum}, got {value}", locals())
        return value

    return in_range


def bounded_integer(minimum: int, maximum: int) -> Any:
    """An integer within [minimum, maximum], in the schema too."""
    return Annotated[int, BeforeValidator(integer_in(minimum, maximum)), Field(ge=minimum, le=maximum)]


# Integers with their ranges (the protobuf field's, or the API's), in the schema too.
Count = Annotated[int, BeforeValidator(integer_in(1, UINT32_MAX)), Field(ge=1, le=UINT32_MAX)]
UInt32 = Annotated[int, BeforeValidator(integer_in(0, UINT32_MAX)), Field(ge=0, le=UINT32_MAX)]
TopK = Annotated[int, BeforeValidator(integer_in(0, INT32_MAX)), Field(ge=0, le=INT32_MAX)]
Seed = Annotated[int, BeforeValidator(integer_in(0, UINT64_MAX)), Field(ge=0, le=UINT64_MAX)]
Choices = Annotated[int, BeforeValidator(integer_in(1, MAX_CHOICES)), Field(ge=1, le=MAX_CHOICES)]
TopLogprobs = Annotated[int, BeforeValidator(integer_in(0, MAX_TOP_LOGPROBS)), Field(ge=0, le=MAX_TOP_LOGPROBS)]
Number = Annotated[float, BeforeValidator(_number)]
String = Annotated[str, BeforeValidator(_string)]
Boolean = Annotated[bool, BeforeValidator(_boolean)]
LegacyBoolean = Annotated[
    bool,
    BeforeValidator(_legacy_boolean),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "string", "enum": ["true", "false", "True", "False", "TRUE", "FALSE", "1", "0", "yes", "no"]},
            ]
        }
    ),
]
StringList = Annotated[
    list[str],
    BeforeValidator(_string_list),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


# chat_template_kwargs travel as a protobuf Struct: every JSON object in it is three nested messages,
# and protobuf refuses to build or parse a message nested deeper than 100 (upb's limit), which a
# request 34 objects deep reaches. Deeper than any template variable needs, and well inside that.
MAX_TEMPLATE_KWARGS_DEPTH = 32


def _template_kwargs(value: Any) -> Any:
    if isinstance(value, dict) and nesting_depth(json.dumps(value)) > MAX_TEMPLATE_KWARGS_DEPTH:
        raise _fail(f"nested deeper than {MAX_TEMPLATE_KWARGS_DEPTH} levels", value)
    return value


TemplateKwargs = Annotated[dict[str, Any], AfterValidator(_template_kwargs)]
