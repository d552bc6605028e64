"""A fake `Engine` for the fast tier: the layers above the engine (generation, servicer, bridge).

It answers every prompt with a scripted text, one word per step, for each of `n` choices (with
`ignore_eos`, the words repeat until max_new_tokens); it can stall between steps (to exercise
streaming, deadlines and cancellation), fail a request, or die. Nothing is mocked below it:
the real servicer and bridge run against it (`ChatLLMServer(config, engine=FakeEngine())`, the
`fake_stack` fixtures) and start in milliseconds, with no model.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatllm.server.engines.base import Adapter, EngineInfo, EngineOutput, EngineStats, Finish, TokenLogprob
from chatllm.server.errors import EngineDeadError
from chatllm.server.sampling import SamplingOptions, refuse_unsupported

FAKE_MODEL = "fake-model"  # the name the fake stacks serve it under (--served-model-name)
DEFAULT_ANSWER = "the answer is forty two"
WORDS = re.compile(r"\w+|[^\w\s]")


class WordTokenizer:
    """One token per word or punctuation mark; ids are positions in a growing vocabulary."""

    chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.texts: dict[tuple[int, ...], str] = {}  # every text tokenized, by its ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, Any]:
        ids = [self.vocab.setdefault(word, len(self.vocab)) for word in WORDS.findall(text)]
        self.texts[tuple(ids)] = text
        return {"input_ids": ids}

    def __len__(self) -> int:
        return max(len(self.vocab), 1000)  # ids below 1000 decode even before the words were seen

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        words = {index: word for word, index in self.vocab.items()}
        return " ".join(words.get(i, f"<{i}>") for i in ids)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return self.decode(ids).split(" ") if ids else []

    def apply_chat_template(
        self, messages: list[dict[str, Any]], chat_template: str | None = None, **kwargs: Any
    ) -> str:
        import jinja2

        kwargs.pop("tokenize", None)
        return jinja2.Template(chat_template or self.chat_template).render(messages=messages, **kwargs)


@dataclass
class FakeEngine:
    """Scripted answers; `stall` seconds between steps; `fail` / `die` to exercise error paths."""

    answer: str = DEFAULT_ANSWER
    stall: float = 0.0
    fail: bool = False
    supports_everything: bool = True
    context_length: int = 4096
    tokenizer: Any = field(default_factory=WordTokenizer)
    generation_config: Any = None
    adapters: Sequence[Adapter] = ()
    aborted: list[str] = field(default_factory=list)
    seen: list[tuple[list[int], SamplingOptions, str | None]] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)  # each request's class, as the engine got it
    dead: bool = False
    running: int = 0

    @property
    def prompts(self) -> list[str]:
        """The text of each prompt the engine was given, in order (as the chat template rendered it)."""
        return [self.tokenizer.texts[tuple(ids)] for ids, _, _ in self.seen]

    def __post_init__(self) -> None:
        self.info = EngineInfo(backend="fake", device="cpu", dtype="float32", context_length=self.context_length)
        self._aborts: dict[str, asyncio.Event] = {}

    @property
    def errored(self) -> bool:
        return self.dead

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDeadError("the fake engine died")

    def stats(self) -> EngineStats:
        return EngineStats(running=self.running, waiting=0, kv_cache_usage=0.0)

    def prepare(self, options: SamplingOptions) -> SamplingOptions:
        if not self.supports_everything:  # then it honours what the hf backend does, and refuses the rest
            refuse_unsupported(options, "hf", "fake")
        return options

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self._aborts.setdefault(request_id, asyncio.Event()).set()

    async def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[EngineOutput]:
        if self.dead:
            raise EngineDeadError("the fake engine died")
        self.seen.append((prompt_ids, options, adapter))
        self.priorities.append(priority)
        aborted = self._aborts.setdefault(request_id, asyncio.Event())
        words = self.answer.split()
        if options.ignore_eos:
            words = [words[i % len(words)] for i in range(options.max_new_tokens)]
        words = words[: options.max_new_tokens]
        self.running += 1
        try:
            for step, word in enumerate(words, 1):
                if self.stall:
                    try:
                        await asyncio.wait_for(aborted.wait(), self.stall)
                    except TimeoutError:
                        pass
                if aborted.is_set():
                    for index in range(options.n):
                        yield EngineOutput("", step - 1, Finish.ABORT, index=index)
                    return
                if self.fail and step == 2:
                    yield EngineOutput("", step, Finish.ERROR, error="the fake engine failed", index=0)
                    return
                last = step == len(words)
                finish = (Finish.LENGTH if len(words) == options.max_new_tokens else Finish.STOP) if last else None
                for index in range(options.n):
                    text = ("" if step == 1 else " ") + word
                    logprobs = (TokenLogprob(step, word, -0.5 * (index + 1)),) if options.logprobs is not None else ()
                    yield EngineOutput(
                        text,
                        step,
                        finish,
                        queue_seconds=0.001,
                        index=index,
                        token_ids=(step,),
                        logprobs=logprobs,
                        cached_tokens=0 if step == 1 else None,
                        cumulative_logprob=-0.5 * (index + 1) * step,
                    )
        finally:
            self.running -= 1
