"""The items of a Responses conversation (OpenAI's shapes): messages, function calls, function call outputs.

Clients send them as `input` (the Agents SDK and LangChain send back the output items of earlier
responses too, with their ids and statuses), and the store keeps them; `to_messages` turns a
conversation of items into the chat messages the server's Generate takes. Items this server
cannot honour (reasoning, item references, images, files, built-in tool calls) are a 400 naming
the item.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, WithJsonSchema
from pydantic_core import PydanticCustomError

from chatllm.bridge.field_types import String
from chatllm.bridge.openai.request_parts import Strict
from chatllm.proto import pb

TEXT_PARTS = ("input_text", "output_text", "refusal", "text")
ITEM_KINDS = ("message", "function_call", "function_call_output")
Status = Literal["in_progress", "completed", "incomplete"]


def _text(value: Any) -> Any:
    """A string, or a list of text parts (input_text, output_text, refusal) joined."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise PydanticCustomError("invalid_field", "must be a string or a list of text parts")
    pieces = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS:
            raise PydanticCustomError(
                "unsupported_field", "not supported: {kind} parts (this server reads text only)", {"kind": kind}
            )
        text = part.get("refusal") if kind == "refusal" else part.get("text")
        if not isinstance(text, str):
            raise PydanticCustomError("invalid_field", "each {kind} part needs a string", {"kind": kind})
        pieces.append(text)
    return "".join(pieces)


TextContent = Annotated[
    str,
    BeforeValidator(_text),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
            "description": "a string, or input_text / output_text / refusal parts",
        }
    ),
]


class MessageItem(Strict):
    """A message (`type` may be left out, as in OpenAI's EasyInputMessage)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: TextContent
    id: String | None = None
    status: Status | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(Strict):
    """A call the model made (an output item, sent back as input by clients that keep the history)."""

    type: Literal["function_call"]
    call_id: String
    name: String
    arguments: String = Field(description="a JSON object as text")
    id: String | None = None
    status: Status | None = None


class FunctionCallOutputItem(Strict):
    """What the client's function returned for a call."""

    type: Literal["function_call_output"]
    call_id: String
    output: TextContent
    id: String | None = None
    status: Status | None = None


def _item_kind(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return f"item[{kind}]" if kind in ITEM_KINDS else None


# Tags with brackets: pydantic puts the tag in an error's location, and validation.field_path leaves
# such names out, so a 400 names `input[2].content`, not `input[2].message.content`.
InputItem = Annotated[
    Annotated[MessageItem, Tag("item[message]")]
    | Annotated[FunctionCallItem, Tag("item[function_call]")]
    | Annotated[FunctionCallOutputItem, Tag("item[function_call_output]")],
    Discriminator(
        _item_kind,
        custom_error_type="unsupported_field",
        custom_error_message="not supported: only message, function_call and function_call_output items "
        "(no reasoning, item_reference or built-in tool items)",
    ),
]
Item = MessageItem | FunctionCallItem | FunctionCallOutputItem


def to_messages(items: Iterable[dict[str, Any]]) -> list[pb.Message]:
    """Stored / validated items (as JSON objects) -> chat messages. Consecutive function calls, and an
    assistant message followed by calls, become one assistant message with tool_calls."""
    messages: list[pb.Message] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(pb.Message(role=item["role"], content=_joined(item.get("content"))))
        elif kind == "function_call":
            call = pb.ToolCall(id=item["call_id"], name=item["name"], arguments=item["arguments"])
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls.append(call)
            else:
                messages.append(pb.Message(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            messages.append(pb.Message(role="tool", tool_call_id=item["call_id"], content=_joined(item["output"])))
    return messages


def _joined(content: Any) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else _text(content)


ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def item_json(item: Item) -> dict[str, Any]:
    """An input item as stored and listed (input_items): OpenAI's shape, with an id."""
    data = item.model_dump(exclude_none=True)
    data.setdefault("id", new_id(ID_PREFIXES[item.type]))
    if isinstance(item, MessageItem):
        part = "output_text" if item.role == "assistant" else "input_text"
        data["content"] = [{"type": part, "text": item.content}]
        data.setdefault("status", "completed")
    return data
