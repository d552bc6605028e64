"""Typed application keys and the bridge's small mutable state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from chatllm.bridge.upstream import Upstream
from chatllm.server.config import Config


class Drainable(Protocol):
    """A long-lived connection that can be asked to finish its current work and close."""

    def drain(self) -> None: ...


@dataclass
class BridgeState:
    draining: bool = False
    websockets: set[Drainable] = field(default_factory=set)


CONFIG = web.AppKey("config", Config)
UPSTREAM = web.AppKey("upstream", Upstream)
STATE = web.AppKey("state", BridgeState)
