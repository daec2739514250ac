"""What a strategy asks the dataflow to compute on its bars, and the column names it gets back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IndicatorKind = Literal["ema", "sma", "atr", "rsi", "donchian", "bollinger", "volume_sma"]


@dataclass(frozen=True)
class IndicatorSpec:
    """One indicator on one timeframe's bars.

    Column names are stable so strategies can read them from `BarColumns`:

    >>> IndicatorSpec("donchian", "15m", 20).columns()
    ('donchian_upper_20', 'donchian_lower_20')
    >>> IndicatorSpec("ema", "1m", 10).columns()
    ('ema_10',)
    """

    kind: IndicatorKind
    timeframe: str
    period: int
    width: float = 2.0  # Bollinger band width in standard deviations

    def columns(self) -> tuple[str, ...]:
        period = self.period
        if self.kind == "donchian":
            return (f"donchian_upper_{period}", f"donchian_lower_{period}")
        if self.kind == "bollinger":
            return (f"bb_mid_{period}", f"bb_upper_{period}", f"bb_lower_{period}")
        return (f"{self.kind}_{period}",)
