"""Reciprocal-rank fusion of the dense and lexical result lists.

RRF (Cormack et al., 2009) needs no score calibration between legs: each list
contributes weight / (k + rank). The weights let a leg that cannot read the
query step back: the dense leg gets (1 - share of the query's tokens the
embedding model maps to [UNK])², so with the English-only default model a
Chinese question is decided mostly by BM25 while an English one uses both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RRF_K = 60


@dataclass(frozen=True)
class RankedList:
    keys: Sequence[str]  # best first
    weight: float = 1.0


def reciprocal_rank_fusion(lists: Sequence[RankedList], limit: int, k: int = RRF_K) -> list[tuple[str, float]]:
    """(key, fused score) pairs, best first; ties keep the order of first appearance."""
    scores: dict[str, float] = {}
    for ranked in lists:
        if ranked.weight <= 0:
            continue
        for rank, key in enumerate(dict.fromkeys(ranked.keys), start=1):
            scores[key] = scores.get(key, 0.0) + ranked.weight / (k + rank)
    ordered = sorted(scores.items(), key=lambda item: -item[1])
    return ordered[:limit]
