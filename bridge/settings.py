"""The configuration sections the bridge reads (it never sees the model's, the engine's or the server's)."""

from __future__ import annotations

from dataclasses import dataclass

from chatllm.kernel.config import (
    BridgeConfig,
    CommonConfig,
    Config,
    HistoryConfig,
    LimitsConfig,
    SecurityConfig,
    StateConfig,
)


@dataclass(frozen=True)
class BridgeSettings:
    """Taken once from the whole Config: each bridge component reads only these sections."""

    bridge: BridgeConfig
    history: HistoryConfig
    limits: LimitsConfig
    security: SecurityConfig
    state: StateConfig
    common: CommonConfig

    @classmethod
    def of(cls, config: Config) -> BridgeSettings:
        return cls(config.bridge, config.history, config.limits, config.security, config.state, config.common)
