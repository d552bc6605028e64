"""The one table from failures to HTTP statuses and WebSocket error frames.

Every error leaves the bridge as the same JSON object (the OpenAI error shape, so
the `openai` client and the legacy clients both read it):

    {"error": {"message": "...", "type": "...", "param": "temperature", "code": "...", "status": 400}}

`code` is one snake_case vocabulary on every route (OpenAI's own words where it has one:
`invalid_api_key`, `model_not_found`, `context_length_exceeded`). gRPC failures map here and
nowhere else, from the status code and the `ErrorInfo.reason` / `BadRequest` field the server
attaches (google.rpc details): no message text is matched. A failure without our details
never came from the server: it is the bridge's upstream failing (unreachable, timed out).
The bridge never answers with a bare 500 or a traceback: bugs in the bridge itself become a
JSON 500 whose message names no internals (the traceback goes to the log).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from pydantic import Field

from chatllm.bridge.reply_parts import Body

RETRY_AFTER_OVERLOADED_S = 1
RETRY_AFTER_UNAVAILABLE_S = 5
ERROR_DOMAIN = "chatllm.v1"
_DETAILS_KEY = "grpc-status-details-bin"
R = TypeVar("R")
# What each error status of the bridge means (the OpenAPI document lists them per route).
ERROR_STATUSES = {
    400: "bad input: `error.param` and the start of `error.message` name the field",
    401: "missing or wrong token (only when the server runs with --token)",
    403: "forbidden path",
    404: "no such route, document or knowledge base, or the API is off (--no-api / --api-only)",
    413: "body over --max-body-bytes, or a file over --max-upload-bytes",
    429: "overloaded: --max-concurrent generating and --max-queue waiting; retry after Retry-After seconds",
    502: "the upstream gRPC server is unreachable or failed the request",
    503: "the server is loading or draining, the knowledge base is off, or too many WebSockets",
    504: "--request-timeout passed",
}
GENERATION_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)  # routes that generate
UPSTREAM_ERRORS = (401, 502, 503, 504)  # routes that make one upstream call


class ErrorDetail(Body):
    message: str = Field(description="what went wrong; for a bad field it starts with `field: `")
    type: str = Field(description="error class: invalid_request_error, authentication_error, rate_limit_error, ...")
    param: str | None = Field(description="the request field at fault")
    code: str | None = Field(description="snake_case reason: invalid_field, invalid_api_key, overloaded, ...")
    status: int = Field(ge=400, le=599, description="the HTTP status")


class Error(Body):
    """Every error of the bridge, HTTP and WebSocket alike (the OpenAI error shape)."""

    error: ErrorDetail


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

    def reply_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.reply_headers())

    def frame(self) -> str:
        """The WebSocket error frame (followed by `<EOS>` on the legacy WS protocol)."""
        return json.dumps(self.body(), ensure_ascii=False)


def bad_request(param: str, reason: str, code: str = "invalid_field") -> ApiError:
    """400 naming the offending field: `message` starts with `param: `."""
    return ApiError(400, f"{param}: {reason}", "invalid_request_error", param=param, code=code)


def unauthorized(
    reason: str = "missing or wrong token: send the header `Authorization: <token>` (or `Bearer <token>`)",
) -> ApiError:
    return ApiError(
        401,
        reason,
        "authentication_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": 'Bearer realm="chatllm"'},
    )


def unavailable(message: str, code: str = "unavailable") -> ApiError:
    return ApiError(503, message, "server_unavailable", code=code, retry_after=RETRY_AFTER_UNAVAILABLE_S)


def upstream_failed(message: str, code: str = "upstream_error") -> ApiError:
    return ApiError(502, message, "upstream_error", code=code)


def internal_error() -> ApiError:
    return ApiError(500, "internal error in the bridge (logged)", "server_error", code="internal")


@dataclass(frozen=True)
class ErrorMapping:
    status: int
    kind: str
    code: str


# The server's ErrorInfo.reason -> what the client sees (server/errors.py Reason).
_BY_REASON: dict[str, ErrorMapping] = {
    "INVALID_FIELD": ErrorMapping(400, "invalid_request_error", "invalid_field"),
    "UNSUPPORTED_BY_BACKEND": ErrorMapping(400, "invalid_request_error", "unsupported_field"),
    "CONTEXT_LENGTH_EXCEEDED": ErrorMapping(400, "invalid_request_error", "context_length_exceeded"),
    "UNDECODABLE_REQUEST": ErrorMapping(400, "invalid_request_error", "invalid_request"),
    "UPLOAD_TOO_LARGE": ErrorMapping(413, "request_too_large", "file_too_large"),
    "UNAUTHENTICATED": ErrorMapping(401, "authentication_error", "invalid_api_key"),
    "MODEL_NOT_FOUND": ErrorMapping(404, "not_found_error", "model_not_found"),
    "DOCUMENT_NOT_FOUND": ErrorMapping(404, "not_found_error", "document_not_found"),
    "KNOWLEDGE_BASE_NOT_FOUND": ErrorMapping(404, "not_found_error", "knowledge_base_not_found"),
    "OVERLOADED": ErrorMapping(429, "rate_limit_error", "overloaded"),
    "TOKEN_RATE_LIMITED": ErrorMapping(429, "rate_limit_error", "rate_limit_exceeded"),
    "TOKEN_STREAMS_LIMITED": ErrorMapping(429, "rate_limit_error", "too_many_streams"),
    "TOKEN_TOKENS_LIMITED": ErrorMapping(429, "rate_limit_error", "tokens_per_minute_exceeded"),
    "TOKEN_DAILY_LIMITED": ErrorMapping(429, "rate_limit_error", "insufficient_quota"),
    "PERMISSION_DENIED": ErrorMapping(403, "permission_error", "permission_denied"),
    "STATE_STORE_UNAVAILABLE": ErrorMapping(503, "server_unavailable", "state_store_unavailable"),
    "LOADING": ErrorMapping(503, "server_unavailable", "loading"),
    "DRAINING": ErrorMapping(503, "server_unavailable", "draining"),
    "KNOWLEDGE_BASE_DISABLED": ErrorMapping(503, "server_unavailable", "knowledge_base_disabled"),
    "ENGINE_DEAD": ErrorMapping(503, "server_unavailable", "engine_dead"),
    "ENGINE_FAILED": ErrorMapping(502, "upstream_error", "engine_failed"),
    "REQUEST_TIMEOUT": ErrorMapping(504, "timeout_error", "request_timeout"),
    "INTERNAL": ErrorMapping(502, "upstream_error", "internal"),
}
# A status without our details: grpc's own (the bridge's channel), or a proxy in between.
_BY_CODE: dict[grpc.StatusCode, ErrorMapping] = {
    grpc.StatusCode.UNAVAILABLE: ErrorMapping(502, "upstream_unreachable", "upstream_unreachable"),
    # The bridge's own deadline on the call: its --request-timeout.
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorMapping(504, "timeout_error", "request_timeout"),
    grpc.StatusCode.CANCELLED: ErrorMapping(503, "server_unavailable", "cancelled"),
    grpc.StatusCode.UNAUTHENTICATED: ErrorMapping(401, "authentication_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: ErrorMapping(403, "permission_error", "permission_denied"),
    grpc.StatusCode.INVALID_ARGUMENT: ErrorMapping(400, "invalid_request_error", "invalid_argument"),
    grpc.StatusCode.OUT_OF_RANGE: ErrorMapping(400, "invalid_request_error", "out_of_range"),
    grpc.StatusCode.FAILED_PRECONDITION: ErrorMapping(400, "invalid_request_error", "failed_precondition"),
    grpc.StatusCode.NOT_FOUND: ErrorMapping(404, "not_found_error", "not_found"),
    grpc.StatusCode.ALREADY_EXISTS: ErrorMapping(409, "conflict_error", "already_exists"),
    grpc.StatusCode.ABORTED: ErrorMapping(409, "conflict_error", "aborted"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorMapping(429, "rate_limit_error", "resource_exhausted"),
    grpc.StatusCode.UNIMPLEMENTED: ErrorMapping(501, "not_implemented_error", "unimplemented"),
}
_UPSTREAM_FAILURE = ErrorMapping(502, "upstream_error", "upstream_error")


@dataclass(frozen=True)
class RpcDetails:
    """What the server's google.rpc details say about a failed call."""

    reason: str | None = None
    field: str | None = None
    description: str = ""
    retry_after: float | None = None  # RetryInfo: seconds the server asks the client to wait


def rpc_details(exc: grpc.aio.AioRpcError) -> RpcDetails:
    """The ErrorInfo reason (domain chatllm.v1) and the BadRequest field of a failed call, if any."""
    raw = next((value for key, value in exc.trailing_metadata() or () if key == _DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return RpcDetails()
    status = status_pb2.Status.FromString(raw)
    reason, violation, retry_after = None, None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violation = bad.field_violations[0] if bad.field_violations else None
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    if violation is None:
        return RpcDetails(reason, retry_after=retry_after)
    return RpcDetails(reason, violation.field, violation.description, retry_after)


def from_rpc(exc: grpc.aio.AioRpcError, client_field: Callable[[str], str] | None = None) -> ApiError:
    """Map a failed gRPC call to the ApiError the client sees; `client_field` renames the server's
    field (`sampling.top_p`) to the one the client sent (`top_p`)."""
    code = exc.code()
    details = exc.details() or code.name
    info = rpc_details(exc)
    mapping = _BY_REASON.get(info.reason or "") or _BY_CODE.get(code, _UPSTREAM_FAILURE)
    if info.reason is None and code is grpc.StatusCode.UNAVAILABLE:
        details = f"upstream gRPC server unreachable: {details}"
    param = None
    message = details
    if info.field is not None:
        param = client_field(info.field) if client_field else info.field.removeprefix("sampling.")
        message = f"{param}: {info.description}"
    retry_after = {429: RETRY_AFTER_OVERLOADED_S, 503: RETRY_AFTER_UNAVAILABLE_S}.get(mapping.status)
    if info.retry_after is not None:
        retry_after = max(1, math.ceil(info.retry_after))  # Retry-After takes whole seconds
    error = ApiError(mapping.status, message, mapping.kind, param=param, code=mapping.code, retry_after=retry_after)
    if mapping.status == 401:
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


async def rpc_reply(call: Awaitable[R], client_field: Callable[[str], str] | None = None) -> R:
    """The reply of one upstream call; a failed call raises the ApiError the client sees (`client_field`
    as in from_rpc)."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise from_rpc(exc, client_field) from None
