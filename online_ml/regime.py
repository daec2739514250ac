"""Online market-regime detection, one bar at a time.

`RegimeDetector.update(close, volume)` folds one closed bar into exponentially weighted
statistics of log returns and answers the regime as of that bar, from the first rule that holds:

1. `capitulation`: the bar fell at least `capitulation_sigmas` long-run deviations, on at least
   `capitulation_volume` times the average volume (when volumes are given);
2. `high_volatility`: short-run deviation at least `high_volatility_ratio` times the long-run;
3. `compression`: short-run deviation at most `compression_ratio` times the long-run;
4. `trending_up` / `trending_down`: the weighted mean return is at least `trend_t` standard
   errors from zero;
5. `ranging`: none of the above.

Before `warmup_bars` bars it answers `warming_up`. Pure, event-ordered and picklable, so a
detector inside an actor is checkpointed with it and replays identically.

>>> import math
>>> detector, close = RegimeDetector(), 100.0
>>> for step in range(200):
...     close *= math.exp(0.001 + 0.0005 * math.sin(step))
...     regime = detector.update(close)
>>> regime
'trending_up'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

REGIMES = ("warming_up", "trending_up", "trending_down", "ranging", "high_volatility",
           "compression", "capitulation")


class RegimeConfig(BaseModel):
    """Half-lives in bars and the thresholds of the rules (module docs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    short_half_life: float = Field(10.0, gt=0)
    long_half_life: float = Field(120.0, gt=0)
    trend_half_life: float = Field(30.0, gt=0)
    warmup_bars: int = Field(60, ge=2)
    trend_t: float = Field(2.0, gt=0)
    high_volatility_ratio: float = Field(2.0, gt=1)
    compression_ratio: float = Field(0.5, gt=0, lt=1)
    capitulation_sigmas: float = Field(4.0, gt=0)
    capitulation_volume: float = Field(3.0, ge=1)


def _alpha(half_life: float) -> float:
    return 1.0 - 0.5 ** (1.0 / half_life)


@dataclass
class _Ewm:
    """Exponentially weighted mean and variance (West's update)."""

    alpha: float
    mean: float = 0.0
    variance: float = 0.0
    started: bool = False

    def update(self, value: float) -> None:
        if not self.started:
            self.mean, self.started = value, True
            return
        delta = value - self.mean
        self.mean += self.alpha * delta
        self.variance = (1.0 - self.alpha) * (self.variance + self.alpha * delta * delta)


class RegimeDetector:
    """The online detector of the module docs."""

    def __init__(self, config: RegimeConfig | None = None) -> None:
        self.config = config or RegimeConfig()
        self._short = _Ewm(_alpha(self.config.short_half_life))
        self._long = _Ewm(_alpha(self.config.long_half_life))
        self._trend = _Ewm(_alpha(self.config.trend_half_life))
        self._volume = _Ewm(_alpha(self.config.long_half_life))
        self._last_close: float | None = None
        self.bars = 0
        self.regime = "warming_up"

    def update(self, close: float, volume: float | None = None) -> str:
        """Fold one closed bar in; returns the regime as of it. A non-finite or non-positive
        close is refused (ValueError) and changes nothing."""
        if not (math.isfinite(close) and close > 0):
            raise ValueError(f"close must be finite and > 0, got {close!r}")
        previous, self._last_close = self._last_close, close
        if previous is None:
            return self.regime
        change = math.log(close / previous)
        long_deviation = math.sqrt(self._long.variance) if self._long.started else 0.0
        average_volume = self._volume.mean if self._volume.started else math.nan
        for statistic in (self._short, self._long, self._trend):
            statistic.update(change)
        if volume is not None and math.isfinite(volume) and volume >= 0:
            self._volume.update(volume)
        self.bars += 1
        self.regime = self._classify(change, long_deviation, volume, average_volume)
        return self.regime

    def _classify(self, change: float, long_deviation_before: float, volume: float | None,
                  average_volume: float) -> str:
        config = self.config
        if self.bars < config.warmup_bars:
            return "warming_up"
        short = math.sqrt(self._short.variance)
        long = math.sqrt(self._long.variance)
        heavy = (volume is None or not math.isfinite(average_volume)
                 or volume >= config.capitulation_volume * average_volume)
        if long_deviation_before > 0 and change <= -config.capitulation_sigmas * (
                long_deviation_before) and heavy:
            return "capitulation"
        if long > 0 and short >= config.high_volatility_ratio * long:
            return "high_volatility"
        if long > 0 and short <= config.compression_ratio * long:
            return "compression"
        effective_bars = (2.0 - self._trend.alpha) / self._trend.alpha
        error = long / math.sqrt(effective_bars) if long > 0 else 0.0
        if error > 0 and abs(self._trend.mean) >= config.trend_t * error:
            return "trending_up" if self._trend.mean > 0 else "trending_down"
        return "ranging"


class MinuteRegime:
    """The regime of 1-minute closes, fed by bars of any shorter or equal timeframe.

    `update(ts_close, close)` takes each closed bar; a minute's close (its last bar's close) is
    folded into the detector once a bar of a later minute arrives, so the answer is always the
    regime after the last minute that had ended: never a minute still in progress.

    >>> regime = MinuteRegime()
    >>> for second in range(0, 600, 10):  # ten minutes of 10-second bars
    ...     _ = regime.update((second + 10) * 1_000_000_000, 100.0 + second / 100)
    >>> regime.detector.bars  # nine minutes ended; the first only seeds the returns
    8
    """

    def __init__(self, config: RegimeConfig | None = None) -> None:
        self.detector = RegimeDetector(config)
        self._minute: int | None = None
        self._close = math.nan

    def update(self, ts_close: int, close: float) -> str:
        minute = (ts_close - 1) // 60_000_000_000  # a bar closing at :00 ends the minute before
        if self._minute is not None and minute > self._minute and self._close > 0:
            self.detector.update(self._close)
        if math.isfinite(close) and close > 0:
            self._minute, self._close = minute, close
        return self.detector.regime

    @property
    def regime(self) -> str | None:
        """The regime, or None while warming up."""
        regime = self.detector.regime
        return None if regime == "warming_up" else regime
