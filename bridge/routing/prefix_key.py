"""A request's routing key: chained hashes of its leading content in fixed-size blocks.

The bridge never tokenizes, so the blocks are characters of what the model will read, in the
order it reads it: the model (an adapter has its own cache), the tools the chat template shows,
the system prompt, then the history or the messages, then the prompt. Block `i`'s hash covers
blocks `0..i` (each hash folds in its parent's), so two requests share block `i` only when they
share everything before it, which is exactly when an engine's prefix cache can reuse it. The
knowledge-base context a server inserts is invisible here; routing works on what the bridge sees.

Only whole blocks are hashed: the last partial block is different in every turn anyway. Hashes
are Python's (per-process salt): the index lives in this process only.
"""

from __future__ import annotations

from collections.abc import Iterator

from chatllm.proto import pb

BLOCK_CHARS = 128  # about 32 tokens of English: finer than the engines' cache blocks (16 on GPU, 128 on CPU)
_FIELD = "\x1e"  # separators no text carries, so "ab" + "c" and "a" + "bc" differ
_PART = "\x1f"


def _segments(request: pb.GenerateRequest) -> Iterator[str]:
    yield request.model
    if request.raw_prompt:
        yield "raw"
        yield request.prompt
        return
    for tool in request.tools:
        yield _PART.join(("tool", tool.name, tool.description, tool.parameters_json))
    yield request.system_prompt
    for turn in request.history:
        yield _PART.join(("user", turn.user))
        yield _PART.join(("assistant", turn.assistant))
    for message in request.messages:
        calls = _PART.join(f"{call.name}({call.arguments})" for call in message.tool_calls)
        yield _PART.join((message.role, message.name, message.tool_call_id, message.content, calls))
    if request.prompt:
        yield _PART.join(("user", request.prompt))


def routed_text(request: pb.GenerateRequest) -> str:
    """What the model reads of `request`, as far as the bridge can tell, in order."""
    return _FIELD.join(_segments(request))


def block_hashes(text: str, block_chars: int = BLOCK_CHARS) -> list[int]:
    """One chained hash per whole block of `text`."""
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        parent = hash((parent, text[start : start + block_chars]))
        hashes.append(parent)
    return hashes


def request_blocks(request: pb.GenerateRequest, block_chars: int = BLOCK_CHARS) -> list[int]:
    return block_hashes(routed_text(request), block_chars)
