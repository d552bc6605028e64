"""Turning token streams into clean text deltas: incremental decoding and stop strings.

Used by engines that produce token ids (hf); vLLM detokenizes and matches stop
strings itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IncrementalDetokenizer:
    """Decode a growing token list into text deltas, never splitting a character.

    Decodes only a short window (tokens since the previous emitted boundary), as
    TGI does: byte-level BPE can need several tokens for one character, and
    decoding the window with the token before it keeps spacing right.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, tokens: Sequence[int]) -> str:
        return str(self._tokenizer.decode(tokens, skip_special_tokens=self._skip_special_tokens))

    def push(self, tokens: Sequence[int]) -> str:
        """All tokens generated so far -> the text not returned before ("" if incomplete)."""
        prefix_text = self._decode(tokens[self._prefix_offset : self._read_offset])
        new_text = self._decode(tokens[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(tokens)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self, tokens: Sequence[int]) -> str:
        """At the end: whatever is left, minus a character cut in half by the token limit
        (its bytes would show as U+FFFD)."""
        prefix_text = self._decode(tokens[self._prefix_offset : self._read_offset])
        new_text = self._decode(tokens[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(tokens)
        rest = new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
        return rest.rstrip("\ufffd")


class StopMatcher:
    """Cut a text stream before the first stop string, holding back only the
    characters that could still be the start of one."""

    def __init__(self, stops: Sequence[str], include_stop: bool = False) -> None:
        self._stops = [s for s in stops if s]
        self._include_stop = include_stop
        self._pending = ""
        self.stopped = False
        self.stopped_by = ""

    def feed(self, delta: str) -> str:
        """Add generated text; return what can be emitted now. Sets `stopped` on a match."""
        if not self._stops:
            return delta
        if self.stopped:
            return ""
        self._pending += delta
        found = [(i, s) for s in self._stops if (i := self._pending.find(s)) >= 0]
        if found:
            cut, stop = min(found)
            self.stopped, self.stopped_by = True, stop
            end = cut + len(stop) if self._include_stop else cut
            out, self._pending = self._pending[:end], ""
            return out
        hold = self._hold_length()
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold :]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out

    def _hold_length(self) -> int:
        text = self._pending
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:k]):
                    hold = k
                    break
        return hold
