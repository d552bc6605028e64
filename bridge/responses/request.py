"""POST /v1/responses: OpenAI's create body as one pydantic model, and its Generate request.

Every field of OpenAI's body is implemented or answered 400 naming it: built-in tools (web
search, file search, computer use, MCP, ...), reasoning summaries, stored prompts, conversations
and context management have nothing to run them here and are refused, never dropped.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from google.protobuf import struct_pb2
from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from chatllm.bridge.field_types import Boolean, Count, Number, String, TopLogprobs
from chatllm.bridge.openai.request import REFUSED_FIELD, refuse
from chatllm.bridge.openai.request_parts import Strict, tool_choice_pb
from chatllm.bridge.responses.items import InputItem, Item
from chatllm.bridge.validation import FieldProblem
from chatllm.proto import pb

MAX_METADATA_KEYS = 16  # OpenAI's limit on `metadata`
LOGPROBS_INCLUDE = "message.output_text.logprobs"
REFUSED = {
    "conversation": "conversations (chain responses with previous_response_id)",
    "prompt": "stored prompt templates",
    "context_management": "context management",
    "moderation": "moderation",
    "prompt_cache_key": "prompt cache keys (prefix caching is automatic)",
    "prompt_cache_options": "prompt cache options (prefix caching is automatic)",
    "prompt_cache_retention": "prompt cache retention (prefix caching is automatic)",
}


def _string_is_a_user_message(value: Any) -> Any:
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


def _or_a_string(schema: dict[str, Any]) -> None:
    items = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string"}, items]


# A string is one user message; validated as the list it stands for, so an error names the item at fault.
InputItems = Annotated[
    list[InputItem], BeforeValidator(_string_is_a_user_message), Field(json_schema_extra=_or_a_string)
]


class FunctionTool(Strict):
    """A function the model may call (the Responses API's flat shape)."""

    type: Literal["function"]
    name: String
    description: String | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments object")
    strict: Boolean | None = None

    def to_pb(self) -> pb.Tool:
        parameters = json.dumps(self.parameters, ensure_ascii=False) if self.parameters is not None else ""
        return pb.Tool(
            name=self.name, description=self.description or "", parameters_json=parameters, strict=bool(self.strict)
        )


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")],
    Discriminator(
        lambda v: v.get("type") if isinstance(v, dict) else getattr(v, "type", None),
        custom_error_type="unsupported_field",
        custom_error_message="not supported: only function tools (no built-in tools such as web_search, "
        "file_search, computer_use, code_interpreter, mcp or image_generation)",
    ),
]


class FunctionChoice(Strict):
    type: Literal["function"]
    name: String


class TextFormat(Strict):
    """text.format: plain text, any JSON object, or JSON that validates against a schema."""

    type: Literal["text", "json_object", "json_schema"]
    name: String | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: String | None = None
    strict: Boolean | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> TextFormat:
        if self.type == "json_schema" and (self.schema_ is None or not self.name):
            raise FieldProblem("text.format", "type json_schema needs `name` and `schema`")
        return self

    def to_pb(self) -> pb.StructuredOutput | None:
        if self.type == "json_object":
            return pb.StructuredOutput(json_object=True)
        if self.type == "json_schema":
            return pb.StructuredOutput(json_schema=json.dumps(self.schema_, ensure_ascii=False))
        return None

    def echo(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class TextConfig(Strict):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = Field(None, description="medium only (the model's own length)")


class Reasoning(Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        None, description="passed to the chat template as `reasoning_effort` (templates that know it use it)"
    )
    summary: Literal["auto", "concise", "detailed"] | None = Field(
        None, description=REFUSED_FIELD + ": no reasoning items are produced"
    )
    generate_summary: Any = Field(None, description=REFUSED_FIELD)

    @field_validator("summary", "generate_summary", mode="before")
    @classmethod
    def _no_summaries(cls, value: Any) -> Any:
        if value is not None:
            raise FieldProblem("reasoning.summary", "not supported: this server produces no reasoning summaries")
        return value


class StreamOptions(Strict):
    include_obfuscation: Literal[False] | None = Field(None, description="only false: events are never padded")


class ResponseCreateRequest(Strict):
    """POST /v1/responses."""

    model: String | None = Field(None, description="served model or LoRA adapter; default: the base model")
    input: InputItems | None = Field(
        None, description="a user message, or items: messages, function_call and function_call_output"
    )
    instructions: String | None = Field(None, description="a system message first (not carried to later responses)")
    previous_response_id: String | None = Field(None, description="continue after this stored response")
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: Boolean | None = None
    max_tool_calls: Count | None = Field(None, description="limits built-in tool calls, which this server has none of")
    text: TextConfig | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    max_output_tokens: Count | None = None
    top_logprobs: TopLogprobs | None = None
    include: list[Literal["message.output_text.logprobs"]] | None = None
    metadata: dict[str, String] | None = Field(None, description="up to 16 tags, stored and echoed")
    store: Boolean | None = Field(None, description="default true: kept for retrieval and chaining")
    stream: Boolean | None = None
    stream_options: StreamOptions | None = None
    background: Boolean | None = Field(None, description="answer at once (queued), generate, poll with GET")
    reasoning: Reasoning | None = None
    truncation: Literal["disabled"] | None = Field(
        None, description="disabled only: a conversation longer than the context is a 400"
    )
    service_tier: Literal["auto", "default"] | None = None
    user: String | None = None
    safety_identifier: String | None = None
    conversation: Any = Field(None, description=REFUSED_FIELD)
    prompt: Any = Field(None, description=REFUSED_FIELD)
    context_management: Any = Field(None, description=REFUSED_FIELD)
    moderation: Any = Field(None, description=REFUSED_FIELD)
    prompt_cache_key: Any = Field(None, description=REFUSED_FIELD)
    prompt_cache_options: Any = Field(None, description=REFUSED_FIELD)
    prompt_cache_retention: Any = Field(None, description=REFUSED_FIELD)

    _refuse = field_validator(*REFUSED, mode="before")(refuse(REFUSED))

    @model_validator(mode="after")
    def _consistent(self) -> ResponseCreateRequest:
        if self.input is None and self.previous_response_id is None:
            raise FieldProblem("input", "is required (or continue a stored response with previous_response_id)")
        if self.metadata is not None and len(self.metadata) > MAX_METADATA_KEYS:
            raise FieldProblem("metadata", f"at most {MAX_METADATA_KEYS} keys")
        if self.background and self.stream:
            raise FieldProblem("background", "a background response is polled with GET; send stream: false")
        if self.background and self.store is False:
            raise FieldProblem("background", "a background response must be stored (store: true)")
        if self.top_logprobs is not None and LOGPROBS_INCLUDE not in (self.include or ()):
            raise FieldProblem("top_logprobs", f'needs include: ["{LOGPROBS_INCLUDE}"]')
        return self

    @property
    def stored(self) -> bool:
        return self.store is not False

    @property
    def logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if LOGPROBS_INCLUDE in (self.include or ()) else None

    def input_items(self) -> list[Item]:
        return list(self.input or [])

    def to_generate_request(self, request_id: str, conversation: list[pb.Message]) -> pb.GenerateRequest:
        """`conversation`: the earlier responses' items and this request's input, as chat messages."""
        system = [pb.Message(role="system", content=self.instructions)] if self.instructions else []
        values = {
            "max_new_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "logprobs": self.logprobs,
        }
        kwargs = None
        if self.reasoning is not None and self.reasoning.effort is not None:
            kwargs = struct_pb2.Struct()
            kwargs.update({"reasoning_effort": self.reasoning.effort})
        choice = self.tool_choice
        return pb.GenerateRequest(
            messages=[*system, *conversation],
            sampling=pb.SamplingParams(**{k: v for k, v in values.items() if v is not None}),
            request_id=request_id,
            channel="openai",
            model=self.model or "",
            tools=[t.to_pb() for t in self.tools or []],
            tool_choice=tool_choice_pb(choice)
            if isinstance(choice, str) or choice is None
            else pb.ToolChoice(function=choice.name),
            parallel_tool_calls=self.parallel_tool_calls,
            structured_output=self.text.format.to_pb() if self.text and self.text.format else None,
            chat_template_kwargs=kwargs,
            user=self.user or self.safety_identifier or "",
            metadata=self.metadata or {},
        )

    def client_field(self, server_field: str) -> str:
        """A field named by the server as this client wrote it."""
        renames = {"sampling.max_new_tokens": "max_output_tokens", "sampling.logprobs": "top_logprobs"}
        if server_field in renames:
            return renames[server_field]
        if server_field.startswith("structured_output"):
            return "text.format"
        if server_field.startswith(("messages", "prompt", "history")):
            return "input"
        return server_field.removeprefix("sampling.")
