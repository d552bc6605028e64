"""The configuration sections the bridge reads (it never sees the model's, the engine's or the server's)."""

from __future__ import annotations

from dataclasses import dataclass

from chatllm.kernel.config import BridgeConfig, Config, HistoryConfig, LimitsConfig, SecurityConfig


@dataclass(frozen=True)
class BridgeSettings:
    """Taken once from the whole Config: each bridge component reads only these sections."""

    bridge: BridgeConfig
    history: HistoryConfig
    limits: LimitsConfig
    security: SecurityConfig

    @classmethod
    def of(cls, config: Config) -> BridgeSettings:
        return cls(config.bridge, config.history, config.limits, config.security)
