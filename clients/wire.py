"""What goes over the wire: building GenerateRequests (legacy prompt or messages, sampling,
structured outputs, tools, model), reading answers back, and the error details the server sends."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from chatllm.proto import pb

INGEST_CHUNK_BYTES = 1024 * 1024
FINISH_NAMES = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
    pb.FINISH_REASON_ERROR: "error",
}


@dataclass
class ChatResult:
    """A whole answer with its final metadata."""

    text: str
    finish_reason: str
    usage: pb.Usage
    timings: pb.Timings
    sources: list[pb.Source] = field(default_factory=list)
    request_id: str = ""


def build_request(
    prompt: str = "",
    *,
    messages: Sequence[Mapping[str, Any] | pb.Message] = (),
    model: str = "",
    tools: Sequence[Mapping[str, Any]] = (),
    tool_choice: str | None = None,
    structured_output: pb.StructuredOutput | None = None,
    system_prompt: str = "",
    history: Sequence[tuple[str, str]] = (),
    knowledge_base: str | None = None,
    retrieval_top_k: int = 0,
    request_id: str = "",
    raw_prompt: bool = False,
    channel: str = "",
    stop: Sequence[str] = (),
    priority: str | None = None,
    **sampling: Any,
) -> pb.GenerateRequest:
    """A GenerateRequest; `sampling` takes the SamplingParams fields (max_new_tokens, temperature, n, ...).

    The input is `prompt` (+ `system_prompt`, `history`) or `messages` (dicts in OpenAI's shape, or
    pb.Message). `tools` are OpenAI-shaped function tools; `tool_choice` is "auto", "none", "required"
    or a function's name. `knowledge_base` set (even to "default") turns on knowledge-base answers.
    `priority`: interactive, default or bulk (the server keeps it within the token's ceiling)."""
    params = pb.SamplingParams(stop=list(stop), **{k: v for k, v in sampling.items() if v is not None})
    return pb.GenerateRequest(
        messages=[m if isinstance(m, pb.Message) else message_pb(m) for m in messages],
        model=model,
        tools=[tool_pb(t) for t in tools],
        tool_choice=tool_choice_pb(tool_choice),
        structured_output=structured_output,
        prompt=prompt,
        system_prompt=system_prompt,
        history=[pb.Turn(user=u, assistant=a) for u, a in history],
        sampling=params,
        request_id=request_id,
        use_knowledge_base=knowledge_base is not None,
        knowledge_base=knowledge_base or "",
        retrieval_top_k=retrieval_top_k,
        raw_prompt=raw_prompt,
        channel=channel,
        priority=priority_pb(priority),
    )


PRIORITIES = {"interactive": pb.PRIORITY_INTERACTIVE, "default": pb.PRIORITY_DEFAULT, "bulk": pb.PRIORITY_BULK}


def priority_pb(name: str | None) -> pb.Priority.ValueType:
    """A priority class's name as the proto's enum (ValueError for another name)."""
    if name is None:
        return pb.PRIORITY_UNSPECIFIED
    if name not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {name!r}")
    return PRIORITIES[name]


def _result(responses: Iterable[pb.GenerateResponse]) -> ChatResult:
    parts: list[str] = []
    final = pb.GenerateFinal()
    request_id = ""
    for response in responses:
        parts.append(response.text)
        request_id = response.request_id
        if response.HasField("final"):
            final = response.final
    return ChatResult(
        text="".join(parts),
        finish_reason=FINISH_NAMES.get(final.finish_reason, "unspecified"),
        usage=final.usage,
        timings=final.timings,
        sources=list(final.sources),
        request_id=request_id,
    )


def _ingest_messages(data: bytes, filename: str, knowledge_base: str, mime_type: str) -> Iterator[pb.IngestRequest]:
    header = pb.IngestHeader(knowledge_base=knowledge_base, filename=filename, mime_type=mime_type)
    yield pb.IngestRequest(header=header)
    for start in range(0, len(data), INGEST_CHUNK_BYTES):
        yield pb.IngestRequest(chunk=data[start : start + INGEST_CHUNK_BYTES])


def message_pb(message: Mapping[str, Any]) -> pb.Message:
    """An OpenAI-shaped message dict as a pb.Message."""
    calls = [
        pb.ToolCall(id=c.get("id", ""), name=c["function"]["name"], arguments=_arguments_text(c["function"]))
        for c in message.get("tool_calls") or ()
    ]
    return pb.Message(
        role=message["role"],
        content=message.get("content") or "",
        name=message.get("name") or "",
        tool_calls=calls,
        tool_call_id=message.get("tool_call_id") or "",
    )


def _arguments_text(function: Mapping[str, Any]) -> str:
    arguments = function.get("arguments", "")
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def tool_pb(tool: Mapping[str, Any]) -> pb.Tool:
    """An OpenAI-shaped function tool ({"type": "function", "function": {...}}) as a pb.Tool."""
    function = tool.get("function", tool)
    parameters = function.get("parameters")
    return pb.Tool(
        name=function["name"],
        description=function.get("description") or "",
        parameters_json=json.dumps(parameters) if parameters is not None else "",
        strict=bool(function.get("strict")),
    )


def tool_choice_pb(choice: str | None) -> pb.ToolChoice | None:
    modes = {"auto": pb.ToolChoice.TOOL_CHOICE_AUTO, "none": pb.ToolChoice.TOOL_CHOICE_NONE}
    modes["required"] = pb.ToolChoice.TOOL_CHOICE_REQUIRED
    if choice is None:
        return None
    if choice in modes:
        return pb.ToolChoice(mode=modes[choice])
    return pb.ToolChoice(function=choice)


@dataclass(frozen=True)
class ErrorDetails:
    """The google.rpc details of a failed call: the stable reason and the field at fault."""

    reason: str | None
    field: str | None


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Read the server's ErrorInfo reason and BadRequest field from a failed call (no message parsing)."""
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    raw = next((v for k, v in metadata or () if k == "grpc-status-details-bin"), None)
    if not isinstance(raw, bytes):
        return ErrorDetails(None, None)
    reason = field_name = None
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field_name = bad.field_violations[0].field if bad.field_violations else None
    return ErrorDetails(reason, field_name)
