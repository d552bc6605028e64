"""What /v1/responses answers, as pydantic models (OpenAI's shapes): the Response object, and the events
of its stream (written as JSON text per token by stream.py; a test checks them against these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from chatllm.bridge.reply_parts import Body

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(Body):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[dict[str, Any]] = Field(description="with include message.output_text.logprobs")


class OutputMessage(Body):
    id: str
    type: Literal["message"]
    status: ItemStatus
    role: Literal["assistant"]
    content: list[OutputText]


class FunctionCall(Body):
    id: str
    type: Literal["function_call"]
    status: ItemStatus
    call_id: str = Field(description="what the function_call_output item that answers it names")
    name: str
    arguments: str = Field(description="a JSON object as text")


class InputTokensDetails(Body):
    cached_tokens: int = Field(description="prompt tokens whose KV cache was reused (prefix caching)")


class OutputTokensDetails(Body):
    reasoning_tokens: int


class ResponseUsage(Body):
    input_tokens: int = Field(description="the whole conversation as the model read it, earlier turns included")
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(Body):
    code: str
    message: str


class ResponseObject(Body):
    """A response (POST /v1/responses, GET /v1/responses/{id}, cancel) and each stream event's `response`."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    background: bool
    completed_at: int | None
    error: ResponseError | None
    incomplete_details: dict[str, Any] | None = Field(description='{"reason": "max_output_tokens"} when cut')
    instructions: str | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    metadata: dict[str, str]
    model: str
    output: list[OutputMessage | FunctionCall]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: dict[str, Any]
    service_tier: str
    store: bool
    temperature: float | None
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    top_logprobs: int | None
    top_p: float | None
    truncation: Literal["disabled"]
    usage: ResponseUsage | None
    user: str | None
    safety_identifier: str | None


class ResponseDeleted(Body):
    id: str
    object: Literal["response.deleted"]
    deleted: Literal[True]


class InputItemList(Body):
    object: Literal["list"]
    data: list[dict[str, Any]] = Field(description="message, function_call and function_call_output items")
    first_id: str | None
    last_id: str | None
    has_more: bool


class ResponseLifecycleEvent(Body):
    type: Literal[
        "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed"
    ]
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(Body):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputMessage | FunctionCall


class ContentPartEvent(Body):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDeltaEvent(Body):
    type: Literal["response.output_text.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict[str, Any]]


class OutputTextDoneEvent(Body):
    type: Literal["response.output_text.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict[str, Any]]


class ArgumentsDeltaEvent(Body):
    type: Literal["response.function_call_arguments.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(Body):
    type: Literal["response.function_call_arguments.done"]
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class StreamErrorEvent(Body):
    """A failure mid-stream (then response.failed)."""

    type: Literal["error"]
    sequence_number: int
    code: str | None
    message: str
    param: str | None


class ResponseStreamEvent(
    RootModel[
        Annotated[
            ResponseLifecycleEvent
            | OutputItemEvent
            | ContentPartEvent
            | OutputTextDeltaEvent
            | OutputTextDoneEvent
            | ArgumentsDeltaEvent
            | ArgumentsDoneEvent
            | StreamErrorEvent,
            Field(discriminator="type"),
        ]
    ]
):
    """One event of a streamed response (`event:` names its type)."""
