"""Embed: the knowledge base's embedder, for clients (OpenAI `/v1/embeddings` goes through here)."""

from __future__ import annotations

import asyncio
from typing import Any

from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument, NotFound, Reason

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000


class EmbeddingService:
    """Wraps the knowledge base's `Embedder` (vectors are L2-normalised, as the knowledge base stores them)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    @property
    def name(self) -> str:
        return str(self.embedder.name)

    @property
    def dimension(self) -> int:
        return int(self.embedder.dimension)

    async def embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
        if request.model and request.model != self.name:
            raise NotFound(
                f"model: {request.model!r} is not an embedding model here; use {self.name!r}", Reason.MODEL_NOT_FOUND
            )
        if not 1 <= len(request.input) <= MAX_INPUTS:
            raise InvalidArgument("input", f"give 1 to {MAX_INPUTS} texts")
        for i, text in enumerate(request.input):
            if not text or len(text) > MAX_INPUT_CHARS:
                raise InvalidArgument(f"input[{i}]", f"must be 1-{MAX_INPUT_CHARS} characters")
        if request.HasField("dimensions") and request.dimensions != self.dimension:
            raise InvalidArgument(
                "dimensions", f"{self.name} gives {self.dimension} dimensions and cannot shorten them (not Matryoshka)"
            )
        texts = list(request.input)
        vectors = await asyncio.to_thread(self.embedder.encode, texts)
        tokens = await asyncio.to_thread(self.embedder.token_count, texts)
        return pb.EmbedResponse(
            model=self.name, embeddings=[pb.Embedding(values=v.tolist()) for v in vectors], prompt_tokens=tokens
        )
