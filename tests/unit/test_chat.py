"""The Chat layer decides what the model sees (fake tokenizer: one token per word)."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from chatllm.server.chat import Chat, ChatInput, ChatTurn, Retrieved
from chatllm.server.errors import InvalidArgument

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


class WordTokenizer:
    def __init__(self, chat_template: str | None = TEMPLATE) -> None:
        self.chat_template = chat_template

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        chat_template: str | None = None,
        tokenize: bool = False,
        add_generation_prompt: bool = True,
    ) -> str:
        template = chat_template or self.chat_template
        assert template is not None
        return jinja2.Template(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<s>", eos_token="</s>"
        )

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, Any]:
        ids = list(range(len(text.split())))
        return {"input_ids": ([999] if add_special_tokens else []) + ids}


HISTORY = [ChatTurn(f"q{i}", f"a{i}") for i in range(1, 8)]


def test_history_is_trimmed_to_max_round() -> None:
    chat = Chat(WordTokenizer(), 4096, max_round=2)
    text, _, rounds = chat.render(ChatInput("now?", history=HISTORY))
    assert rounds == 2
    assert "q6" in text and "q7" in text and "q5" not in text
    assert text.endswith("<user>now?</user>\n<assistant>")


def test_max_round_zero_sends_no_history() -> None:
    chat = Chat(WordTokenizer(), 4096, max_round=0)
    text, _, rounds = chat.render(ChatInput("now?", history=HISTORY))
    assert rounds == 0 and "q7" not in text


def test_system_prompt_request_overrides_default() -> None:
    chat = Chat(WordTokenizer(), 4096, max_round=5, default_system_prompt="be brief")
    assert "<system>be brief</system>" in chat.render(ChatInput("hi"))[0]
    assert "<system>be long</system>" in chat.render(ChatInput("hi", system_prompt="be long"))[0]


def test_no_template_sends_the_raw_prompt() -> None:
    chat = Chat(WordTokenizer(), 4096, max_round=5, no_template=True, default_system_prompt="sys")
    text, add_special, rounds = chat.render(ChatInput("just this", history=HISTORY))
    assert text == "just this" and add_special and rounds == 0
    assert chat.template_source == "none"
    # and per request
    templated = Chat(WordTokenizer(), 4096, max_round=5)
    assert templated.render(ChatInput("just this", raw=True))[0] == "just this"


def test_model_type_template_used_when_tokenizer_has_none() -> None:
    chat = Chat(WordTokenizer(chat_template=None), 4096, max_round=5, model_type="qwen")
    text, _, _ = chat.render(ChatInput("hi"))
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert chat.template_source == "model-type:qwen"
    llama3 = Chat(WordTokenizer(chat_template=None), 4096, max_round=5, model_type="llama3")
    assert "<|start_header_id|>assistant<|end_header_id|>" in llama3.render(ChatInput("hi"))[0]


def test_unknown_model_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown --model-type"):
        Chat(WordTokenizer(chat_template=None), 4096, max_round=5, model_type="nope")


def test_prompt_that_cannot_fit_is_invalid_argument_and_max_new_tokens_is_clipped() -> None:
    chat = Chat(WordTokenizer(), 20, max_round=5)
    built = chat.build(ChatInput("a b c"), max_new_tokens=100)
    assert built.max_new_tokens == 20 - len(built.ids)
    with pytest.raises(InvalidArgument) as err:
        chat.build(ChatInput(" ".join(["w"] * 30)), max_new_tokens=10)
    assert err.value.field == "prompt"


def test_knowledge_context_goes_into_the_user_message() -> None:
    chat = Chat(WordTokenizer(), 4096, max_round=5)
    chunks = [Retrieved("d1", "guide.md", 0, 0.9, "The warranty lasts 3 years.")]
    text, _, _ = chat.render(ChatInput("How long is the warranty?"), chunks)
    assert "The warranty lasts 3 years." in text and "(guide.md)" in text
    assert "same language as the question" in text
    assert text.index("warranty lasts") < text.index("How long is the warranty?")
