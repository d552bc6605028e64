"""Errors of the retrieval library; the server maps them to gRPC codes (see chatllm.server.knowledge)."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class; the message is safe to show to the user."""


class DocumentError(RetrievalError):
    """A document that cannot be ingested: unsupported type, corrupt, or without text."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


class UnknownDocument(RetrievalError):
    """No committed document with that id in that knowledge base."""


class UnknownKnowledgeBase(RetrievalError):
    """No knowledge base of that name."""


class EmbeddingMismatch(RetrievalError):
    """A knowledge base was built with an embedding model of another dimension."""
