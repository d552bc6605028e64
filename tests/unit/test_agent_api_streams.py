"""The Responses and Anthropic event streams of an answer that writes text, then calls two tools,
through the real answer pipeline (upstream messages in, events out): every item / block opens,
streams and closes in order, and the streamed arguments join to the final calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from chatllm.bridge.answer.pipeline import stream_answer
from chatllm.bridge.answer.progress import Progress
from chatllm.bridge.anthropic.shapes import MessageMeta, MessagesStream
from chatllm.bridge.responses.request import ResponseCreateRequest
from chatllm.bridge.responses.shapes import ResponseMeta
from chatllm.bridge.responses.stream import ResponsesStream
from chatllm.proto import pb

CALLS = [pb.ToolCall(id="call_a", name="get_weather", arguments='{"city": "Oslo"}'),
         pb.ToolCall(id="call_b", name="get_time", arguments="{}")]  # fmt: skip


def upstream_messages() -> list[pb.GenerateResponse]:
    delta = pb.ToolCallDelta
    final = pb.GenerateFinal(
        finish_reason=pb.FINISH_REASON_TOOL_CALLS,
        usage=pb.Usage(prompt_tokens=7, completion_tokens=9, total_tokens=16, cached_prompt_tokens=3),
        choices=[pb.ChoiceEnd(index=0, finish_reason=pb.FINISH_REASON_TOOL_CALLS, tool_calls=CALLS)],
    )
    return [
        pb.GenerateResponse(text="Let me ", completion_tokens=2, prompt_tokens=7),
        pb.GenerateResponse(text="check.", completion_tokens=3),
        pb.GenerateResponse(
            tool_calls=[delta(index=0, id="call_a", name="get_weather", arguments='{"city"')], completion_tokens=5
        ),
        pb.GenerateResponse(tool_calls=[delta(index=0, arguments=': "Oslo"}')], completion_tokens=7),
        pb.GenerateResponse(
            tool_calls=[delta(index=1, id="call_b", name="get_time", arguments="{}")], completion_tokens=9, final=final
        ),
    ]


async def updates() -> AsyncIterator[Progress]:
    progress = Progress()
    for message in upstream_messages():
        progress.apply(message)
        yield progress


class Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def start(self) -> None:
        return None

    async def send(self, chunks: list[bytes]) -> None:
        self.chunks += chunks


def collapsed(kinds: list[str]) -> list[str]:
    """Event types with runs of one type as one (the pipeline joins deltas a slow reader has not taken yet)."""
    return [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind]


def parse(chunks: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for chunk in chunks:
        kind, data = chunk.decode().strip().split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        events.append(event)
    return events


async def test_responses_items_open_stream_and_close_in_order() -> None:
    meta = ResponseMeta(ResponseCreateRequest.model_validate({"input": "x"}), "m")
    encoder, sink = ResponsesStream(meta), Collect()
    await stream_answer(updates(), encoder, sink)
    events = parse([*sink.chunks, encoder.last_event()])
    kinds = collapsed([e["type"] for e in events])
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    for item in final["output"][1:]:
        streamed = "".join(
            e["delta"] for e in events if e["type"].endswith("arguments.delta") and e["item_id"] == item["id"]
        )
        assert streamed == item["arguments"]
    assert [(i["call_id"], i["name"]) for i in final["output"][1:]] == [
        ("call_a", "get_weather"),
        ("call_b", "get_time"),
    ]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Let me check." == final["output"][0]["content"][0]["text"]
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 3 and final["status"] == "completed"


async def test_anthropic_blocks_open_stream_and_close_in_order() -> None:
    sink = Collect()
    await stream_answer(updates(), MessagesStream(MessageMeta("m", [])), sink)
    events = parse(sink.chunks)
    kinds = collapsed([e["type"] for e in events])
    assert kinds == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    json_for_first_call = "".join(
        e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1
    )
    assert json.loads(json_for_first_call) == {"city": "Oslo"}
    delta = events[-2]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 4, "output_tokens": 9, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 3}  # fmt: skip


def test_a_whole_anthropic_message_carries_the_calls_as_tool_use_blocks() -> None:
    progress = Progress()
    for message in upstream_messages():
        progress.apply(message)
    message = MessageMeta("m", []).whole(progress)
    assert message["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"
