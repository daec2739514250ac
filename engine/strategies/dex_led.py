"""DEX-led CEX entries, Phase A: the pool's order flow signals entries on the pair it leads.

At each close of its timeframe the strategy reads the DEX features the dataflow attached to the
bar (`dex_*` columns, `dataflows.dex_join`: only DEX events before the close) and runs the Phase A
detectors of `engine.dex.signals` (order-flow imbalance, liquidity velocity and acceleration,
volume absorbed at a flat price). Where enough of them fire with a known direction it emits one
acting signal, typed by the detectors that fired ("imbalance+liquidity"), sized to `notional`
at the close so its slippage can be estimated, with a stop `stop_pct` away and a time exit after
`max_holding`. A burst of flow is one signal: after a signal the strategy waits `rearm_after`.

Phase B is not here: the run's learner (`learning.target: reward_score`, `engine.signal_learner`)
scores each signal and, after enough labels, lets only candidates act.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engine.config import DexLedConfig
from engine.dex.signals import phase_a
from engine.indicator_spec import IndicatorSpec
from engine.signal_features import DEX_PREFIX
from engine.strategies.base import (
    BarView,
    ExitPlan,
    PositionView,
    Signal,
    Strategy,
    StrategyAction,
)
from engine.timeframes import parse_duration_ns


class DexLed(Strategy):
    name = "dex_led"

    def __init__(self, config: DexLedConfig) -> None:
        self.config = config
        window = config.phase_a.imbalance_window_s
        self.columns = (f"imbalance_{window}s", f"volume_{window}s", f"price_change_{window}s",
                        "liquidity_velocity", "liquidity_acceleration", "volume_ratio")
        self.max_holding_ns = parse_duration_ns(config.max_holding)
        self.rearm_ns = parse_duration_ns(config.rearm_after)
        self.last_signal_ts: int | None = None

    def timeframes(self) -> tuple[str, ...]:
        return (self.config.timeframe,)

    def required_indicators(self) -> list[IndicatorSpec]:
        return []

    def history_bars(self) -> int:
        return 1

    def on_bar(
        self, timeframe: str, bars: BarView, position: PositionView
    ) -> Sequence[StrategyAction]:
        now = bars.ts_close
        if self.last_signal_ts is not None and now - self.last_signal_ts < self.rearm_ns:
            return ()
        features = {name: np.array([bars.value(DEX_PREFIX + name)]) for name in self.columns}
        fired = phase_a(features, self.config.phase_a)
        close = bars.value("close")
        if not len(fired) or not (math.isfinite(close) and close > 0):
            return ()
        self.last_signal_ts = now
        direction = int(fired.direction[0])
        signal_type = fired.signal_type[0]
        return (
            Signal(
                direction=direction,
                reason=f"dex:{signal_type}",
                quantity=self.config.notional / close,
                score=float(fired.confirmations[0]),
                exits=ExitPlan(stop_distance=close * self.config.stop_pct,
                               max_holding_ns=self.max_holding_ns),
                details={"signal_type": signal_type,
                         "confirmations": int(fired.confirmations[0]),
                         **{DEX_PREFIX + name: float(values[0])
                            for name, values in features.items()}},
            ),
        )
