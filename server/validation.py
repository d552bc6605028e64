"""Checks of a GenerateRequest before anything is admitted: every problem is INVALID_ARGUMENT
naming the field (the BadRequest detail carries it too)."""

from __future__ import annotations

import json
from typing import Any

from chatllm.kernel.config import LimitsConfig
from chatllm.kernel.json_depth import MAX_JSON_DEPTH, deeper_than
from chatllm.kernel.request_rules import (
    DEFAULT_KNOWLEDGE_BASE,
    KNOWLEDGE_BASE_NAME_RULE,
    MAX_CHANNEL_CHARS,
    message_problem,
    valid_knowledge_base_name,
)
from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument

MAX_REQUEST_ID = 128
MAX_RETRIEVAL_TOP_K = 50
MAX_TOOLS = 128
MAX_NAME = 256
MAX_METADATA = 16
# Template variables the server sets itself (or that would swap the template): not a client's to pass.
RESERVED_TEMPLATE_KWARGS = frozenset(
    {"chat_template", "tokenize", "messages", "conversation", "tools", "add_generation_prompt",
     "continue_final_message", "documents", "return_dict", "tokenizer_kwargs"}
)  # fmt: skip


def json_field(text: str, field: str) -> Any:
    """Decode a request's JSON text field, refusing text nested deeper than MAX_JSON_DEPTH before the
    decoder (or a grammar compiler, or a template) recurses that deep."""
    check_json_depth(text, field)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(field, f"not valid JSON: {exc}") from None


def check_json_depth(text: str, field: str) -> None:
    if deeper_than(text):
        raise InvalidArgument(field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def knowledge_base_name(name: str, field: str = "knowledge_base") -> str:
    name = name or DEFAULT_KNOWLEDGE_BASE
    if not valid_knowledge_base_name(name):
        raise InvalidArgument(field, KNOWLEDGE_BASE_NAME_RULE)
    return name


def validate(request: pb.GenerateRequest, limits: LimitsConfig) -> None:
    if request.messages:
        _messages(request, limits)
    else:
        _legacy(request, limits)
    if len(request.request_id) > MAX_REQUEST_ID:
        raise InvalidArgument("request_id", f"at most {MAX_REQUEST_ID} characters")
    if len(request.channel) > MAX_CHANNEL_CHARS:
        raise InvalidArgument("channel", f"at most {MAX_CHANNEL_CHARS} characters")
    if request.retrieval_top_k > MAX_RETRIEVAL_TOP_K:
        raise InvalidArgument("retrieval_top_k", f"at most {MAX_RETRIEVAL_TOP_K}")
    if request.use_knowledge_base:
        knowledge_base_name(request.knowledge_base)
    _tools(request)
    for key in request.chat_template_kwargs.fields:
        if key in RESERVED_TEMPLATE_KWARGS:
            raise InvalidArgument(f"chat_template_kwargs.{key}", "set by the server; not a request's to pass")
    if len(request.model) > MAX_NAME or len(request.user) > MAX_NAME:
        raise InvalidArgument("model" if len(request.model) > MAX_NAME else "user", f"at most {MAX_NAME} characters")
    if len(request.metadata) > MAX_METADATA or any(len(k) > 64 or len(v) > 512 for k, v in request.metadata.items()):
        raise InvalidArgument(
            "metadata", f"at most {MAX_METADATA} pairs, keys up to 64 and values up to 512 characters"
        )


def _legacy(request: pb.GenerateRequest, limits: LimitsConfig) -> None:
    if not request.prompt.strip():
        raise InvalidArgument("prompt", "must not be empty")
    if len(request.prompt) + len(request.system_prompt) > limits.max_prompt_chars:
        raise InvalidArgument("prompt", f"prompt and system prompt exceed {limits.max_prompt_chars} characters")
    if len(request.history) > limits.max_history_rounds:
        raise InvalidArgument("history", f"at most {limits.max_history_rounds} rounds")
    history_chars = sum(len(t.user) + len(t.assistant) for t in request.history)
    if history_chars > limits.max_prompt_chars * 4:
        raise InvalidArgument("history", f"history exceeds {limits.max_prompt_chars * 4} characters")
    if request.tools:
        raise InvalidArgument("tools", "tools go with `messages` (the legacy prompt has no tool messages)")


def _messages(request: pb.GenerateRequest, limits: LimitsConfig) -> None:
    if request.prompt or request.system_prompt or request.history:
        raise InvalidArgument("messages", "give either messages or prompt / system_prompt / history, not both")
    if request.raw_prompt:
        raise InvalidArgument("raw_prompt", "a raw prompt is `prompt`, not messages")
    if len(request.messages) > 2 * limits.max_history_rounds + 2:
        raise InvalidArgument("messages", f"at most {2 * limits.max_history_rounds + 2} messages")
    chars = 0
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        problem = message_problem(message.role, bool(message.tool_call_id), bool(message.tool_calls))
        if problem is not None:
            raise InvalidArgument(f"{where}.{problem[0]}", problem[1])
        for j, call in enumerate(message.tool_calls):
            if not call.name:
                raise InvalidArgument(f"{where}.tool_calls[{j}].name", "must not be empty")
            check_json_depth(call.arguments, f"{where}.tool_calls[{j}].arguments")
        chars += len(message.content) + sum(len(c.arguments) for c in message.tool_calls)
    if chars > limits.max_prompt_chars * 5:
        raise InvalidArgument("messages", f"exceed {limits.max_prompt_chars * 5} characters")
    if request.use_knowledge_base and not any(m.role == "user" for m in request.messages):
        raise InvalidArgument("messages", "the knowledge base answers the last user message, and there is none")


def _tools(request: pb.GenerateRequest) -> None:
    if len(request.tools) > MAX_TOOLS:
        raise InvalidArgument("tools", f"at most {MAX_TOOLS} tools")
    names = set()
    for i, tool in enumerate(request.tools):
        if not tool.name or len(tool.name) > MAX_NAME:
            raise InvalidArgument(f"tools[{i}].name", f"1-{MAX_NAME} characters")
        if tool.name in names:
            raise InvalidArgument(f"tools[{i}].name", f"{tool.name!r} is given twice")
        names.add(tool.name)
        if tool.parameters_json:
            parameters = json_field(tool.parameters_json, f"tools[{i}].parameters")
            if not isinstance(parameters, dict):
                raise InvalidArgument(f"tools[{i}].parameters", "a JSON Schema object")
    wanted = request.tool_choice.function
    if wanted and wanted not in names:
        raise InvalidArgument("tool_choice", f"{wanted!r} is not one of the tools")
    if request.HasField("tool_choice") and not request.tools and (wanted or request.tool_choice.mode):
        raise InvalidArgument("tool_choice", "needs `tools`")
