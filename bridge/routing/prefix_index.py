"""What each replica has likely cached: the blocks the bridge routed there, LRU-evicted at its capacity.

An approximation of each engine's prefix cache (as SGLang's router, SMG's `cache_aware` and llm-d's
approximate prefix scorer keep): a replica's entry for a request's blocks is refreshed every time
a request is routed there, the least recently routed blocks go first once the replica's capacity
(its KV cache, in blocks of the routing key) is reached, and a replica that dies or restarts
loses its entries. Within one request the first block is touched last, so a request's tail is
evicted before its head, as vLLM frees a finished request's blocks tail first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence


class _ReplicaBlocks:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def insert(self, blocks: Sequence[int]) -> None:
        held = self.blocks
        for block in reversed(blocks):
            if block in held:
                held.move_to_end(block)
            else:
                held[block] = None
        self.evict()

    def evict(self) -> None:
        held = self.blocks
        for _ in range(len(held) - self.capacity):
            held.popitem(last=False)

    def matched(self, blocks: Sequence[int]) -> int:
        held = self.blocks
        count = 0
        for block in blocks:
            if block not in held:
                break
            count += 1
        return count


class PrefixIndex:
    """Blocks per replica (keyed by the replica's name, its address)."""

    def __init__(self) -> None:
        self._replicas: dict[str, _ReplicaBlocks] = {}

    def set_capacity(self, replica: str, capacity_blocks: int) -> None:
        """Add `replica`, or resize it (evicting at once when it shrank)."""
        entry = self._replicas.get(replica)
        if entry is None:
            self._replicas[replica] = _ReplicaBlocks(capacity_blocks)
        else:
            entry.capacity = max(1, capacity_blocks)
            entry.evict()

    def forget(self, replica: str) -> None:
        """Drop everything routed to `replica` (it died, restarted or left the fleet)."""
        entry = self._replicas.get(replica)
        if entry is not None:
            entry.blocks.clear()

    def remove(self, replica: str) -> None:
        self._replicas.pop(replica, None)

    def insert(self, replica: str, blocks: Sequence[int]) -> None:
        entry = self._replicas.get(replica)
        if entry is not None and blocks:
            entry.insert(blocks)

    def matched(self, replicas: Sequence[str], blocks: Sequence[int]) -> dict[str, int]:
        """How many leading blocks of `blocks` each of `replicas` holds."""
        result = {}
        for replica in replicas:
            entry = self._replicas.get(replica)
            result[replica] = entry.matched(blocks) if entry is not None and blocks else 0
        return result

    def size(self, replica: str) -> int:
        entry = self._replicas.get(replica)
        return len(entry.blocks) if entry is not None else 0

    def sizes(self) -> Mapping[str, int]:
        return {name: len(entry.blocks) for name, entry in self._replicas.items()}
