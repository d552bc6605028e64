"""What the model sees: system prompt, trimmed history, knowledge-base context, chat template.

Everything that decides the prompt lives here (the bridge only keeps per-socket
history), so gRPC, HTTP, WebSocket and OpenAI clients get the same behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from chatllm.kernel.history_window import trim_history
from chatllm.server.errors import InvalidArgument, Reason
from chatllm.server.templates import family_template, load_template


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
    """One request's conversation: `messages` (the general form, as the chat template sees
    them), or the legacy prompt + system prompt + history, which become messages here."""

    prompt: str = ""
    system_prompt: str = ""
    history: Sequence[ChatTurn] = ()
    raw: bool = False  # this request only: no template/system/history
    messages: Sequence[Mapping[str, Any]] = ()
    tools: Sequence[Mapping[str, Any]] = ()  # shown to the chat template
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """What the knowledge base is searched for: the prompt, or the last user message."""
        if not self.messages:
            return self.prompt
        return next((str(m.get("content") or "") for m in reversed(self.messages) if m.get("role") == "user"), "")


@dataclass(frozen=True)
class BuiltPrompt:
    ids: list[int]
    max_new_tokens: int  # clipped to what fits the context
    history_rounds: int  # legacy rounds that reached the model


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
        max_round_trim: str = "exact",
        default_system_prompt: str = "",
        no_template: bool = False,
        model_type: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_round = max_round
        self.max_round_trim = max_round_trim
        self.default_system_prompt = default_system_prompt
        self.no_template = no_template
        self.template: str | None = None
        if no_template:
            self.template_source = "none"
        elif chat_template:
            self.template, self.template_source = load_template(chat_template)
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
        return trim_history(history, self.max_round, self.max_round_trim)

    def messages(self, chat: ChatInput, knowledge: Sequence[Retrieved] | None = None) -> list[dict[str, Any]]:
        """What the template renders. `messages` as sent (the knowledge-base context wraps the last user
        message); legacy input with the default system prompt and its history trimmed to max_round
        (kernel.history_window)."""
        if chat.messages:
            given = [dict(m) for m in chat.messages]
            if knowledge is not None:
                last_user = max(i for i, m in enumerate(given) if m.get("role") == "user")
                given[last_user]["content"] = knowledge_prompt(str(given[last_user].get("content") or ""), knowledge)
            return given
        system = chat.system_prompt or self.default_system_prompt
        out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for turn in self.trim_history(chat.history):
            out.append({"role": "user", "content": turn.user})
            out.append({"role": "assistant", "content": turn.assistant})
        question = knowledge_prompt(chat.prompt, knowledge) if knowledge is not None else chat.prompt
        out.append({"role": "user", "content": question})
        return out

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def render(
        self, chat: ChatInput, knowledge: Sequence[Retrieved] | None = None, add_generation_prompt: bool = True
    ) -> tuple[str, bool, int]:
        """The prompt text, whether the tokenizer should add special tokens, and the history rounds used."""
        if chat.raw or (self.no_template and not chat.messages):
            text = knowledge_prompt(chat.prompt, knowledge) if knowledge is not None else chat.prompt
            return text, True, 0
        if self.no_template:
            raise InvalidArgument(
                "messages",
                "this server sends raw prompts (--no-template, or a model without "
                "a chat template): send `prompt` instead",
            )
        messages = self.messages(chat, knowledge)
        options: dict[str, Any] = dict(chat.template_kwargs)
        if chat.tools:
            options["tools"] = [dict(t) for t in chat.tools]
        if messages[-1].get("role") == "assistant":  # continue this answer (prefill), as vLLM's continue_final_message
            options.update(add_generation_prompt=False, continue_final_message=True)
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.template,
                tokenize=False,
                **{"add_generation_prompt": add_generation_prompt, **options},
            )
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise InvalidArgument("messages", f"the model's chat template rejected them: {exc}") from None
        return str(text), False, 0 if chat.messages else len(self.trim_history(chat.history))

    def build(self, chat: ChatInput, max_new_tokens: int, knowledge: Sequence[Retrieved] | None = None) -> BuiltPrompt:
        text, add_special, rounds = self.render(chat, knowledge)
        ids = self.tokenize(text, add_special)
        room = self.context_length - len(ids)
        if room < 1:
            raise InvalidArgument(
                "messages" if chat.messages else "prompt",
                f"{len(ids)} tokens (with system prompt, history and context) do not fit the model's "
                f"context of {self.context_length} tokens",
                Reason.CONTEXT_LENGTH_EXCEEDED,
            )
        return BuiltPrompt(ids=ids, max_new_tokens=min(max_new_tokens, room), history_rounds=rounds)
