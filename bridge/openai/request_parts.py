"""The parts of OpenAI request bodies: messages, tools, tool choice, response formats.

Shapes follow OpenAI's API (and vLLM's extensions); anything the engines cannot honour is
a 400 naming it, never silently dropped (images, audio, custom tools, ...).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from chatllm.bridge.field_types import Boolean, String, StringList
from chatllm.bridge.validation import FieldProblem
from chatllm.kernel.request_rules import MESSAGE_ROLES, message_problem
from chatllm.proto import pb


def _role(value: Any) -> Any:
    if isinstance(value, str) and value in MESSAGE_ROLES:
        return value
    raise PydanticCustomError("invalid_field", "role must be one of {roles}", {"roles": ", ".join(MESSAGE_ROLES)})


# The roles a message may have (the server checks the same rule: chatllm.kernel.request_rules).
Role = Annotated[str, BeforeValidator(_role), WithJsonSchema({"type": "string", "enum": list(MESSAGE_ROLES)})]


class Strict(BaseModel):
    """Unknown fields are a 400 naming them: nothing a client sends is silently dropped."""

    model_config = ConfigDict(extra="forbid")


def _text_parts(value: Any) -> Any:
    """Content is a string, null, or a list of text parts (`{"type": "text", "text": ...}`)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise PydanticCustomError("invalid_field", "must be a string or a list of text parts")
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "refusal", "input_text"):
            raise PydanticCustomError(
                "invalid_field", "only text parts are supported (got a {kind} part)", {"kind": kind}
            )
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise PydanticCustomError("invalid_field", "each text part needs a string `text`")
    return "".join(part.get("text", part.get("refusal")) for part in value)


Content = Annotated[
    str | None,
    BeforeValidator(_text_parts),
    Field(
        json_schema_extra={
            "anyOf": [
                {"type": "string"},
                {"type": "null"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}},
                        "required": ["type", "text"],
                    },
                },
            ]
        }
    ),
]


class FunctionCall(Strict):
    name: String
    arguments: String = Field(description="the arguments, a JSON object as text")


class ToolCall(Strict):
    id: String
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Strict):
    """One message; which fields a message may carry depends on its role."""

    role: Role
    content: Content = None
    name: String | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="assistant messages: the calls it made")
    tool_call_id: String | None = Field(None, description="tool messages: the call this answers")
    refusal: String | None = None

    @model_validator(mode="after")
    def _fits_the_role(self) -> ChatMessage:
        problem = message_problem(self.role, self.tool_call_id is not None, bool(self.tool_calls))
        if problem is not None:
            raise PydanticCustomError("invalid_field", "{field}: {why}", {"field": problem[0], "why": problem[1]})
        if self.role != "assistant" and self.content is None:
            raise PydanticCustomError("invalid_field", "{role} messages need `content`", {"role": self.role})
        return self

    def to_pb(self) -> pb.Message:
        calls = [
            pb.ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in self.tool_calls or []
        ]
        content = self.content if self.content is not None else (self.refusal or "")
        return pb.Message(
            role=self.role,
            content=content,
            name=self.name or "",
            tool_calls=calls,
            tool_call_id=self.tool_call_id or "",
        )


class FunctionDefinition(Strict):
    name: String
    description: String | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments object")
    strict: Boolean | None = None


class FunctionTool(Strict):
    type: Literal["function"]
    function: FunctionDefinition

    def to_pb(self) -> pb.Tool:
        f = self.function
        parameters = json.dumps(f.parameters, ensure_ascii=False) if f.parameters is not None else ""
        return pb.Tool(name=f.name, description=f.description or "", parameters_json=parameters, strict=bool(f.strict))


class NamedFunction(Strict):
    name: String


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoiceMode = Literal["none", "auto", "required"]
_TOOL_CHOICE_MODES = {
    "auto": pb.ToolChoice.TOOL_CHOICE_AUTO,
    "none": pb.ToolChoice.TOOL_CHOICE_NONE,
    "required": pb.ToolChoice.TOOL_CHOICE_REQUIRED,
}


def tool_choice_pb(choice: ToolChoiceMode | NamedToolChoice | None) -> pb.ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        return pb.ToolChoice(function=choice.function.name)
    return pb.ToolChoice(mode=_TOOL_CHOICE_MODES[choice])


class JsonSchemaFormat(Strict):
    name: String
    description: String | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: Boolean | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise FieldProblem("response_format.json_schema", "type json_schema needs it")
        return self

    def to_pb(self) -> pb.StructuredOutput | None:
        if self.type == "json_object":
            return pb.StructuredOutput(json_object=True)
        if self.type == "json_schema":
            assert self.json_schema is not None
            schema = self.json_schema.schema_ if self.json_schema.schema_ is not None else {}
            return pb.StructuredOutput(json_schema=json.dumps(schema, ensure_ascii=False))
        return None


class StructuredOutputs(Strict):
    """vLLM's `structured_outputs`: exactly one constraint."""

    json_: dict[str, Any] | String | None = Field(None, alias="json")
    regex: String | None = None
    choice: StringList | None = None
    grammar: String | None = None
    json_object: Boolean | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        given = [n for n in ("json_", "regex", "choice", "grammar") if getattr(self, n) is not None]
        if self.json_object:
            given.append("json_object")
        if len(given) != 1:
            raise FieldProblem("structured_outputs", "give exactly one of json, regex, choice, grammar, json_object")
        return self

    def to_pb(self) -> pb.StructuredOutput:
        return structured_output(self.json_, self.regex, self.choice, self.grammar, bool(self.json_object))


def structured_output(
    json_schema: dict[str, Any] | str | None,
    regex: str | None,
    choice: list[str] | None,
    grammar: str | None,
    json_object: bool = False,
) -> pb.StructuredOutput:
    if json_schema is not None:
        text = json_schema if isinstance(json_schema, str) else json.dumps(json_schema, ensure_ascii=False)
        return pb.StructuredOutput(json_schema=text)
    if regex is not None:
        return pb.StructuredOutput(regex=regex)
    if choice is not None:
        return pb.StructuredOutput(choice=pb.ChoiceList(choices=choice))
    if grammar is not None:
        return pb.StructuredOutput(grammar=grammar)
    return pb.StructuredOutput(json_object=json_object)


class StreamOptions(Strict):
    include_usage: Boolean | None = None
    continuous_usage_stats: Boolean | None = Field(None, description="vLLM: usage in every chunk")
    include_obfuscation: Literal[False] | None = Field(None, description="only false: chunks are never padded")
