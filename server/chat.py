"""What the model sees: system prompt, trimmed history, knowledge-base context, chat template.

Everything that decides the prompt lives here (the bridge only keeps per-socket
history), so gRPC, HTTP, WebSocket and OpenAI clients get the same behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatllm.server.errors import InvalidArgument
from chatllm.server.templates import family_template


@dataclass(frozen=True)
class Retrieved:
    """A knowledge-base chunk given to the model as context."""

    document_id: str
    file: str
    chunk: int
    score: float
    text: str


@dataclass(frozen=True)
class ChatTurn:
    user: str
    assistant: str


@dataclass(frozen=True)
class ChatInput:
    prompt: str
    system_prompt: str = ""
    history: Sequence[ChatTurn] = ()
    raw: bool = False  # this request only: no template/system/history


@dataclass(frozen=True)
class BuiltPrompt:
    ids: list[int]
    text: str
    max_new_tokens: int  # clipped to what fits the context
    history_rounds: int  # rounds that reached the model


KNOWLEDGE_PROMPT = """Answer the question using only the context below. Answer in the same language as the question.
If the context does not contain the answer, say that the knowledge base has no answer to it; do not make one up.

Context:
{context}

Question: {question}"""


NOTHING_RELEVANT_PROMPT = """The knowledge base has nothing on the question below: no document in it is relevant.
Say that the knowledge base has no information on this, in the same language as the question. Do not make up an answer.

Question: {question}"""


def knowledge_prompt(question: str, chunks: Sequence[Retrieved]) -> str:
    """The user message for a knowledge-base answer: numbered context chunks, then the question; when no
    chunk passed the relevance threshold, a message that says the knowledge base has nothing on it."""
    if not chunks:
        return NOTHING_RELEVANT_PROMPT.format(question=question)
    context = "\n\n".join(f"[{i}] ({c.file}) {c.text.strip()}" for i, c in enumerate(chunks, 1))
    return KNOWLEDGE_PROMPT.format(context=context, question=question)


class Chat:
    """Builds prompt token ids for one request."""

    def __init__(
        self,
        tokenizer: Any,
        context_length: int,
        *,
        max_round: int,
        default_system_prompt: str = "",
        no_template: bool = False,
        model_type: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_round = max_round
        self.default_system_prompt = default_system_prompt
        self.no_template = no_template
        self.template: str | None = None
        if no_template:
            self.template_source = "none"
        elif getattr(tokenizer, "chat_template", None):
            self.template_source = "tokenizer"
        elif model_type:
            self.template = family_template(model_type)
            self.template_source = f"model-type:{model_type.lower()}"
        else:
            # No template anywhere: plain concatenation is the honest fallback.
            self.no_template = True
            self.template_source = "none"

    def trim_history(self, history: Sequence[ChatTurn]) -> list[ChatTurn]:
        return list(history[-self.max_round :]) if self.max_round > 0 else []

    def messages(self, chat: ChatInput, knowledge: Sequence[Retrieved] | None = None) -> list[dict[str, str]]:
        system = chat.system_prompt or self.default_system_prompt
        out: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        for turn in self.trim_history(chat.history):
            out.append({"role": "user", "content": turn.user})
            out.append({"role": "assistant", "content": turn.assistant})
        question = knowledge_prompt(chat.prompt, knowledge) if knowledge is not None else chat.prompt
        out.append({"role": "user", "content": question})
        return out

    def render(self, chat: ChatInput, knowledge: Sequence[Retrieved] | None = None) -> tuple[str, bool, int]:
        """The prompt text, whether the tokenizer should add special tokens, and the history rounds used."""
        if self.no_template or chat.raw:
            text = knowledge_prompt(chat.prompt, knowledge) if knowledge is not None else chat.prompt
            return text, True, 0
        messages = self.messages(chat, knowledge)
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=True
        )
        return str(text), False, len(self.trim_history(chat.history))

    def build(self, chat: ChatInput, max_new_tokens: int, knowledge: Sequence[Retrieved] | None = None) -> BuiltPrompt:
        text, add_special, rounds = self.render(chat, knowledge)
        ids = list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])
        room = self.context_length - len(ids)
        if room < 1:
            raise InvalidArgument(
                "prompt",
                f"{len(ids)} tokens (with system prompt, history and context) do not fit the model's "
                f"context of {self.context_length} tokens",
            )
        return BuiltPrompt(ids=ids, text=text, max_new_tokens=min(max_new_tokens, room), history_rounds=rounds)
