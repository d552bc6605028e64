"""The models a server serves: the base model and its LoRA adapters, by the names clients use."""

from __future__ import annotations

from collections.abc import Sequence

from chatllm.proto import pb
from chatllm.server.errors import NotFound, Reason


class ServedModels:
    """Which name means what: the base model's name (or "") is the base model; an adapter's name
    is that adapter; anything else is NOT_FOUND (a typo never silently gets the base model)."""

    def __init__(self, base: pb.ModelInfo, adapters: Sequence[pb.ModelInfo] = ()) -> None:
        self.base = base
        self.adapters = {a.id: a for a in adapters}

    @property
    def names(self) -> list[str]:
        return [self.base.id, *self.adapters]

    def adapter_for(self, name: str) -> str | None:
        """The adapter to use for a request's `model` (None: the base model)."""
        if not name or name == self.base.id:
            return None
        if name in self.adapters:
            return name
        raise NotFound(f"model: {name!r} is not served here; served: {', '.join(self.names)}", Reason.MODEL_NOT_FOUND)

    def all(self) -> list[pb.ModelInfo]:
        return [self.base, *self.adapters.values()]
