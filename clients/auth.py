"""Token checks shared by the gRPC server and the bridge: `Authorization: <token>` (a
`Bearer ` prefix is accepted), compared in constant time. The token is never logged."""

from __future__ import annotations

import hmac


def token_matches(header: str | None, token: str) -> bool:
    """True when an Authorization header value carries `token`."""
    if header is None:
        return False
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return hmac.compare_digest(value.encode("utf-8", "surrogateescape"), token.encode("utf-8"))
