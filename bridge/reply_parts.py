"""Reply parts that several protocols share (usage, knowledge-base sources), as pydantic models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenDetails(Body):
    cached_tokens: int = Field(description="prompt tokens whose KV cache was reused (prefix caching)")


class Usage(Body):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: TokenDetails | None = None


class Source(Body):
    file: str
    chunk: int = Field(description="position of the chunk in its document, from 0")
    score: float = Field(description="fused relevance score; higher is closer")
    text: str
