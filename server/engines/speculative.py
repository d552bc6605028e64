"""Speculative decoding: what the server hands vLLM as `speculative_config`.

Two ways to ask, which combine: `--speculative ngram`, a preset measured on a 2-core CPU with the
built-in model (bench/speculative.py, bench/results/speculative-*.md), and
`--speculative-config JSON`, vLLM's own schema as `vllm serve --speculative-config` takes it,
passed through untouched (vLLM checks it; with the preset, its keys override the preset's).

The n-gram proposer (prompt lookup) drafts the tokens that followed the latest n-gram where it
occurred before in the prompt or the answer, and the model checks a whole draft in one step. An
answer that quotes its context (knowledge-base answers, code edits, summaries with quotes)
accepts long drafts; free-form text accepts few, and every rejected draft token is a wasted
position in the step. Batched steps already use the hardware well, so the preset stops drafting
above a few sequences per step with vLLM's `num_speculative_tokens_per_batch_size` schedule
(vLLM's dynamic speculative decoding: a draft length per batch-size range, 0 = no draft).
"""

from __future__ import annotations

import json
from typing import Any

from chatllm.kernel.config import Config

# The preset: the draft length, the n-gram sizes it looks up, and the largest batch that still drafts.
# bench/speculative.py measures it against `off` (bench/results/speculative-*.md).
NGRAM_DRAFT_TOKENS = 4
NGRAM_LOOKUP_MIN = 3
NGRAM_LOOKUP_MAX = 4
NGRAM_MAX_BATCH = 4


def ngram_preset(max_num_seqs: int) -> dict[str, Any]:
    """`--speculative ngram`: prompt lookup, drafting only in batches of up to NGRAM_MAX_BATCH sequences."""
    preset: dict[str, Any] = {
        "method": "ngram",
        "num_speculative_tokens": NGRAM_DRAFT_TOKENS,
        "prompt_lookup_min": NGRAM_LOOKUP_MIN,
        "prompt_lookup_max": NGRAM_LOOKUP_MAX,
    }
    if max_num_seqs > NGRAM_MAX_BATCH:
        preset["num_speculative_tokens_per_batch_size"] = [
            [1, NGRAM_MAX_BATCH, NGRAM_DRAFT_TOKENS],
            [NGRAM_MAX_BATCH + 1, max_num_seqs, 0],
        ]
    return preset


def speculative_config(config: Config) -> dict[str, Any] | None:
    """vLLM's `speculative_config` for our Config, or None (no speculation)."""
    vllm = config.vllm
    chosen: dict[str, Any] = {}
    if vllm.speculative == "ngram":
        chosen = ngram_preset(vllm.max_num_seqs)
    if vllm.speculative_config is not None:
        chosen |= json.loads(vllm.speculative_config)  # a JSON object: checked with the flags
    return chosen or None


def describe(spec: dict[str, Any]) -> str:
    """One log line's worth: the method, draft length and where drafting stops."""
    text = f"{spec.get('method') or spec.get('model')}, {spec.get('num_speculative_tokens')} draft tokens"
    schedule = spec.get("num_speculative_tokens_per_batch_size")
    if schedule:
        text += ", per batch size " + ", ".join(f"{a}-{b}: {k}" for a, b, k in schedule)
    return text
