"""PAI-EAS signed requests: `Authorization: EAS <signature>`, as the official `eas-prediction` SDK sends them.

signature = base64(HMAC-SHA1(token, "POST\\n<Content-MD5>\\n<Content-Type>\\n<Date>\\n<path>")), where
Content-MD5 is the hex MD5 of the body (it must match the body), and Date is when the client signed.
The SDK writes its *local* time with a "GMT" suffix (`datetime.now()`), so the bridge reads Date as
its own local time and accepts it within --eas-clock-skew seconds: a client and a bridge in the same
time zone (or both on UTC) agree; a client elsewhere must run with TZ set to the bridge's zone.
A replayed request whose Date is older than the window is refused.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
from collections.abc import Iterable

from chatllm.bridge.errors import ApiError, unauthorized

SCHEME = "EAS "
DATE_FORMAT = "%a, %d %b %Y %H:%M:%S GMT"


def is_signed(authorization: str | None) -> bool:
    return bool(authorization) and authorization[: len(SCHEME)].upper() == SCHEME  # type: ignore[index]


def expected_signature(token: str, method: str, content_md5: str, content_type: str, date: str, path: str) -> str:
    text = f"{method}\n{content_md5}\n{content_type}\n{date}\n{path}"
    digest = hmac.new(token.encode("utf-8"), text.strip().encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(
    authorization: str,
    tokens: Iterable[str],
    *,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    skew_seconds: float,
    now: datetime.datetime | None = None,
) -> str:
    """The token the request was signed with; ApiError 401 saying why when none matches."""
    signature = authorization[len(SCHEME) :].strip()
    content_md5 = headers.get("Content-MD5", "")
    if content_md5 != hashlib.md5(body).hexdigest():
        raise _refused("Content-MD5 is missing or does not match the body's MD5 (hex)")
    date = headers.get("Date", "")
    try:
        signed_at = datetime.datetime.strptime(date, DATE_FORMAT)
    except ValueError:
        raise _refused(f"Date {date!r} is missing or not like 'Mon, 02 Dec 2026 12:00:00 GMT'") from None
    drift = abs(((now or datetime.datetime.now()) - signed_at).total_seconds())
    if drift > skew_seconds:
        raise _refused(
            f"Date is {drift:.0f} s away from the server's clock (allowed: {skew_seconds:g} s; the SDK signs with "
            "local time: run client and server in the same time zone)"
        )
    content_type = headers.get("Content-Type", "")
    for token in tokens:
        wanted = expected_signature(token, method, content_md5, content_type, date, path)
        if hmac.compare_digest(wanted.encode(), signature.encode("utf-8", "surrogateescape")):
            return token
    raise _refused("the EAS signature does not match (wrong token, or the method, path or headers changed)")


def _refused(reason: str) -> ApiError:
    return unauthorized(f"signed request refused: {reason}")
