"""How deeply JSON text nests, measured before decoding it (shared by the bridge and the server).

Python's decoder recurses once per `[` / `{`, so a body nested 200,000 deep raises RecursionError
instead of a decode error, and anything it does decode is walked recursively again later (pydantic,
templates, grammar compilers). Both sides refuse text nested deeper than MAX_JSON_DEPTH first.

The scan is vectorised and linear in the text's length whatever it holds: a bracket counts unless
it is inside a string, and a quote ends a string unless an odd run of backslashes precedes it.
(A regular expression that skips strings backtracks quadratically over an unterminated string full
of escaped quotes: 16,000 of them took 3 s, a 4 MB body would take hours.)
"""

from __future__ import annotations

import numpy as np

# Deeper than any real request (an OpenAI body with a JSON schema inside is ~20 levels).
MAX_JSON_DEPTH = 128
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def nesting_depth(text: str | bytes) -> int:
    """The deepest nesting of arrays and objects (brackets inside strings do not count)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if not data:
        return 0
    codes = np.frombuffer(data, dtype=np.uint8)  # UTF-8: no multi-byte sequence holds an ASCII byte
    positions = np.arange(codes.size, dtype=np.int32)
    # For each position, the start of the backslash run that ends just before it.
    not_backslash = np.where(codes != _BACKSLASH, positions, -1)
    last_other = np.maximum.accumulate(not_backslash)
    run_before = np.empty(codes.size, dtype=np.int32)
    run_before[0] = 0
    run_before[1:] = positions[:-1] - last_other[:-1]
    quotes = (codes == _QUOTE) & (run_before % 2 == 0)
    inside = np.cumsum(quotes, dtype=np.int32) & 1  # odd number of opening/closing quotes so far
    steps = _STEP[codes] * (inside == 0)
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def deeper_than(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when JSON text nests deeper than `limit` (cheap for text with few brackets)."""
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    return brackets > limit and nesting_depth(text) > limit
