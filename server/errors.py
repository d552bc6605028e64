"""Errors the server raises, and the one table that turns them into gRPC statuses.

Per-request errors (bad input, overload, a request the engine failed) and fatal
engine errors (the engine is dead: every request fails, health flips) are
different types, as in vLLM. Every status the server sends carries
`google.rpc.Status` details (grpcio-status): an `ErrorInfo` with a stable
`reason` (see `Reason`) in domain `chatllm.v1`, and for bad input a
`BadRequest.FieldViolation` naming the field, so clients act on the reason and
the field without parsing the message.
"""

from __future__ import annotations

import enum

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "chatllm.v1"


class Reason(str, enum.Enum):
    """The `ErrorInfo.reason` values. Stable: clients and the bridge's error table key on them."""

    INVALID_FIELD = "INVALID_FIELD"
    UNSUPPORTED_BY_BACKEND = "UNSUPPORTED_BY_BACKEND"
    CONTEXT_LENGTH_EXCEEDED = "CONTEXT_LENGTH_EXCEEDED"
    UPLOAD_TOO_LARGE = "UPLOAD_TOO_LARGE"
    UNDECODABLE_REQUEST = "UNDECODABLE_REQUEST"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    DOCUMENT_NOT_FOUND = "DOCUMENT_NOT_FOUND"
    KNOWLEDGE_BASE_NOT_FOUND = "KNOWLEDGE_BASE_NOT_FOUND"
    OVERLOADED = "OVERLOADED"
    TOKEN_RATE_LIMITED = "TOKEN_RATE_LIMITED"
    TOKEN_STREAMS_LIMITED = "TOKEN_STREAMS_LIMITED"
    TOKEN_TOKENS_LIMITED = "TOKEN_TOKENS_LIMITED"
    TOKEN_DAILY_LIMITED = "TOKEN_DAILY_LIMITED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    STATE_STORE_UNAVAILABLE = "STATE_STORE_UNAVAILABLE"
    LOADING = "LOADING"
    DRAINING = "DRAINING"
    KNOWLEDGE_BASE_DISABLED = "KNOWLEDGE_BASE_DISABLED"
    ENGINE_DEAD = "ENGINE_DEAD"
    ENGINE_FAILED = "ENGINE_FAILED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    INTERNAL = "INTERNAL"


class ChatLLMError(Exception):
    """Base class: carries a client-safe message, a status code and a reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: Reason = Reason.INTERNAL
    retry_after: float | None = None  # seconds; sent as a google.rpc.RetryInfo detail

    def __init__(self, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class InvalidArgument(ChatLLMError):
    """Bad input; the message names the field (`field: reason`), and so does the BadRequest detail."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = Reason.INVALID_FIELD

    def __init__(self, field: str, description: str, reason: Reason | None = None) -> None:
        super().__init__(f"{field}: {description}", reason)
        self.field = field
        self.description = description


class Unsupported(InvalidArgument):
    """A field this backend cannot honour (another backend can): refused, never silently ignored."""

    reason = Reason.UNSUPPORTED_BY_BACKEND

    def __init__(self, field: str, backend: str, alternative: str = "--backend vllm supports it") -> None:
        super().__init__(field, f"not supported by the {backend} backend ({alternative})")


class Unauthenticated(ChatLLMError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = Reason.UNAUTHENTICATED


class PermissionDenied(ChatLLMError):
    """An accepted token asks for something only an admin token may (the token file's `admin`)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = Reason.PERMISSION_DENIED


class NotFound(ChatLLMError):
    code = grpc.StatusCode.NOT_FOUND


class Overloaded(ChatLLMError):
    """Admission refused: concurrency and queue limits are full."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = Reason.OVERLOADED


class TokenLimited(Overloaded):
    """A token's own limit (requests or tokens per minute, concurrent streams, daily tokens) is reached;
    others are unaffected."""

    def __init__(self, message: str, reason: Reason, retry_after: float) -> None:
        super().__init__(message, reason)
        self.retry_after = retry_after


class NotReady(ChatLLMError):
    """Model still loading, the server draining, or a part (the knowledge base) switched off."""

    code = grpc.StatusCode.UNAVAILABLE


class EngineDeadError(ChatLLMError):
    """The engine cannot serve anymore (its process or thread died)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = Reason.ENGINE_DEAD


class RequestFailed(ChatLLMError):
    """The engine failed this one request; others are unaffected."""

    code = grpc.StatusCode.INTERNAL
    reason = Reason.ENGINE_FAILED


class DeadlineExceeded(ChatLLMError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = Reason.REQUEST_TIMEOUT


class StartupError(Exception):
    """The server cannot start (model missing, bad flags); the message is one line for the user."""


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception; anything unexpected is INTERNAL."""
    if isinstance(exc, ChatLLMError):
        return exc.code
    return grpc.StatusCode.INTERNAL


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: Reason,
    field: str | None = None,
    description: str = "",
    retry_after: float | None = None,
) -> grpc.Status:
    """A gRPC status with ErrorInfo (BadRequest when a field is named, RetryInfo when a wait is known)."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason.value, domain=ERROR_DOMAIN))
    details = [info]
    if retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(retry_after * 1e9))
        packed = any_pb2.Any()
        packed.Pack(retry)
        details.append(packed)
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        bad_request = any_pb2.Any()
        bad_request.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(bad_request)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(status)


def status_of(exc: BaseException) -> grpc.Status:
    """The status to send for an exception raised while handling an RPC."""
    if isinstance(exc, InvalidArgument):
        return rich_status(exc.code, str(exc), exc.reason, exc.field, exc.description)
    if isinstance(exc, ChatLLMError):
        return rich_status(exc.code, str(exc), exc.reason, retry_after=exc.retry_after)
    return rich_status(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", Reason.INTERNAL)
