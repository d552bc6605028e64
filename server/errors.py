"""Errors the server raises, and the one table that maps them to gRPC codes.

Per-request errors (bad input, overload, a request the engine failed) and fatal
engine errors (the engine is dead: every request fails, health flips) are
different types, as in vLLM.
"""

from __future__ import annotations

import grpc


class ChatLLMError(Exception):
    """Base class: carries a client-safe message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(ChatLLMError):
    """Bad input; the message names the field (`field: reason`)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(ChatLLMError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(ChatLLMError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Overloaded(ChatLLMError):
    """Admission refused: concurrency and queue limits are full."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(ChatLLMError):
    """Model still loading, or the server is draining."""

    code = grpc.StatusCode.UNAVAILABLE


class EngineDeadError(ChatLLMError):
    """The engine cannot serve anymore (its process or thread died)."""

    code = grpc.StatusCode.UNAVAILABLE


class RequestFailed(ChatLLMError):
    """The engine failed this one request; others are unaffected."""

    code = grpc.StatusCode.INTERNAL


class DeadlineExceeded(ChatLLMError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class StartupError(Exception):
    """The server cannot start (model missing, bad flags); the message is one line for the user."""


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception; anything unexpected is INTERNAL."""
    if isinstance(exc, ChatLLMError):
        return exc.code
    return grpc.StatusCode.INTERNAL
