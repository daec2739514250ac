"""Strategy registry: `make_strategy(config)` builds the strategy a config's `kind` names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.config import DexLedConfig, EmaCrossConfig, MomentumBreakoutConfig
from engine.strategies.base import GuardedStrategy, Strategy
from engine.strategies.dex_led import DexLed
from engine.strategies.ema_cross import EmaCross
from engine.strategies.momentum_breakout import MomentumBreakout

StrategyFactory = Callable[[Any], Strategy]

STRATEGIES: dict[str, StrategyFactory] = {
    "dex_led": DexLed,
    "ema_cross": EmaCross,
    "momentum_breakout": MomentumBreakout,
}


def make_strategy(config: EmaCrossConfig | MomentumBreakoutConfig | DexLedConfig) -> Strategy:
    """The strategy for a validated strategy config; raises ValueError naming the known kinds."""
    try:
        factory = STRATEGIES[config.kind]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown strategy kind {config.kind!r}; known: {known}") from None
    return factory(config)


__all__ = ["STRATEGIES", "GuardedStrategy", "Strategy", "make_strategy"]
