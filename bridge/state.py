"""The bridge's small mutable state (draining, open WebSockets, requests in flight) and the typed keys
that hold it, the settings, the upstream and the accepted tokens on the application and its requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from chatllm.bridge.answer.relay import InFlightCalls
from chatllm.bridge.settings import BridgeSettings
from chatllm.bridge.upstream import Upstream
from chatllm.kernel.access import Caller, TokenRegistry
from chatllm.kernel.state.connection import StateStore


class Drainable(Protocol):
    """A long-lived connection that can be asked to finish its current work and close."""

    def drain(self) -> None: ...


@dataclass
class BridgeState:
    """Draining flag, open WebSockets, and the requests being handled (for the drain to wait on)."""

    draining: bool = False
    websockets: set[Drainable] = field(default_factory=set)
    active: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    calls: InFlightCalls = field(default_factory=InFlightCalls)

    def started(self) -> None:
        self.active += 1
        self.idle.clear()

    def finished(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.idle.set()


CONFIG = web.AppKey("config", BridgeSettings)
UPSTREAM = web.AppKey("upstream", Upstream)
STATE = web.AppKey("state", BridgeState)
ACCESS = web.AppKey("access", TokenRegistry)  # the tokens the bridge accepts (none: it forwards the client's)
STATE_STORE = web.AppKey("state_store", StateStore)  # --state-store: what a fleet's bridges share
CALLER = web.RequestKey("caller", Caller)  # set by the token check: whose token the request carries
