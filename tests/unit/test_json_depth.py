"""JSON nesting measured before decoding: exact on any JSON, linear on hostile text, and used by the
server's JSON text fields (tool parameters, tool-call arguments, JSON schemas) as by the bridge."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatllm.kernel.config import LimitsConfig
from chatllm.kernel.json_depth import MAX_JSON_DEPTH, deeper_than, nesting_depth
from chatllm.proto import pb
from chatllm.server import sampling
from chatllm.server.errors import InvalidArgument
from chatllm.server.validation import validate

DEEP = "[" * 200_000 + "]" * 200_000
# Strings full of what a naive scanner miscounts: brackets, quotes, backslashes, escapes, non-ASCII.
tricky_text = st.lists(st.sampled_from([*'[]{}"\\ab é字\n', "\\u005b", '\\"']), max_size=12).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3),
    max_leaves=30,
)


def decoded_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((decoded_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((decoded_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(value=json_values, ascii_only=st.booleans())
def test_the_depth_of_any_json_is_what_decoding_finds(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nesting_depth(text) == decoded_depth(value)
    assert nesting_depth(text.encode()) == decoded_depth(value)


def test_hostile_nesting_is_measured_without_recursion() -> None:
    assert nesting_depth(DEEP) == 200_000
    assert deeper_than('{"prompt": "hi", "history": ' + DEEP + "}")
    assert not deeper_than('{"a": "' + "[" * 200_000 + '"}')  # brackets inside a string are text
    assert not deeper_than("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)


@pytest.mark.timeout(60)  # the regex this replaced took hours here (quadratic backtracking)
def test_an_unterminated_string_of_escaped_quotes_is_linear() -> None:
    text = '{"a": "' + '\\"' * 2_000_000 + "[" * 200
    assert nesting_depth(text) == 1


def generate(**fields: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(messages=[pb.Message(role="user", content="hi")], **fields)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (generate(tools=[pb.Tool(name="f", parameters_json='{"a": ' + DEEP + "}")]), "tools[0].parameters"),
        (
            pb.GenerateRequest(
                messages=[
                    pb.Message(role="assistant", tool_calls=[pb.ToolCall(id="1", name="f", arguments=DEEP[:80_000])]),
                    pb.Message(role="user", content="hi"),
                ]
            ),
            "messages[0].tool_calls[0].arguments",
        ),
    ],
)
def test_deep_json_in_a_grpc_request_is_invalid_argument(request_: pb.GenerateRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate(request_, LimitsConfig())
    assert err.value.field == field and "nested deeper than 128" in err.value.description


def test_a_deep_json_schema_is_invalid_argument() -> None:
    schema = '{"type": "array", "items": ' + "[" * 40_000 + "]" * 40_000 + "}"
    with pytest.raises(InvalidArgument) as err:
        sampling.constraint_from_pb(pb.StructuredOutput(json_schema=schema))
    assert err.value.field == "structured_output.json_schema"
