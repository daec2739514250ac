"""Intraday momentum breakout, exactly as specified (issue 2); parameters in MomentumBreakoutConfig.

At each close of a `timeframe` bar (defaults: 15m) the strategy scores a breakout, 0 to 5:

- close beyond the previous bar's Donchian(20) band (the band excludes the current bar): +2, and
  required: without it there is no signal at all;
- trend on `trend_timeframe` (4h): EMA20 above EMA50 for longs, below for shorts, read from the
  last closed trend bar: +1. It is also a hard filter: a trend against the direction blocks entry;
- volume above 1.5x its 20-bar SMA: +1;
- RSI(14) in [50, 75] for longs, [25, 50] for shorts: +1.

Entry needs score >= entry_score (4), the trend filter, ATR(14)/close in [0.3%, 4%], and a flat
symbol (one position at a time). Indicators are those of the bar that just closed; the Donchian
band is the previous bar's. Nothing reads a bar that has not closed.

Entries are sized by risk (quantity None) with a stop 1.5 ATR away (at least 0.5% of price).
The exit plan, enforced by the engine on the trade path from the entry fill price: TP1 at 3 ATR
closes 50%, then the stop moves to breakeven + 0.05% in the trade's favour; TP2 at 6 ATR closes
the rest; a market close after `max_holding` (24h). After TP1 this strategy trails the stop
2 ATR behind the highest close since entry (lowest for shorts); the engine only ever tightens it.

Every evaluation where the Donchian condition holds becomes a signal row with its score, its
components in `details` and whether it was acted on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.config import MomentumBreakoutConfig
from engine.indicator_spec import IndicatorSpec
from engine.strategies.base import (
    BarView,
    ExitPlan,
    MoveStop,
    PositionView,
    Signal,
    Strategy,
    StrategyAction,
    TakeProfit,
)


class MomentumBreakout(Strategy):
    name = "momentum_breakout"

    def __init__(self, config: MomentumBreakoutConfig) -> None:
        self.config = config
        self.upper_column, self.lower_column = IndicatorSpec(
            "donchian", config.timeframe, config.donchian_period
        ).columns()
        self.volume_sma_column = f"volume_sma_{config.volume_sma_period}"
        self.rsi_column = f"rsi_{config.rsi_period}"
        self.atr_column = f"atr_{config.atr_period}"
        self.atr_baseline_column = f"atr_{config.atr_baseline_period}"
        self.trend_fast_column = f"ema_{config.trend_fast_period}"
        self.trend_slow_column = f"ema_{config.trend_slow_period}"
        self.trend = 0  # +1 up, -1 down, 0 unknown or flat, from the last closed trend bar
        self.trend_ts: int | None = None

    def timeframes(self) -> tuple[str, ...]:
        if self.config.trend_timeframe == self.config.timeframe:
            return (self.config.timeframe,)
        return (self.config.timeframe, self.config.trend_timeframe)

    def required_indicators(self) -> list[IndicatorSpec]:
        config = self.config
        timeframe = config.timeframe
        return [
            IndicatorSpec("donchian", timeframe, config.donchian_period),
            IndicatorSpec("volume_sma", timeframe, config.volume_sma_period),
            IndicatorSpec("rsi", timeframe, config.rsi_period),
            IndicatorSpec("atr", timeframe, config.atr_period),
            *([IndicatorSpec("atr", timeframe, config.atr_baseline_period)]
              if config.atr_baseline_period != config.atr_period else []),
            IndicatorSpec("ema", config.trend_timeframe, config.trend_fast_period),
            IndicatorSpec("ema", config.trend_timeframe, config.trend_slow_period),
        ]

    def history_bars(self) -> int:
        return 2

    def on_bar(
        self, timeframe: str, bars: BarView, position: PositionView
    ) -> Sequence[StrategyAction]:
        if timeframe == self.config.trend_timeframe:
            self._update_trend(bars)
        if timeframe != self.config.timeframe:
            return ()
        actions: list[StrategyAction] = []
        trail = self._trailing_stop(bars, position)
        if trail is not None:
            actions.append(trail)
        signal = self._evaluate(bars, position)
        if signal is not None:
            actions.append(signal)
        return actions

    def _update_trend(self, bars: BarView) -> None:
        fast = bars.value(self.trend_fast_column)
        slow = bars.value(self.trend_slow_column)
        self.trend = 1 if fast > slow else -1 if fast < slow else 0  # NaN compares False: 0
        self.trend_ts = bars.ts_close

    def _trailing_stop(self, bars: BarView, position: PositionView) -> MoveStop | None:
        """After TP1: trail `trail_atr` ATR behind the best close since entry."""
        if position.quantity == 0 or position.take_profits_hit < 1:
            return None
        atr = bars.value(self.atr_column)
        if not math.isfinite(atr):
            return None
        if position.quantity > 0:
            level = position.highest_close - self.config.trail_atr * atr
        else:
            level = position.lowest_close + self.config.trail_atr * atr
        if not (math.isfinite(level) and level > 0):
            return None
        return MoveStop(level, "trailing_stop")

    def _evaluate(self, bars: BarView, position: PositionView) -> Signal | None:
        config = self.config
        close = bars.value("close")
        upper = bars.value(self.upper_column, 1)
        lower = bars.value(self.lower_column, 1)
        if close > upper:
            direction = 1
        elif close < lower:
            direction = -1
        else:
            return None  # no breakout (NaN bands compare False): nothing to journal
        volume = bars.value("volume")
        volume_sma = bars.value(self.volume_sma_column)
        rsi = bars.value(self.rsi_column)
        atr = bars.value(self.atr_column)
        if direction > 0:
            rsi_ok = config.rsi_long_low <= rsi <= config.rsi_long_high
        else:
            rsi_ok = config.rsi_short_low <= rsi <= config.rsi_short_high
        components = {
            "breakout": 2,
            "trend": int(self.trend == direction),
            "volume": int(volume > config.volume_multiple * volume_sma),
            "rsi": int(rsi_ok),
        }
        score = sum(components.values())
        atr_pct = atr / close
        blocked: list[str] = []
        if self.trend != direction:
            blocked.append("trend_filter")
        if not (config.min_atr_pct <= atr_pct <= config.max_atr_pct):
            blocked.append("atr_band")
        if score < config.entry_score:
            blocked.append("score")
        if not position.is_flat:
            blocked.append("position_open")
        act = not blocked
        details: dict[str, object] = {
            "components": components,
            "close": close,
            "donchian_upper": upper,
            "donchian_lower": lower,
            "trend": self.trend,
            "trend_ts": self.trend_ts,
            "volume": volume,
            "volume_sma": volume_sma,
            "rsi": rsi,
            "atr": atr,
            "atr_baseline": (bars.value(self.atr_baseline_column)
                             if bars.has(self.atr_baseline_column) else math.nan),
            "atr_pct": atr_pct,
            "blocked": blocked,
        }
        return Signal(
            direction=direction,
            reason="breakout_long" if direction > 0 else "breakout_short",
            act=act,
            score=float(score),
            details=details,
            quantity=None,
            exits=self._exit_plan(close, atr) if act else None,
            bar_ts=bars.ts_close,
        )

    def _exit_plan(self, close: float, atr: float) -> ExitPlan:
        config = self.config
        stop_distance = max(config.stop_atr * atr, config.min_stop_pct * close)
        return ExitPlan(
            stop_distance=stop_distance,
            take_profits=(
                TakeProfit(config.tp1_atr * atr, config.tp1_fraction, "take_profit_1"),
                TakeProfit(config.tp2_atr * atr, 1.0, "take_profit_2"),
            ),
            breakeven_offset_pct=config.breakeven_offset_pct,
            max_holding_ns=config.max_holding_ns,
        )
