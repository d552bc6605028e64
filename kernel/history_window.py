"""Which rounds of a conversation's history reach the model (`--max_round`, `--max-round-trim`).

One rule for the server (the legacy `history` a request carries) and the bridge (the history each
WebSocket connection keeps), so both cut the same rounds:

- `exact` (the seed's meaning): the last `max_round` rounds. Past that, every turn drops the oldest
  round, so the prompt changes right after the system prompt and a prefix cache reuses nothing but
  the system prompt.
- `stable`: the history grows to `2 * max_round` rounds and is then cut back to `max_round`, so the
  kept window starts at the same round for `max_round` turns in a row and its prefix stays cached.
  The rule depends only on how many rounds there are, so applying it to an already-cut window
  keeps the same rounds as applying it to the whole history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

TRIM_MODES = ("exact", "stable")
Round = TypeVar("Round")


def kept_rounds(total: int, max_round: int, trim: str = "exact") -> int:
    """How many of the last `total` rounds reach the model."""
    if max_round <= 0 or total <= 0:
        return 0
    if trim == "exact":
        return min(total, max_round)
    if trim != "stable":
        raise ValueError(f"--max-round-trim must be one of {', '.join(TRIM_MODES)}, not {trim!r}")
    if total < 2 * max_round:
        return total
    return max_round + total % max_round


def trim_history(history: Sequence[Round], max_round: int, trim: str = "exact") -> list[Round]:
    """The rounds of `history` (oldest first) that reach the model."""
    keep = kept_rounds(len(history), max_round, trim)
    return list(history[len(history) - keep :]) if keep else []
