"""Token checks shared by the gRPC server and the bridge: `Authorization: <token>` (a
`Bearer ` prefix is accepted), compared in constant time. The token is never logged."""

from __future__ import annotations

import hmac


def presented_value(header: str) -> str:
    """The token an Authorization header value carries: the value itself, or what follows `Bearer `."""
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value


def token_matches(header: str | None, token: str) -> bool:
    """True when an Authorization header value carries `token`."""
    if header is None:
        return False
    value = presented_value(header)
    return hmac.compare_digest(value.encode("utf-8", "surrogateescape"), token.encode("utf-8"))
