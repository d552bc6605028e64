"""Typed reads of JSON request fields; a wrong type is a 400 that names the field.

`null` counts as "not given" everywhere, because real clients send it for unset
options (LangChain's PaiEasEndpoint sends `"stop": null`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from chatllm.bridge.errors import bad_request

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
TRUE_STRINGS = ("true", "1", "yes")
FALSE_STRINGS = ("false", "0", "no")


def json_object(text: str | bytes, what: str = "body") -> dict[str, Any]:
    """Parse a JSON object or raise 400 naming `what`."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise bad_request(what, f"invalid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise bad_request(what, f"must be a JSON object, got {type(value).__name__}", code="invalid_json")
    reject_lone_surrogates(value, what)
    return value


def reject_lone_surrogates(value: Any, what: str = "body") -> None:
    """400 when parsed JSON holds a lone UTF-16 surrogate.

    `json.loads` turns an escape such as `\\udc80` into a lone surrogate, which is not
    Unicode: it cannot be encoded as UTF-8, so protobuf (and the gRPC call) would fail on it."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        surrogate = f"\\u{ord(exc.object[exc.start]):04x}"
        raise bad_request(
            what, f"contains {surrogate}, a lone UTF-16 surrogate, which is not valid Unicode", code="invalid_encoding"
        ) from None


def string(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(name, f"must be a string, got {_kind(value)}")
    return value


def boolean(obj: Mapping[str, Any], name: str) -> bool | None:
    """A JSON boolean, or the strings "true"/"false" (any case) that legacy clients send."""
    value = obj.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS + FALSE_STRINGS:
        return value.strip().lower() in TRUE_STRINGS
    raise bad_request(name, f'must be a boolean (true/false or "True"/"False"), got {_kind(value)}')


def integer(obj: Mapping[str, Any], name: str, minimum: int, maximum: int) -> int | None:
    """An integer (a float with no fraction also passes) within [minimum, maximum]."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(name, f"must be an integer, got {_kind(value)}")
    if not minimum <= value <= maximum:
        raise bad_request(name, f"must be between {minimum} and {maximum}, got {value}")
    return value


def number(obj: Mapping[str, Any], name: str) -> float | None:
    """A finite number; its range is checked by the server (one place for the limits)."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(name, f"must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise bad_request(name, "must be a finite number")
    return float(value)


def string_list(obj: Mapping[str, Any], name: str) -> list[str]:
    """A string or a list of strings (as `stop` is in both legacy and OpenAI requests)."""
    value = obj.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise bad_request(name, f"must be a string or a list of strings, got {_kind(value)}")


def _kind(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)
