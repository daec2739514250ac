"""EMA(fast)/EMA(slow) crossover: the parity baseline, long or short, reverse on every cross.

Crossing definition (the benchmark compares the count with a NumPy reference, so it is exact):
`diff = ema_fast - ema_slow` only where both are non-NaN; `s = sign(diff)` in {-1, 0, +1}; a bar
is a cross when `s != 0`, a previous non-zero sign exists and `s` differs from it. Bars with NaN
or `s == 0` neither cross nor change the remembered sign. No position is taken before the first
cross. Each cross yields one signal ("ema_cross_up"/"ema_cross_down") asking to reverse to the
target position `direction * quantity`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.config import EmaCrossConfig
from engine.indicator_spec import IndicatorSpec
from engine.strategies.base import BarView, PositionView, Signal, Strategy, StrategyAction


class EmaCross(Strategy):
    name = "ema_cross"

    def __init__(self, config: EmaCrossConfig) -> None:
        self.config = config
        self.fast_column = f"ema_{config.fast_period}"
        self.slow_column = f"ema_{config.slow_period}"
        self.last_sign = 0  # last non-zero sign of fast - slow; 0 before the first one

    def timeframes(self) -> tuple[str, ...]:
        return (self.config.timeframe,)

    def required_indicators(self) -> list[IndicatorSpec]:
        timeframe = self.config.timeframe
        return [
            IndicatorSpec("ema", timeframe, self.config.fast_period),
            IndicatorSpec("ema", timeframe, self.config.slow_period),
        ]

    def history_bars(self) -> int:
        return 1

    def on_bar(
        self, timeframe: str, bars: BarView, position: PositionView
    ) -> Sequence[StrategyAction]:
        fast = bars.value(self.fast_column)
        slow = bars.value(self.slow_column)
        if math.isnan(fast) or math.isnan(slow):
            return ()
        difference = fast - slow
        sign = 1 if difference > 0 else -1 if difference < 0 else 0
        if sign == 0:
            return ()
        previous, self.last_sign = self.last_sign, sign
        if previous == 0 or previous == sign:
            return ()
        return (
            Signal(
                direction=sign,
                reason="ema_cross_up" if sign > 0 else "ema_cross_down",
                quantity=self.config.quantity,
                reverse=True,
                details={"ema_fast": fast, "ema_slow": slow},
            ),
        )
