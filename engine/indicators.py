"""Streaming technical indicators over closed bars, with their state carried between batches.

Bars reach a strategy in batches of any size (thousands in a replay slice, one in live mode), so
every indicator here is an object that takes the columns of the bars that just closed, oldest
first, and returns its columns for exactly those bars. The few values each one needs from earlier
batches (a tail of the last `period - 1` inputs, or the previous smoothed value) are kept as small
NumPy arrays and floats: an indicator pickles mid-stream and carries on identically, and feeding a
series in one call or in any split of it gives the same numbers (to rounding).

Values match TA-Lib's definitions with its default settings, and are NaN during warm-up:

- SMA(n), volume SMA(n): mean of the last n values; first value at index n-1.
- EMA(n): k = 2/(n+1), seeded with the SMA of the first n values at index n-1 (TA-Lib "classic").
- ATR(n): true range from the second bar on; first value at index n is the mean of the first n
  true ranges, then Wilder's smoothing atr = (prev * (n-1) + tr) / n.
- RSI(n): Wilder-smoothed average gain and loss of close-to-close changes, seeded with the plain
  means of the first n changes; first value at index n; RSI = 100 * gain / (gain + loss), and 0
  when gain + loss is 0 (TA-Lib's convention for a flat series). TA-Lib tests "is zero" against
  a fixed epsilon (1e-8 in 0.4, 1e-14 in 0.6); this module tests exact zero, so that assets with
  tiny prices (changes below 1e-8) still get a meaningful RSI.
- Donchian(n): highest high and lowest low of the last n bars, current included (TA-Lib MAX/MIN).
- Bollinger(n, width): SMA(n) of close plus and minus width population standard deviations
  (ddof=0) over the same n bars (TA-Lib BBANDS with an SMA).

Recursions (EMA, Wilder) run through `scipy.signal.lfilter` with the carried value as initial
condition; rolling windows through `sliding_window_view` over the carried tail plus the new bars.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from engine.batches import BarColumns
from engine.indicator_spec import IndicatorSpec

FloatArray = npt.NDArray[np.float64]


def _column(bars: Mapping[str, np.ndarray], name: str) -> FloatArray:
    """One input column as float64, with an error naming the column when it is missing."""
    try:
        return np.asarray(bars[name], dtype=np.float64)
    except KeyError:
        raise ValueError(f"indicator input lacks the {name!r} column") from None


class _Tail:
    """The last `length - 1` inputs seen, so that a rolling window can span batches.

    It starts as NaN, so windows that reach back before the first bar are NaN and so are the
    statistics taken over them: that is exactly the warm-up.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self.values: FloatArray = np.full(length - 1, np.nan)

    def windows(self, new: FloatArray) -> FloatArray:
        """Array of shape (len(new), length); row i is the window that ends at new[i]."""
        if len(new) == 0:
            return np.empty((0, self.length))
        joined = np.concatenate([self.values, new])
        self.values = joined[len(joined) - (self.length - 1) :].copy()
        return sliding_window_view(joined, self.length)


class _SeededSmoother:
    """Exponential smoothing y = y_prev + alpha * (x - y_prev), seeded with a plain mean.

    The first `period` inputs are averaged to give the first output (at the period-th input);
    outputs before that are NaN. EMA uses alpha = 2/(n+1), Wilder's smoothing alpha = 1/n.
    """

    def __init__(self, period: int, alpha: float) -> None:
        self.period = period
        self.alpha = alpha
        self.seed_values: FloatArray = np.empty(0)
        self.seeded = False
        self.last = math.nan

    def update(self, values: FloatArray) -> FloatArray:
        out = np.full(len(values), np.nan)
        start = 0
        if not self.seeded:
            needed = self.period - len(self.seed_values)
            if len(values) < needed:
                self.seed_values = np.concatenate([self.seed_values, values])
                return out
            seed = np.concatenate([self.seed_values, values[:needed]])
            self.seed_values = np.empty(0)
            self.seeded = True
            self.last = float(seed.sum() / self.period)
            out[needed - 1] = self.last
            start = needed
        rest = values[start:]
        if len(rest):
            decay = 1.0 - self.alpha
            smoothed, _ = lfilter([self.alpha], [1.0, -decay], rest, zi=[decay * self.last])
            out[start:] = smoothed
            self.last = float(smoothed[-1])
        return out


class _PreviousClose:
    """Carries the last close so that changes and true ranges span batches."""

    def __init__(self) -> None:
        self.value = math.nan

    def shifted(self, close: FloatArray) -> FloatArray:
        """The close before each bar (NaN before the very first bar of the stream)."""
        if len(close) == 0:
            return close
        previous = np.concatenate([[self.value], close[:-1]])
        self.value = float(close[-1])
        return previous


class Indicator(ABC):
    """One streaming indicator: `update` returns its columns for the bars given, oldest first."""

    def __init__(self, spec: IndicatorSpec) -> None:
        if spec.period < 1:
            raise ValueError(f"{spec.kind} period must be at least 1, got {spec.period}")
        self.spec = spec

    def columns(self) -> tuple[str, ...]:
        return self.spec.columns()

    @property
    @abstractmethod
    def warmup(self) -> int:
        """How many bars come before the first value (the NaN rows at the start)."""

    @abstractmethod
    def _compute(self, bars: Mapping[str, np.ndarray]) -> tuple[FloatArray, ...]:
        """The indicator's arrays, one per column, for the new bars."""

    def update(self, bars: Mapping[str, np.ndarray]) -> dict[str, FloatArray]:
        """Add the newly closed bars and return the indicator columns for exactly those bars.

        `bars` holds at least the open/high/low/close/volume arrays the indicator reads (a
        `BarColumns.columns` dict will do); they may be empty.
        """
        return dict(zip(self.columns(), self._compute(bars), strict=True))


class MovingAverage(Indicator):
    """SMA of close (`sma`) or of volume (`volume_sma`).

    >>> sma = make_indicator(IndicatorSpec("sma", "1m", 3))
    >>> sma.update({"close": np.array([1.0, 2.0])})["sma_3"].tolist()
    [nan, nan]
    >>> sma.update({"close": np.array([3.0, 5.0])})["sma_3"].round(4).tolist()
    [2.0, 3.3333]
    """

    def __init__(self, spec: IndicatorSpec) -> None:
        super().__init__(spec)
        self.source = "volume" if spec.kind == "volume_sma" else "close"
        self.tail = _Tail(spec.period)

    @property
    def warmup(self) -> int:
        return self.spec.period - 1

    def _compute(self, bars: Mapping[str, np.ndarray]) -> tuple[FloatArray, ...]:
        return (self.tail.windows(_column(bars, self.source)).mean(axis=1),)


class Ema(Indicator):
    """EMA of close, seeded with the SMA of the first `period` closes.

    >>> ema = make_indicator(IndicatorSpec("ema", "1m", 3))
    >>> ema.update({"close": np.array([1.0, 2.0, 3.0, 4.0, 5.0])})["ema_3"].tolist()
    [nan, nan, 2.0, 3.0, 4.0]
    >>> ema.update({"close": np.array([7.0])})["ema_3"].tolist()
    [5.5]
    """

    def __init__(self, spec: IndicatorSpec) -> None:
        super().__init__(spec)
        self.smoother = _SeededSmoother(spec.period, 2.0 / (spec.period + 1))

    @property
    def warmup(self) -> int:
        return self.spec.period - 1

    def _compute(self, bars: Mapping[str, np.ndarray]) -> tuple[FloatArray, ...]:
        return (self.smoother.update(_column(bars, "close")),)


class Atr(Indicator):
    """Average true range with Wilder's smoothing; the first bar has no true range.

    >>> atr = make_indicator(IndicatorSpec("atr", "1m", 2))
    >>> bars = {"high": np.array([10.0, 12.0, 13.0, 11.0]),
    ...         "low": np.array([8.0, 9.0, 11.0, 8.0]),
    ...         "close": np.array([9.0, 11.0, 12.0, 9.0])}
    >>> atr.update(bars)["atr_2"].tolist()  # true ranges 3, 2, 4
    [nan, nan, 2.5, 3.25]
    """

    def __init__(self, spec: IndicatorSpec) -> None:
        super().__init__(spec)
        self.previous_close = _PreviousClose()
        self.smoother = _SeededSmoother(spec.period, 1.0 / spec.period)

    @property
    def warmup(self) -> int:
        return self.spec.period

    def _compute(self, bars: Mapping[str, np.ndarray]) -> tuple[FloatArray, ...]:
        high, low = _column(bars, "high"), _column(bars, "low")
        previous = self.previous_close.shifted(_column(bars, "close"))
        true_range = np.maximum(high - low, np.abs(high - previous))
        true_range = np.maximum(true_range, np.abs(low - previous))
        # Only the stream's very first bar lacks a previous close; it has no true range.
        first = 1 if len(previous) and math.isnan(previous[0]) else 0
        out = np.full(len(high), np.nan)
        out[first:] = self.smoother.update(true_range[first:])
        return (out,)


class Rsi(Indicator):
    """Relative strength index with Wilder's smoothing of gains and losses.

    >>> rsi = make_indicator(IndicatorSpec("rsi", "1m", 2))
    >>> rsi.update({"close": np.array([1.0, 2.0, 1.0, 3.0, 3.0])})["rsi_2"].round(4).tolist()
    [nan, nan, 50.0, 83.3333, 83.3333]
    """

    def __init__(self, spec: IndicatorSpec) -> None:
        super().__init__(spec)
        self.previous_close = _PreviousClose()
        self.gains = _SeededSmoother(spec.period, 1.0 / spec.period)
        self.losses = _SeededSmoother(spec.period, 1.0 / spec.period)

    @property
    def warmup(self) -> int:
        return self.spec.period

    def _compute(self, bars: Mapping[str, np.ndarray]) -> tuple[FloatArray, ...]:
        close = _column(bars, "close")
        change = close - self.previous_close.shifted(close)
        first = 1 if len(change) and math.isnan(change[0]) else 0
        gain = np.full(len(close), np.nan)
        loss = np.full(len(close), np.nan)
        gain[first:] = self.gains.update(np.maximum(change[first:], 0.0))
        loss[first:] = self.losses.update(np.maximum(-change[first:], 0.0))
        total = gain + loss
        with np.errstate(invalid="ignore", divide="ignore"):
            rsi = np.where(total == 0.0, 0.0, 100.0 * gain / total)
        return (rsi,)


class Donchian(Indicator):
    """Highest high and lowest low of the last `period` bars, the current bar included.

    >>> channel = make_indicator(IndicatorSpec("donchian", "1m", 2))
    >>> out = channel.update({"high": np.array([3.0, 5.0, 4.0]), "low": np.array([1.0, 2.0, 3.0])})
    >>> out["donchian_upper_2"].tolist(), out["donchian_lower_2"].tolist()
    ([nan, 5.0, 5.0], [nan, 1.0, 2.0])
    """

    def __init__(self, spec: IndicatorSpec) -> None:
        super().__init__(spec)
        self.highs = _Tail(spec.period)
        self.lows = _Tail(spec.period)

    @property
    def warmup(self) -> int:
        return self.spec.period - 1

    def _compute(self, bars: Mapping[str, np.ndarray]) -> tuple[FloatArray, ...]:
        upper = self.highs.windows(_column(bars, "high")).max(axis=1)
        lower = self.lows.windows(_column(bars, "low")).min(axis=1)
        return upper, lower


class Bollinger(Indicator):
    """SMA of close with bands `width` population standard deviations either side.

    >>> bands = make_indicator(IndicatorSpec("bollinger", "1m", 2, width=2.0))
    >>> out = bands.update({"close": np.array([1.0, 3.0])})
    >>> out["bb_mid_2"].tolist(), out["bb_upper_2"].tolist(), out["bb_lower_2"].tolist()
    ([nan, 2.0], [nan, 4.0], [nan, 0.0])
    """

    def __init__(self, spec: IndicatorSpec) -> None:
        super().__init__(spec)
        self.tail = _Tail(spec.period)

    @property
    def warmup(self) -> int:
        return self.spec.period - 1

    def _compute(self, bars: Mapping[str, np.ndarray]) -> tuple[FloatArray, ...]:
        windows = self.tail.windows(_column(bars, "close"))
        middle = windows.mean(axis=1)
        deviation = np.sqrt(((windows - middle[:, None]) ** 2).mean(axis=1))
        band = self.spec.width * deviation
        return middle, middle + band, middle - band


_KINDS: dict[str, type[Indicator]] = {
    "sma": MovingAverage,
    "volume_sma": MovingAverage,
    "ema": Ema,
    "atr": Atr,
    "rsi": Rsi,
    "donchian": Donchian,
    "bollinger": Bollinger,
}


def make_indicator(spec: IndicatorSpec) -> Indicator:
    """A fresh streaming indicator for `spec`; raises ValueError naming the allowed kinds."""
    try:
        kind = _KINDS[spec.kind]
    except KeyError:
        allowed = ", ".join(_KINDS)
        raise ValueError(f"unknown indicator kind {spec.kind!r}; allowed: {allowed}") from None
    return kind(spec)


class IndicatorSet:
    """Several indicators on the bars of one timeframe, updated together.

    Specs that are equal are computed once; two different specs that would write the same
    column are refused.

    >>> indicators = IndicatorSet([IndicatorSpec("sma", "1m", 2), IndicatorSpec("ema", "1m", 2)])
    >>> indicators.columns()
    ('sma_2', 'ema_2')
    >>> out = indicators.update({"close": np.array([1.0, 3.0, 6.0])})
    >>> out["sma_2"].tolist(), out["ema_2"].round(4).tolist()
    ([nan, 2.0, 4.5], [nan, 2.0, 4.6667])
    """

    def __init__(self, specs: Iterable[IndicatorSpec]) -> None:
        unique = list(dict.fromkeys(specs))
        timeframes = {spec.timeframe for spec in unique}
        if len(timeframes) > 1:
            raise ValueError(f"IndicatorSet takes one timeframe, got {sorted(timeframes)}")
        self.timeframe: str | None = timeframes.pop() if timeframes else None
        self.indicators = [make_indicator(spec) for spec in unique]
        names = [name for indicator in self.indicators for name in indicator.columns()]
        clashes = sorted({name for name in names if names.count(name) > 1})
        if clashes:
            raise ValueError(f"indicator specs write the same columns: {clashes}")

    def columns(self) -> tuple[str, ...]:
        return tuple(name for indicator in self.indicators for name in indicator.columns())

    @property
    def warmup(self) -> int:
        """Bars needed before every column has a value."""
        return max((indicator.warmup for indicator in self.indicators), default=0)

    def update(self, bars: Mapping[str, np.ndarray]) -> dict[str, FloatArray]:
        """All indicator columns for the new bars (see `Indicator.update`)."""
        out: dict[str, FloatArray] = {}
        for indicator in self.indicators:
            out.update(indicator.update(bars))
        return out

    def extend(self, bars: BarColumns) -> BarColumns:
        """The same bars with the indicator columns added (bars of this set's timeframe)."""
        if self.timeframe is not None and bars.timeframe != self.timeframe:
            raise ValueError(
                f"IndicatorSet for {self.timeframe} bars was given {bars.timeframe} bars"
            )
        return BarColumns(bars.timeframe, {**bars.columns, **self.update(bars.columns)})
