"""The replica picker: per request, which healthy replica answers it (`--routing`).

- `prefix` (the default for several replicas), SMG's `cache_aware` rule: when the replicas'
  loads are imbalanced (the busiest has more than `balance_abs` requests more than the idlest
  AND more than `balance_rel` times as many), the least-loaded replica (reason `load`);
  otherwise the replica holding the longest run of the request's leading blocks, if that run is
  at least `cache_threshold` of the request's blocks (reason `prefix`; ties go to the less loaded);
  otherwise the least-loaded replica, ties to the one with the fewest blocks indexed, so new
  prefixes spread evenly (reason `fallback`). The chosen replica's index then holds the blocks.
- `round-robin`: each healthy replica in turn.
- `least-load`: the replica with the fewest outstanding requests.

Ties left after that rotate, so equal replicas share the work. Loads are the caller's (the
bridge's in-flight count per replica, raised by what the replica itself reports).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from chatllm.bridge.routing.prefix_index import PrefixIndex
from chatllm.kernel.config import BridgeConfig

ROUTING_MODES = ("prefix", "round-robin", "least-load")
REASONS = ("prefix", "load", "fallback", "round-robin", "least-load")


@dataclass(frozen=True)
class RoutingRules:
    mode: str = "prefix"
    cache_threshold: float = 0.3  # SMG's default; SGLang's router uses 0.5
    balance_abs: int = 4  # outstanding requests (SMG: 64, sized for GPUs that batch hundreds)
    balance_rel: float = 1.5


def routing_rules(config: BridgeConfig) -> RoutingRules:
    return RoutingRules(
        config.routing, config.routing_cache_threshold, config.routing_balance_abs, config.routing_balance_rel
    )


@dataclass(frozen=True)
class Candidate:
    """A healthy replica and its outstanding requests."""

    name: str
    load: int


@dataclass(frozen=True)
class Decision:
    replica: str
    reason: str
    matched_blocks: int = 0
    blocks: int = 0


class NoReplicaError(LookupError):
    """No healthy replica to pick."""


class Picker:
    def __init__(self, rules: RoutingRules, index: PrefixIndex) -> None:
        if rules.mode not in ROUTING_MODES:
            raise ValueError(f"--routing must be one of {', '.join(ROUTING_MODES)}, not {rules.mode!r}")
        self.rules = rules
        self.index = index
        self._turn = itertools.count()

    def pick(self, candidates: Sequence[Candidate], blocks: Sequence[int] = ()) -> Decision:
        """The replica for a request whose routing key is `blocks` (prefix_key.request_blocks)."""
        if not candidates:
            raise NoReplicaError("no replica is serving")
        turn = next(self._turn)
        if self.rules.mode == "round-robin":
            return Decision(candidates[turn % len(candidates)].name, "round-robin")
        if self.rules.mode == "least-load":
            return Decision(self._least_loaded(candidates, turn).name, "least-load")
        decision = self._by_prefix(candidates, blocks, turn)
        self.index.insert(decision.replica, blocks)
        return decision

    def _by_prefix(self, candidates: Sequence[Candidate], blocks: Sequence[int], turn: int) -> Decision:
        if self._imbalanced(candidates):
            return Decision(self._least_loaded(candidates, turn).name, "load", 0, len(blocks))
        matched = self.index.matched([c.name for c in candidates], blocks)
        best = max(matched.values())
        if blocks and best > 0 and best >= self.rules.cache_threshold * len(blocks):
            holders = [c for c in candidates if matched[c.name] == best]
            return Decision(self._least_loaded(holders, turn).name, "prefix", best, len(blocks))
        sizes = self.index.sizes()
        n = len(candidates)
        chosen = min(enumerate(candidates), key=lambda ic: (ic[1].load, sizes.get(ic[1].name, 0), (ic[0] - turn) % n))[
            1
        ]
        return Decision(chosen.name, "fallback", matched[chosen.name], len(blocks))

    def _imbalanced(self, candidates: Sequence[Candidate]) -> bool:
        loads = [c.load for c in candidates]
        busiest, idlest = max(loads), min(loads)
        return busiest - idlest > self.rules.balance_abs and busiest > idlest * self.rules.balance_rel

    @staticmethod
    def _least_loaded(candidates: Sequence[Candidate], turn: int) -> Candidate:
        n = len(candidates)
        return min(enumerate(candidates), key=lambda ic: (ic[1].load, (ic[0] - turn) % n))[1]
