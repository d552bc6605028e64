"""The one table from failures to HTTP statuses and WebSocket error frames.

Every error leaves the bridge as the same JSON object (the OpenAI error shape, so
the `openai` client and the legacy clients both read it):

    {"error": {"message": "...", "type": "...", "param": "temperature", "code": "...", "status": 400}}

gRPC statuses from the server map to HTTP statuses here and nowhere else. The
bridge never answers with a bare 500 or a traceback: bugs in the bridge itself
become a JSON 500 whose message names no internals (the traceback goes to the log).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

RETRY_AFTER_OVERLOADED_S = 1
RETRY_AFTER_UNAVAILABLE_S = 5

# Substrings of grpc's own messages when it never reached (or lost) the server:
# those are the bridge's upstream failing (502), not the server saying "not now" (503).
_TRANSPORT_FAILURES = (
    "failed to connect",
    "connection refused",
    "socket closed",
    "connection reset",
    "broken pipe",
    "dns resolution failed",
    "connections to all backends failing",
)


@dataclass
class ApiError(Exception):
    """An error the client sees; raised anywhere in the bridge, rendered once."""

    status: int
    message: str
    kind: str
    param: str | None = None
    code: str | None = None
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
                "status": self.status,
            }
        }

    def response(self) -> web.Response:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return web.json_response(self.body(), status=self.status, headers=headers)

    def frame(self) -> str:
        """The WebSocket error frame (followed by `<EOS>` on the legacy WS protocol)."""
        return json.dumps(self.body(), ensure_ascii=False)


def bad_request(param: str, reason: str, code: str = "invalid_field") -> ApiError:
    """400 naming the offending field: `message` starts with `param: `."""
    return ApiError(400, f"{param}: {reason}", "invalid_request_error", param=param, code=code)


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "missing or wrong token: send the header `Authorization: <token>` (or `Bearer <token>`)",
        "authentication_error",
        code="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="chatllm"'},
    )


def unavailable(message: str, code: str = "unavailable") -> ApiError:
    return ApiError(503, message, "server_unavailable", code=code, retry_after=RETRY_AFTER_UNAVAILABLE_S)


# gRPC status -> (HTTP status, error type). UNAVAILABLE is split below (502 vs 503).
_STATUS_BY_CODE: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.ABORTED: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_unavailable"),
    grpc.StatusCode.CANCELLED: (503, "server_unavailable"),  # the server cancelled it (shutdown)
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
    # The server failed the request (engine error): a gateway's upstream failure, never a bare 500.
    grpc.StatusCode.INTERNAL: (502, "upstream_error"),
    grpc.StatusCode.UNKNOWN: (502, "upstream_error"),
    grpc.StatusCode.DATA_LOSS: (502, "upstream_error"),
}


def _rename_field(details: str, fields: Mapping[str, str]) -> tuple[str | None, str]:
    """Server messages start with the proto field ("sampling.top_p: ..."); name the client's field instead."""
    name, sep, reason = details.partition(": ")
    if not sep or " " in name:
        return None, details
    param = fields.get(name, name.removeprefix("sampling."))
    return param, f"{param}: {reason}"


def from_rpc(exc: grpc.aio.AioRpcError, fields: Mapping[str, str] | None = None) -> ApiError:
    """Map a failed gRPC call to the ApiError the client sees."""
    code = exc.code()
    details = exc.details() or code.name
    status, kind = _STATUS_BY_CODE.get(code, (502, "upstream_error"))
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        param, message = _rename_field(details, fields or {})
        return ApiError(status, message, kind, param=param, code=code.name)
    if code is grpc.StatusCode.UNAVAILABLE and any(m in details.lower() for m in _TRANSPORT_FAILURES):
        return ApiError(502, f"upstream gRPC server unreachable: {details}", "upstream_unreachable", code=code.name)
    retry_after = {429: RETRY_AFTER_OVERLOADED_S, 503: RETRY_AFTER_UNAVAILABLE_S}.get(status)
    error = ApiError(status, details, kind, code=code.name, retry_after=retry_after)
    if status == 401:
        error.headers["WWW-Authenticate"] = 'Bearer realm="chatllm"'
    return error


def from_http_exception(exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (404, 405, 413, ...) in the same JSON shape."""
    kind = {413: "request_too_large", 404: "not_found_error", 405: "invalid_request_error"}.get(
        exc.status, "invalid_request_error" if exc.status < 500 else "server_error"
    )
    message = exc.text or exc.reason
    if exc.status == 413:
        message = f"request body too large ({message})"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return ApiError(exc.status, message, kind, code=exc.reason.lower().replace(" ", "_"), headers=headers)


def internal_error() -> ApiError:
    return ApiError(500, "internal error in the bridge (logged)", "server_error", code="internal")
