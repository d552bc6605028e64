"""Anthropic's Messages bodies (POST /v1/messages, /v1/messages/count_tokens) as pydantic models.

Every field of Anthropic's body is implemented or answered 400 naming it: images, documents,
thinking, server tools (web search, code execution, ...), MCP servers and containers have nothing
to run them here. `cache_control` is accepted on blocks and tools: prefix caching is automatic
(usage reports what it reused as cache_read_input_tokens).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from chatllm.bridge.field_types import Boolean, Count, Number, String, TopK
from chatllm.bridge.openai.request import REFUSED_FIELD, refuse
from chatllm.bridge.openai.request_parts import Strict
from chatllm.bridge.validation import FieldProblem
from chatllm.proto import pb

REFUSED = {
    "container": "containers (no server-side code execution here)",
    "mcp_servers": "MCP servers (call your tools yourself: tool_use, then tool_result)",
    "context_management": "context management",
}
CREATE_REFUSED = {
    "diagnostics": "prompt-cache diagnostics",
    "inference_geo": "inference regions (this server runs where it runs)",
}
TOOL_ERROR_PREFIX = "Error: "  # a tool_result with is_error: the chat template has no such flag


class CacheControl(Strict):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


CACHE_CONTROL = "accepted: prefix caching is automatic here"


class TextBlock(Strict):
    type: Literal["text"]
    text: String
    cache_control: CacheControl | None = Field(None, description=CACHE_CONTROL)
    citations: None = Field(None, description="null only: no documents to cite")


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: String
    name: String
    input: dict[str, Any]
    cache_control: CacheControl | None = Field(None, description=CACHE_CONTROL)


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: String
    content: String | list[TextBlock] | None = None
    is_error: Boolean | None = Field(None, description=f"the result reaches the model prefixed `{TOOL_ERROR_PREFIX}`")
    cache_control: CacheControl | None = Field(None, description=CACHE_CONTROL)

    def text(self) -> str:
        content = self.content if isinstance(self.content, str) or self.content is None else _joined(self.content)
        return (TOOL_ERROR_PREFIX if self.is_error else "") + (content or "")


def _kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"block[{kind}]" if kind in ("text", "tool_use", "tool_result") else None


# Bracketed tags: validation.field_path leaves them out of an error's field (`messages[0].content[1].text`).
ContentBlock = Annotated[
    Annotated[TextBlock, Tag("block[text]")]
    | Annotated[ToolUseBlock, Tag("block[tool_use]")]
    | Annotated[ToolResultBlock, Tag("block[tool_result]")],
    Discriminator(
        _kind,
        custom_error_type="unsupported_field",
        custom_error_message="not supported: only text, tool_use and tool_result blocks "
        "(no image, document, thinking or server tool blocks)",
    ),
]


def _joined(blocks: list[TextBlock]) -> str:
    return "".join(block.text for block in blocks)


def _string_is_a_text_block(value: Any) -> Any:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


def _or_a_string(schema: dict[str, Any]) -> None:
    blocks = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string"}, blocks]


# A string is one text block; validated as the list it stands for, so an error names the block at fault.
Blocks = Annotated[list[ContentBlock], BeforeValidator(_string_is_a_text_block), Field(json_schema_extra=_or_a_string)]


class Message(Strict):
    role: Literal["user", "assistant"]
    content: Blocks

    def to_pb(self) -> list[pb.Message]:
        """A user message's tool_result blocks become tool messages (first), its text one user message;
        an assistant message's tool_use blocks become its tool calls."""
        text = _joined([b for b in self.content if isinstance(b, TextBlock)])
        if self.role == "assistant":
            calls = [
                pb.ToolCall(id=b.id, name=b.name, arguments=json.dumps(b.input, ensure_ascii=False))
                for b in self.content
                if isinstance(b, ToolUseBlock)
            ]
            return [pb.Message(role="assistant", content=text, tool_calls=calls)]
        if any(isinstance(b, ToolUseBlock) for b in self.content):
            raise FieldProblem("messages", "tool_use blocks belong to assistant messages")
        results = [
            pb.Message(role="tool", tool_call_id=b.tool_use_id, content=b.text())
            for b in self.content
            if isinstance(b, ToolResultBlock)
        ]
        has_text = any(isinstance(b, TextBlock) for b in self.content)
        return [*results, *([pb.Message(role="user", content=text)] if has_text or not results else [])]


class Tool(Strict):
    """A client tool (Anthropic's `custom` type): the model calls it, the client runs it."""

    name: String
    description: String | None = None
    input_schema: dict[str, Any] = Field(description="JSON Schema of the tool's input object")
    type: Literal["custom"] | None = Field(None, description="custom only: no server tools")
    cache_control: CacheControl | None = Field(None, description=CACHE_CONTROL)
    strict: Boolean | None = None

    def to_pb(self) -> pb.Tool:
        parameters = json.dumps(self.input_schema, ensure_ascii=False)
        return pb.Tool(
            name=self.name, description=self.description or "", parameters_json=parameters, strict=bool(self.strict)
        )


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: String | None = None
    disable_parallel_tool_use: Boolean | None = None

    @model_validator(mode="after")
    def _named_when_needed(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise FieldProblem("tool_choice.name", "type tool needs the tool's name")
        return self

    def to_pb(self) -> pb.ToolChoice:
        if self.type == "tool":
            return pb.ToolChoice(function=self.name)
        modes = {"auto": pb.ToolChoice.TOOL_CHOICE_AUTO, "any": pb.ToolChoice.TOOL_CHOICE_REQUIRED}
        return pb.ToolChoice(mode=modes.get(self.type, pb.ToolChoice.TOOL_CHOICE_NONE))


class Thinking(Strict):
    type: Literal["disabled"] = Field(description="disabled only: this server has no extended thinking")


class OutputFormat(Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Strict):
    format: OutputFormat | None = Field(None, description="structured output: JSON that validates against a schema")
    effort: Any = Field(None, description=REFUSED_FIELD)

    @field_validator("effort", mode="before")
    @classmethod
    def _no_effort(cls, value: Any) -> Any:
        if value is not None:
            raise FieldProblem("output_config.effort", "not supported: this server has no effort setting")
        return value


class Metadata(Strict):
    user_id: String | None = Field(None, description="kept in the history export")


class ConversationFields(Strict):
    """What messages.create and messages.count_tokens share."""

    model: String
    messages: list[Message] = Field(min_length=1)
    system: String | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl | None = Field(None, description=CACHE_CONTROL)
    speed: Literal["standard"] | None = Field(None, description="standard only")
    container: Any = Field(None, description=REFUSED_FIELD)
    mcp_servers: Any = Field(None, description=REFUSED_FIELD)
    context_management: Any = Field(None, description=REFUSED_FIELD)

    _refuse = field_validator(*REFUSED, mode="before")(refuse(REFUSED))

    def pb_messages(self) -> list[pb.Message]:
        system = self.system if isinstance(self.system, str) or self.system is None else _joined(self.system)
        out = [pb.Message(role="system", content=system)] if system else []
        for message in self.messages:
            out.extend(message.to_pb())
        return out

    def client_field(self, server_field: str) -> str:
        renames = {"sampling.max_new_tokens": "max_tokens", "sampling.stop": "stop_sequences"}
        if server_field in renames:
            return renames[server_field]
        if server_field.startswith("structured_output"):
            return "output_config.format"
        if server_field.startswith(("messages", "prompt", "history")):
            return "messages"
        return server_field.removeprefix("sampling.")


class MessagesRequest(ConversationFields):
    """POST /v1/messages."""

    max_tokens: Count
    stop_sequences: list[String] | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: TopK | None = None
    stream: Boolean | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = Field(None, description="one tier here: both mean it")
    diagnostics: Any = Field(None, description=REFUSED_FIELD)
    inference_geo: Any = Field(None, description=REFUSED_FIELD)

    _refuse_create = field_validator(*CREATE_REFUSED, mode="before")(refuse(CREATE_REFUSED))

    def to_generate_request(self, request_id: str) -> pb.GenerateRequest:
        values = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
        sampling = pb.SamplingParams(
            max_new_tokens=self.max_tokens,
            stop=self.stop_sequences or [],
            **{k: v for k, v in values.items() if v is not None},
        )
        choice = self.tool_choice
        structured = None
        if self.output_config is not None and self.output_config.format is not None:
            schema = self.output_config.format.schema_
            structured = pb.StructuredOutput(json_schema=json.dumps(schema, ensure_ascii=False))
        return pb.GenerateRequest(
            messages=self.pb_messages(),
            sampling=sampling,
            request_id=request_id,
            channel="anthropic",
            model=self.model,
            tools=[t.to_pb() for t in self.tools or []],
            tool_choice=choice.to_pb() if choice is not None else None,
            parallel_tool_calls=False if choice is not None and choice.disable_parallel_tool_use else None,
            structured_output=structured,
            user=self.metadata.user_id or "" if self.metadata else "",
        )


class CountTokensRequest(ConversationFields):
    """POST /v1/messages/count_tokens: the tokens the model would read for this conversation."""

    def to_pb(self) -> pb.TokenizeRequest:
        return pb.TokenizeRequest(
            model=self.model,
            messages=self.pb_messages(),
            tools=[t.to_pb() for t in self.tools or []],
            add_generation_prompt=True,
        )
