"""Priority classes: what a request may ask for and what it gets under its token's ceiling."""

from __future__ import annotations

import pytest

from chatllm.kernel.priority import Priority, clamp, parse_priority


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("interactive", Priority.INTERACTIVE),
        (" BULK ", Priority.BULK),
        ("default", Priority.DEFAULT),
        (-3, Priority.INTERACTIVE),  # vLLM's integers: lower is served earlier
        (0, Priority.DEFAULT),
        (7, Priority.BULK),
        ("-1", Priority.INTERACTIVE),
    ],
)
def test_names_and_vllm_integers(value: object, expected: Priority) -> None:
    assert parse_priority(value) is expected


@pytest.mark.parametrize("value", ["urgent", "", None, True, 1.5, ["bulk"]])
def test_anything_else_is_refused_with_what_is_accepted(value: object) -> None:
    with pytest.raises(ValueError, match="one of interactive, default, bulk"):
        parse_priority(value)


def test_a_request_never_rises_above_its_tokens_ceiling() -> None:
    assert clamp(Priority.INTERACTIVE, Priority.BULK) is Priority.BULK
    assert clamp(None, Priority.BULK) is Priority.BULK
    assert clamp(None, Priority.INTERACTIVE) is Priority.DEFAULT  # asking nothing is the default class
    assert clamp(Priority.INTERACTIVE, Priority.INTERACTIVE) is Priority.INTERACTIVE
    assert clamp(Priority.BULK, Priority.DEFAULT) is Priority.BULK  # asking lower is always allowed
