"""OpenAI request bodies -> GenerateRequest (chat messages become system prompt, history, prompt).

Parameters the engines cannot honour are a 400 naming them (n > 1, logprobs,
tools, non-zero presence/frequency penalties, ...), never silently dropped;
`model` is accepted whatever it says (LangChain and friends send their own
defaults) and replies name the served model. Extensions, as in vLLM: top_k,
ignore_eos, repetition_penalty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatllm.bridge import fields
from chatllm.bridge.errors import bad_request
from chatllm.proto import pb

# Server field names (INVALID_ARGUMENT messages) -> OpenAI names.
CHAT_FIELDS = {
    "sampling.max_new_tokens": "max_tokens",
    "prompt": "messages",
    "history": "messages",
    "system_prompt": "messages",
}
COMPLETION_FIELDS = {"sampling.max_new_tokens": "max_tokens"}
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's (and vLLM's) default for /v1/completions
SYSTEM_ROLES = ("system", "developer")


@dataclass
class OpenAIRequest:
    generate: pb.GenerateRequest
    stream: bool
    include_usage: bool
    echo: str = ""  # /v1/completions with echo: the prompt, prepended to the text


def _common(body: dict[str, Any], default_max_tokens: int | None) -> tuple[pb.SamplingParams, bool, bool]:
    fields.string(body, "model")
    n = fields.integer(body, "n", 1, 1_000)
    if n not in (None, 1):
        raise bad_request("n", "only n=1 is supported")
    for name in ("presence_penalty", "frequency_penalty"):
        if fields.number(body, name) not in (None, 0.0):
            raise bad_request(name, "not supported; use repetition_penalty")
    if body.get("logprobs") not in (None, False, 0):
        raise bad_request("logprobs", "not supported")
    if body.get("logit_bias"):
        raise bad_request("logit_bias", "not supported")
    max_tokens = fields.integer(body, "max_completion_tokens", 1, fields.UINT32_MAX)
    if max_tokens is None:
        max_tokens = fields.integer(body, "max_tokens", 1, fields.UINT32_MAX)
    sampling = {
        "max_new_tokens": max_tokens if max_tokens is not None else default_max_tokens,
        "temperature": fields.number(body, "temperature"),
        "top_p": fields.number(body, "top_p"),
        "top_k": fields.integer(body, "top_k", 0, fields.INT32_MAX),
        "seed": fields.integer(body, "seed", 0, fields.UINT64_MAX),
        "repetition_penalty": fields.number(body, "repetition_penalty"),
        "ignore_eos": fields.boolean(body, "ignore_eos"),
    }
    params = pb.SamplingParams(
        stop=fields.string_list(body, "stop"), **{k: v for k, v in sampling.items() if v is not None}
    )
    stream = bool(fields.boolean(body, "stream"))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options", "must be an object")
    include_usage = bool(fields.boolean(options or {}, "include_usage"))
    return params, stream, include_usage


def _text_content(message: dict[str, Any], where: str) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}.content", "only text parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{where}.content", "must be a string or a list of text parts")


def _conversation(messages: Any) -> tuple[str, list[pb.Turn], str]:
    """(system prompt, earlier rounds, this round's user message) from a messages list."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages", "must be a non-empty list")
    system: list[str] = []
    turns: list[list[str]] = []  # [user, assistant], same-role neighbours merged
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(where, "must be an object with role and content")
        role, text = message.get("role"), _text_content(message, where)
        if role in SYSTEM_ROLES:
            system.append(text)
        elif role == "user":
            if turns and not turns[-1][1]:
                turns[-1][0] += "\n\n" + text
            else:
                turns.append([text, ""])
        elif role == "assistant":
            if not turns:
                turns.append(["", text])
            else:
                turns[-1][1] += ("\n\n" if turns[-1][1] else "") + text
        else:
            raise bad_request(f"{where}.role", f"must be system, developer, user or assistant, got {role!r}")
    if not turns or turns[-1][1]:
        raise bad_request("messages", "the last message must be from the user")
    history = [pb.Turn(user=u, assistant=a) for u, a in turns[:-1]]
    return "\n\n".join(system), history, turns[-1][0]


def chat_request(body: dict[str, Any], request_id: str) -> OpenAIRequest:
    if body.get("tools") or body.get("functions"):
        raise bad_request("tools", "tool calling is not supported")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise bad_request("response_format", "only type 'text' is supported")
    system_prompt, history, prompt = _conversation(body.get("messages"))
    sampling, stream, include_usage = _common(body, None)
    generate = pb.GenerateRequest(
        prompt=prompt,
        system_prompt=system_prompt,
        history=history,
        sampling=sampling,
        request_id=request_id,
        channel="openai",
    )
    return OpenAIRequest(generate, stream, include_usage)


def completion_request(body: dict[str, Any], request_id: str) -> OpenAIRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request("prompt", "must be a string (one prompt per request)")
    if fields.string(body, "suffix"):
        raise bad_request("suffix", "not supported")
    if fields.integer(body, "best_of", 1, 1_000) not in (None, 1):
        raise bad_request("best_of", "only best_of=1 is supported")
    sampling, stream, include_usage = _common(body, COMPLETIONS_DEFAULT_MAX_TOKENS)
    generate = pb.GenerateRequest(
        prompt=prompt,
        sampling=sampling,
        request_id=request_id,
        raw_prompt=True,
        channel="openai",
    )
    echo = prompt if fields.boolean(body, "echo") else ""
    return OpenAIRequest(generate, stream, include_usage, echo=echo)


RequestBuilder = Callable[[dict[str, Any], str], OpenAIRequest]
