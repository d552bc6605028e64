"""The answer so far (`Progress`): what every protocol's encoder reads, updated after each upstream message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatllm.proto import pb

FINISH_NAMES = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
    pb.FINISH_REASON_ERROR: "error",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}


@dataclass
class Choice:
    """One choice's answer so far (everything received, whether or not a client was sent it yet)."""

    index: int
    text: str = ""
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)
    tool_calls: list[pb.ToolCallDelta] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None


@dataclass
class Progress:
    """The answer so far, updated in place after each upstream message."""

    choices: dict[int, Choice] = field(default_factory=dict)
    prompt_tokens: int = 0
    prompt_logprobs: list[pb.TokenLogprob] = field(default_factory=list)
    request_id: str = ""
    model: str = ""  # the model that answers (the server names it in its first message)
    final: pb.GenerateFinal | None = None

    def choice(self, index: int = 0) -> Choice:
        found = self.choices.get(index)
        if found is None:
            found = self.choices[index] = Choice(index)
        return found

    @property
    def text(self) -> str:
        """Choice 0's text (the legacy protocols have one choice)."""
        return self.choice(0).text

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices.values())

    @property
    def finish_reason(self) -> str | None:
        return FINISH_NAMES.get(self.final.finish_reason, "stop") if self.final is not None else None

    def apply(self, response: pb.GenerateResponse) -> None:
        choice = self.choice(response.index)
        choice.text += response.text
        if response.logprobs:  # per token: most messages carry text alone
            choice.logprobs.extend(response.logprobs)
        if response.tool_calls:
            choice.tool_calls.extend(response.tool_calls)
        choice.completion_tokens = max(choice.completion_tokens, response.completion_tokens)
        if response.finish_reason:
            choice.finish_reason = FINISH_NAMES.get(response.finish_reason, "stop")
        self.prompt_tokens = self.prompt_tokens or response.prompt_tokens
        self.model = self.model or response.model
        if response.prompt_logprobs:
            self.prompt_logprobs.extend(response.prompt_logprobs)
        self.request_id = response.request_id
        if response.HasField("final"):
            self.final = response.final
            for end in response.final.choices:
                self.choice(end.index).finish_reason = FINISH_NAMES.get(end.finish_reason, "stop")

    def usage(self) -> dict[str, Any]:
        """Token counts; the final message's once it arrived, else what is known so far."""
        if self.final is not None:
            u = self.final.usage
            usage: dict[str, Any] = {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            }
            if u.cached_prompt_tokens:
                usage["prompt_tokens_details"] = {"cached_tokens": u.cached_prompt_tokens}
            return usage
        done = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }

    def sources(self) -> list[dict[str, Any]]:
        """Knowledge-base chunks the answer was given, as the legacy replies carry them."""
        if self.final is None:
            return []
        return [
            {"file": s.file, "chunk": s.chunk, "score": round(s.score, 4), "text": s.text} for s in self.final.sources
        ]
