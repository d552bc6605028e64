"""One request's choices (n of them): engine outputs in, GenerateResponses out.

Each choice's text goes through its tool parser (when the request has tools), its log
probabilities become `TokenLogprob`s, and its end is reported once. The response that ends
the last choice also carries `final`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from chatllm.proto import pb
from chatllm.server.engines.base import EngineOutput, Finish, TokenLogprob
from chatllm.server.tools import ChoiceParser, ToolSession

FINISH_TO_PB = {
    Finish.STOP: pb.FINISH_REASON_STOP,
    Finish.LENGTH: pb.FINISH_REASON_LENGTH,
    Finish.ABORT: pb.FINISH_REASON_ABORT,
    Finish.ERROR: pb.FINISH_REASON_ERROR,
}
LOGPROB_FLOOR = -9999.0  # OpenAI (and vLLM) send this instead of -inf


def logprobs_pb(entries: Sequence[TokenLogprob]) -> list[pb.TokenLogprob]:
    def clamp(value: float) -> float:
        return max(value, LOGPROB_FLOOR) if value == value else LOGPROB_FLOOR  # NaN too

    return [
        pb.TokenLogprob(
            token=e.token,
            logprob=clamp(e.logprob),
            token_bytes=e.token.encode("utf-8", "replace"),
            token_id=e.token_id,
            top_logprobs=[
                pb.TopLogprob(
                    token=t.token,
                    logprob=clamp(t.logprob),
                    token_bytes=t.token.encode("utf-8", "replace"),
                    token_id=t.token_id,
                )
                for t in e.top
            ],
        )
        for e in entries
    ]


@dataclass
class ChoiceState:
    index: int
    parser: ChoiceParser | None
    text: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    finish: int = pb.FINISH_REASON_UNSPECIFIED
    stop_reason: str = ""
    cumulative_logprob: float = 0.0
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)  # kept for best_of, which answers at the end


class ChoiceSet:
    """The choices of one request, as they stream out of the engine."""

    def __init__(
        self, n: int, prompt_ids: list[int], request_id: str, tools: ToolSession | None, logprobs: bool, model: str
    ) -> None:
        self.prompt_ids = prompt_ids
        self.request_id = request_id
        self.model = model  # sent in the first response
        self.logprobs = logprobs
        self.choices = [ChoiceState(i, tools.choice_parser() if tools else None) for i in range(n)]
        self.prompt_sent = False
        self.prompt_logprobs: list[pb.TokenLogprob] = []
        self.cached_tokens = 0

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)

    @property
    def done(self) -> bool:
        return all(c.finish != pb.FINISH_REASON_UNSPECIFIED for c in self.choices)

    def answer(self, index: int = 0) -> str:
        return "".join(self.choices[index].text)

    def response(self, out: EngineOutput) -> pb.GenerateResponse | None:
        """The response for one engine output (None when it carries nothing for the client yet)."""
        choice = self.choices[out.index]
        finished = out.finish is not None
        text, calls = out.text, []
        if choice.parser is not None:
            text, calls = choice.parser.feed(out.text, out.token_ids, self.prompt_ids, finished)
        choice.text.append(text)
        choice.completion_tokens = out.completion_tokens
        if out.cumulative_logprob is not None:
            choice.cumulative_logprob = out.cumulative_logprob
        if out.cached_tokens is not None:
            self.cached_tokens = out.cached_tokens
        # Built with only the fields this step has: this runs once per token of every stream.
        response = pb.GenerateResponse(
            text=text, completion_tokens=out.completion_tokens, request_id=self.request_id, index=out.index
        )
        if calls:
            response.tool_calls.extend(calls)
        if self.logprobs and out.logprobs:
            entries = logprobs_pb(out.logprobs)
            response.logprobs.extend(entries)
            choice.logprobs.extend(entries)
        if not self.prompt_sent:
            self.prompt_sent = True
            response.prompt_tokens = len(self.prompt_ids)
            response.model = self.model
            self.prompt_logprobs = logprobs_pb(out.prompt_logprobs)
            response.prompt_logprobs.extend(self.prompt_logprobs)
        if finished:
            assert out.finish is not None
            finish = FINISH_TO_PB[out.finish]
            choice.finish = choice.parser.finish_reason(finish) if choice.parser else finish
            choice.stop_reason = "" if out.stop_reason is None else str(out.stop_reason)
            response.finish_reason = choice.finish  # type: ignore[assignment]
        elif not (text or calls or response.logprobs or response.prompt_tokens):
            return None
        return response

    def ends(self) -> list[pb.ChoiceEnd]:
        return [
            pb.ChoiceEnd(
                index=c.index,
                finish_reason=c.finish,  # type: ignore[arg-type]
                tool_calls=c.parser.calls.complete() if c.parser else [],
                stop_reason=c.stop_reason,
            )
            for c in self.choices
        ]

    def best(self, n: int) -> ChoiceSet:
        """The n choices with the highest total log probability, re-numbered from 0 (best_of)."""
        ranked = sorted(self.choices, key=lambda c: c.cumulative_logprob, reverse=True)[:n]
        kept = ChoiceSet(0, self.prompt_ids, self.request_id, None, self.logprobs, self.model)
        kept.choices = [
            ChoiceState(
                i, c.parser, c.text, c.completion_tokens, c.finish, c.stop_reason, c.cumulative_logprob, c.logprobs
            )
            for i, c in enumerate(ranked)
        ]
        kept.cached_tokens, kept.prompt_logprobs = self.cached_tokens, self.prompt_logprobs
        return kept

    def whole_responses(self) -> list[pb.GenerateResponse]:
        """Each choice as one response (best_of answers, which are not streamed)."""
        return [
            pb.GenerateResponse(
                text="".join(c.text),
                completion_tokens=c.completion_tokens,
                request_id=self.request_id,
                index=c.index,
                tool_calls=[
                    pb.ToolCallDelta(index=i, id=call.id, name=call.name, arguments=call.arguments)
                    for i, call in enumerate(c.parser.calls.complete() if c.parser else [])
                ],
                finish_reason=c.finish,  # type: ignore[arg-type]
                logprobs=c.logprobs,
                prompt_tokens=len(self.prompt_ids) if c.index == 0 else 0,
                prompt_logprobs=self.prompt_logprobs if c.index == 0 else [],
                model=self.model if c.index == 0 else "",
            )
            for c in self.choices
        ]
