"""Tool calling with vLLM's own parsers, as `vllm serve --enable-auto-tool-choice --tool-call-parser`.

The server's `--tool-call-parser` (default hermes) picks one of `vllm.tool_parsers`, composed by
vLLM's `ParserManager`. Per request a vLLM `ChatCompletionRequest` carries the tools and the
tool choice; the parser's `adjust_request` turns `required` and a named function into a
structural tag (vLLM structured outputs: the call's envelope and, with `--tool-strict-level
parameter`, the arguments' JSON schema are enforced by the grammar, so even a tiny model
produces valid calls); `auto` lets the model write text or calls, which `parse_delta` separates
into content and tool-call deltas. Nothing here parses model output by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatllm.proto import pb
from chatllm.server.errors import InvalidArgument, StartupError
from chatllm.server.sampling import Constraint

STRICT_LEVELS = ("auto", "function", "parameter")


def tool_dicts(tools: Sequence[pb.Tool]) -> list[dict[str, Any]]:
    """Tools as OpenAI's request shape (what chat templates and vLLM's parsers read)."""
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = json.loads(tool.parameters_json) if tool.parameters_json else {"type": "object"}
        if tool.strict:
            function["strict"] = True
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: pb.ToolChoice) -> Any:
    if choice.function:
        return {"type": "function", "function": {"name": choice.function}}
    return {
        pb.ToolChoice.TOOL_CHOICE_AUTO: "auto",
        pb.ToolChoice.TOOL_CHOICE_NONE: "none",
        pb.ToolChoice.TOOL_CHOICE_REQUIRED: "required",
    }[choice.mode]


def _vllm_structured(constraint: Constraint | None) -> dict[str, Any] | None:
    if constraint is None:
        return None
    if constraint.kind == "json":
        return {"json": json.loads(str(constraint.value))}
    if constraint.kind == "json_object":
        return {"json_object": True}
    if constraint.kind == "choice":
        return {"choice": list(constraint.value)}
    return {constraint.kind: constraint.value}


@dataclass
class ToolCallAccumulator:
    """The complete tool calls of one choice, built from its streamed deltas."""

    calls: dict[int, pb.ToolCall] = field(default_factory=dict)

    def add(self, delta: pb.ToolCallDelta) -> None:
        call = self.calls.setdefault(delta.index, pb.ToolCall())
        call.id = call.id or delta.id
        call.name = call.name or delta.name
        call.arguments += delta.arguments

    def complete(self) -> list[pb.ToolCall]:
        return [self.calls[i] for i in sorted(self.calls)]


class ToolSession:
    """One request's tools: the constraint it adds, and a parser per choice for the streamed text."""

    def __init__(self, parser_cls: Any, tokenizer: Any, request: Any, named: bool) -> None:
        self._parser_cls = parser_cls
        self._tokenizer = tokenizer
        self.request = request  # vLLM's ChatCompletionRequest, adjusted by the parser
        self.named = named
        self.single_call = request.parallel_tool_calls is False

    @property
    def constraint(self) -> Constraint | None:
        """The structured-output constraint after the parser's adjustment (a structural tag for
        required / named / strict tools), or None."""
        so = self.request.structured_outputs
        if so is None:
            return None
        if so.structural_tag is not None:
            return Constraint("structural_tag", so.structural_tag)
        if so.json is not None:
            return Constraint("json", so.json if isinstance(so.json, str) else json.dumps(so.json))
        if so.json_object:
            return Constraint("json_object")
        if so.choice is not None:
            return Constraint("choice", tuple(so.choice))
        if so.regex is not None:
            return Constraint("regex", so.regex)
        return Constraint("grammar", so.grammar or "")

    @property
    def skip_special_tokens(self) -> bool:
        """Some parsers read special tokens (hermes' <tool_call> may be one): they must stay in the text."""
        return bool(self.request.skip_special_tokens)

    def choice_parser(self) -> ChoiceParser:
        return ChoiceParser(self._parser_cls(self._tokenizer, self.request.tools), self)


class ChoiceParser:
    """One choice's streamed text, split into content and tool-call deltas by vLLM's parser."""

    def __init__(self, parser: Any, session: ToolSession) -> None:
        self._parser = parser
        self._session = session
        self.calls = ToolCallAccumulator()

    def feed(
        self, text: str, token_ids: Sequence[int], prompt_ids: list[int], finished: bool
    ) -> tuple[str, list[pb.ToolCallDelta]]:
        delta = self._parser.parse_delta(
            text, list(token_ids), self._session.request, prompt_token_ids=prompt_ids, finished=finished
        )
        if delta is None:
            return "", []
        deltas = []
        for call in delta.tool_calls or []:
            if self._session.single_call and call.index != 0:
                continue  # parallel_tool_calls=false: the first call only (as vLLM's output filter)
            function = call.function
            piece = pb.ToolCallDelta(
                index=call.index,
                id=call.id or "",
                name=(function.name if function else None) or "",
                arguments=(function.arguments if function else None) or "",
            )
            self.calls.add(piece)
            deltas.append(piece)
        return delta.content or "", deltas

    def finish_reason(self, engine_finish: int) -> int:
        """vLLM's rule: calls made (tool choice not a named function) and a normal stop -> tool_calls."""
        if self.calls.calls and not self._session.named and engine_finish == pb.FINISH_REASON_STOP:
            return pb.FINISH_REASON_TOOL_CALLS
        return engine_finish


class ToolCalling:
    """The server's tool-call parser (--tool-call-parser, --tool-strict-level)."""

    def __init__(self, parser_name: str, strict_level: str, tokenizer: Any) -> None:
        try:
            from vllm.parser import ParserManager
            from vllm.tool_parsers import ToolParserManager
        except ImportError:  # pragma: no cover - vLLM is part of every install of this project
            raise StartupError("tool calling needs vLLM's tool parsers: install vllm (make install does)") from None
        try:
            ToolParserManager.get_tool_parser(parser_name)
        except KeyError:
            known = ", ".join(sorted(ToolParserManager.list_registered()))
            raise StartupError(f"--tool-call-parser {parser_name!r}: unknown; vLLM knows {known}") from None
        self.parser_name = parser_name
        self.tokenizer = tokenizer
        self._parser_cls: Any = ParserManager.get_parser(
            tool_parser_name=parser_name,
            enable_auto_tools=True,
            tool_strict_level=strict_level,
            tokenizer=tokenizer,
        )

    def session(self, request: pb.GenerateRequest, constraint: Constraint | None) -> ToolSession | None:
        """The tools of a request (None without tools, or with tool_choice none)."""
        if not request.tools:
            return None
        choice = _tool_choice(request.tool_choice)
        if choice == "none":
            return None
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.exceptions import VLLMValidationError

        body: dict[str, Any] = {"messages": [], "tools": tool_dicts(request.tools), "tool_choice": choice}
        if request.HasField("parallel_tool_calls"):
            body["parallel_tool_calls"] = request.parallel_tool_calls
        structured = _vllm_structured(constraint)
        if structured is not None:
            body["structured_outputs"] = structured
        try:
            vllm_request: Any = ChatCompletionRequest.model_validate(body)
            vllm_request = self._parser_cls(self.tokenizer, vllm_request.tools).adjust_request(vllm_request)
        except (VLLMValidationError, ValueError) as exc:
            raise InvalidArgument("tools", _one_line(exc)) from None
        return ToolSession(self._parser_cls, self.tokenizer, vllm_request, named=bool(request.tool_choice.function))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:500]
