"""Priority classes: `interactive`, `default`, `bulk`, in the order admission serves them.

A request asks for a class (OpenAI body `priority`, the legacy JSON field `priority`, the gRPC field
`priority`, or the `X-Priority` header) and gets at most its token's ceiling (`priority=CLASS` in the
token file; a token without one may ask for any class). vLLM's own integer `priority` is accepted
too, read the way vLLM reads it (lower is served earlier): below 0 is interactive, 0 default, above 0
bulk.
"""

from __future__ import annotations

import enum


class Priority(enum.IntEnum):
    """Lower value: served first (the same direction as vLLM's `priority`)."""

    INTERACTIVE = 0
    DEFAULT = 1
    BULK = 2

    @property
    def label(self) -> str:
        return self.name.lower()


CLASS_NAMES = tuple(p.label for p in Priority)
DESCRIPTION = "one of interactive, default, bulk (or vLLM's integer priority: < 0 interactive, 0 default, > 0 bulk)"


def parse_priority(value: object) -> Priority:
    """A class from a name (any case) or a vLLM-style integer; ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(DESCRIPTION)
    if isinstance(value, int):
        return Priority.INTERACTIVE if value < 0 else Priority.DEFAULT if value == 0 else Priority.BULK
    if isinstance(value, str):
        text = value.strip().lower()
        if text in CLASS_NAMES:
            return Priority[text.upper()]
        try:
            return parse_priority(int(text))
        except ValueError:
            pass
    raise ValueError(DESCRIPTION)


def clamp(asked: Priority | None, ceiling: Priority) -> Priority:
    """The class a request gets: what it asked (default when it asked nothing), never above the ceiling."""
    return Priority(max(asked if asked is not None else Priority.DEFAULT, ceiling))
