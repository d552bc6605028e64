"""Rules of a request that the bridge checks at its door and the server checks again (and the web page
reads from /api/info): knowledge-base names and the roles of a conversation's messages. One copy here,
so the two sides cannot drift apart."""

from __future__ import annotations

import re

DEFAULT_KNOWLEDGE_BASE = "default"  # what an empty knowledge-base name means
KNOWLEDGE_BASE_NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
KNOWLEDGE_BASE_NAME_RULE = "use 1-64 letters, digits, '_' or '-'"
_KNOWLEDGE_BASE_NAME = re.compile(KNOWLEDGE_BASE_NAME_PATTERN)

MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
# What GenerateRequest.channel names: the bridge's protocols, the CLI, and gRPC (empty). Any other value
# is kept in the history export but counted as "other" in metrics, so a client cannot mint label values.
CHANNELS = frozenset({"grpc", "http", "ws", "openai", "anthropic", "cli"})
MAX_CHANNEL_CHARS = 64


def channel_label(channel: str) -> str:
    """The metrics label of a request's channel: its name when it is one of CHANNELS, else "other"."""
    channel = channel or "grpc"
    return channel if channel in CHANNELS else "other"


def valid_knowledge_base_name(name: str) -> bool:
    return bool(_KNOWLEDGE_BASE_NAME.match(name))


def message_problem(role: str, has_tool_call_id: bool, has_tool_calls: bool) -> tuple[str, str] | None:
    """What is wrong with a message's role and its tool fields, as (the field at fault, why); None when
    nothing is."""
    if role not in MESSAGE_ROLES:
        return "role", f"must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}"
    if role == "tool" and not has_tool_call_id:
        return "tool_call_id", "a tool message answers a call: give its id"
    if role != "tool" and has_tool_call_id:
        return "tool_call_id", "only tool messages answer a call"
    if role != "assistant" and has_tool_calls:
        return "tool_calls", "only assistant messages make tool calls"
    return None
