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

Re-tuning (`retune`, scheduled by the run's maintenance agent): the strategy remembers its last
`tuning_memory` of bars (time, close, detector inputs) in fixed NumPy rings. Every remembered bar
with a taker imbalance is a candidate in its direction, labelled with the plan's reward score over
`max_holding` from the closes that followed; each threshold setting of the grid is scored by the
mean reward of the candidates it would have signalled (`engine.dex.tuning`), and the best one
replaces the thresholds in use. Only candidates whose horizon has passed count.
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
        self.phase_a = config.phase_a  # the thresholds in use; `retune` may replace them
        capacity = max(1, parse_duration_ns(config.tuning_memory)
                       // parse_duration_ns(config.timeframe))
        self._memory = _BarMemory(capacity, ("close", *self.columns))

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
        close = bars.value("close")
        values = [bars.value(DEX_PREFIX + name) for name in self.columns]
        self._memory.add(now, [close, *values])
        if self.last_signal_ts is not None and now - self.last_signal_ts < self.rearm_ns:
            return ()
        features = {name: np.array([value]) for name, value in zip(
            self.columns, values, strict=True)}
        fired = phase_a(features, self.phase_a)
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

    def retune(self, now: int, window_ns: int, min_signals: int) -> str | None:
        from engine.dex.labels import reward_scores
        from engine.dex.tuning import tune_over_features

        ts, columns = self._memory.since(now - window_ns)
        close = columns["close"]
        imbalance = columns[self.columns[0]]
        direction = np.where(np.isfinite(imbalance), np.sign(imbalance), 0.0)
        labels = reward_scores(ts, direction, close, ts, close, self.max_holding_ns,
                               self.config.label_decay_per_minute)
        rewards = np.where(direction != 0, labels.reward_score, np.nan)
        tuned = tune_over_features(columns, rewards, self.phase_a, min_signals=min_signals)
        if tuned is None:
            return (f"thresholds kept: no setting kept {min_signals} labelled candidates among "
                    f"{len(ts)} bars")
        self.phase_a, result = tuned
        return (f"thresholds now {result.best}: mean reward {result.mean_reward:.4%} over "
                f"{result.signals_kept} labelled candidates of {len(ts)} bars "
                f"({result.points_scored} settings scored)")


class _BarMemory:
    """The last `capacity` bars' time and values, in fixed arrays (no object per bar kept)."""

    def __init__(self, capacity: int, names: tuple[str, ...]) -> None:
        self.names = names
        self.ts = np.zeros(capacity, np.int64)
        self.values = np.full((len(names), capacity), np.nan)
        self.count = 0

    def add(self, ts: int, values: list[float]) -> None:
        slot = self.count % len(self.ts)
        self.ts[slot] = ts
        self.values[:, slot] = values
        self.count += 1

    def since(self, start: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The remembered bars with ts >= start, oldest first."""
        size = min(self.count, len(self.ts))
        order = (np.arange(self.count - size, self.count)) % len(self.ts)
        ts = self.ts[order]
        keep = ts >= start
        return ts[keep], {name: self.values[row, order][keep]
                          for row, name in enumerate(self.names)}
