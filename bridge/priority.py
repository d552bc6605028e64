"""A request's priority class as the bridge's clients ask for it (chatllm.kernel.priority): the body's
`priority` (OpenAI and legacy JSON, WebSocket frames), OpenAI's `service_tier` (`priority` is
interactive, `flex` bulk), or the `X-Priority` header (a WebSocket's handshake header applies to each
of its frames). The body wins over the header; the server clamps the class to the token's ceiling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from chatllm.bridge.errors import bad_request
from chatllm.kernel.priority import CLASS_NAMES, DESCRIPTION, Priority, parse_priority
from chatllm.proto import pb

HEADER = "X-Priority"
_PB = {
    Priority.INTERACTIVE: pb.PRIORITY_INTERACTIVE,
    Priority.DEFAULT: pb.PRIORITY_DEFAULT,
    Priority.BULK: pb.PRIORITY_BULK,
}
SERVICE_TIERS = {"auto": None, "default": None, "priority": Priority.INTERACTIVE, "flex": Priority.BULK}


def _priority(value: Any) -> Priority:
    try:
        return parse_priority(value)
    except ValueError:
        raise PydanticCustomError("invalid_field", DESCRIPTION) from None


PriorityClass = Annotated[
    Priority,
    BeforeValidator(_priority),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "enum": list(CLASS_NAMES)}, {"type": "integer"}],
            "description": "priority class: " + DESCRIPTION + "; never above the token's (token file `priority=`)",
        }
    ),
]


def priority_pb(value: Priority | None) -> pb.Priority.ValueType:
    return _PB[value] if value is not None else pb.PRIORITY_UNSPECIFIED


def header_priority(headers: Mapping[str, str]) -> pb.Priority.ValueType:
    """The class `X-Priority` asks for (UNSPECIFIED without one); a 400 naming the header for a bad value."""
    raw = headers.get(HEADER)
    if raw is None:
        return pb.PRIORITY_UNSPECIFIED
    try:
        return priority_pb(parse_priority(raw))
    except ValueError:
        raise bad_request(HEADER, DESCRIPTION) from None


def apply_header(request: pb.GenerateRequest, headers: Mapping[str, str]) -> None:
    """Set the request's priority from `X-Priority` unless its body asked for one."""
    if request.priority == pb.PRIORITY_UNSPECIFIED:
        request.priority = header_priority(headers)
