"""Request bodies in: JSON decoded within bounds, validated against one pydantic model,
every failure a 400 whose `param` names the field (`history[0]`, `messages[2].content`)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from chatllm.bridge.errors import ApiError, bad_request
from chatllm.bridge.field_types import kind
from chatllm.kernel.json_depth import MAX_JSON_DEPTH, deeper_than

M = TypeVar("M", bound=BaseModel)


def check_depth(text: str, what: str = "body") -> None:
    """400 before decoding JSON nested deeper than MAX_JSON_DEPTH (the decoder would recurse that deep)."""
    if deeper_than(text):
        raise bad_request(what, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")


def decode_json(text: str | bytes, what: str = "body") -> Any:
    """Parse JSON or raise a 400 naming `what` (bad syntax, too deep, lone surrogates)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad_request(
                what, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", code="invalid_encoding"
            ) from None
    check_depth(text, what)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise bad_request(what, f"invalid JSON: {exc}", code="invalid_json") from None
    reject_lone_surrogates(value, what)
    return value


def json_object(text: str | bytes, what: str = "body") -> dict[str, Any]:
    value = decode_json(text, what)
    if not isinstance(value, dict):
        raise bad_request(what, f"must be a JSON object, got {kind(value)}", code="invalid_json")
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


def field_path(location: tuple[int | str, ...]) -> str:
    """pydantic's error location as the client wrote the field: ("history", 0) -> "history[0]"."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not path:
            path = part
        elif part.startswith(("function-", "tagged-union")) or "[" in part:
            continue  # pydantic's names for union members and validators, not fields
        else:
            path += f".{part}"
    return path or "body"


def as_api_error(error: ValidationError) -> ApiError:
    """The first validation problem as a 400 naming its field."""
    first = error.errors(include_url=False)[0]
    param = field_path(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        return bad_request(param, "not a supported field", code="unsupported_field")
    if kind == "missing":
        return bad_request(param, "is required")
    message = str(first["msg"]).removeprefix("Value error, ")
    code = "unsupported_field" if kind == "unsupported_field" else "invalid_field"
    return bad_request(param, message[:1].lower() + message[1:], code=code)


class FieldProblem(Exception):
    """Raised by a model validator that checks several fields: names the one at fault (pydantic would say
    the whole body). Not a ValueError, so pydantic lets it through to `parse`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse(model: type[M], value: Any) -> M:
    """Validate decoded JSON against `model`; a 400 naming the field otherwise."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise as_api_error(exc) from None
    except FieldProblem as problem:
        raise bad_request(problem.field, problem.reason) from None
