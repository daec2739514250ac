"""Entry filters: a spread guard and a cap on a single order's share of 24h volume.

Both are fed in event time and fail closed: with too little history they refuse (the spread
guard) or cap to zero (the volume cap) rather than guess. Every decision carries a reason string
for the journal (e.g. a `risk_decisions` or `signals` row).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from pydantic import Field, model_validator

from engine.config import _Frozen
from engine.tactics.commands import Quote
from engine.timeframes import parse_duration_ns


@dataclass(frozen=True)
class FilterDecision:
    """`allowed` False blocks the entry; `quantity` is the size allowed (may be capped)."""

    allowed: bool
    quantity: float
    rule: str
    reason: str


class _RollingSum:
    """Sum of (ts, value) samples within a trailing event-time window; exact re-summing keeps
    the running total from drifting."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self.samples: deque[tuple[int, float]] = deque()
        self.total = 0.0
        self._evictions = 0

    def add(self, ts_event: int, value: float) -> None:
        if self.samples and ts_event < self.samples[-1][0]:
            raise ValueError(f"sample at {ts_event} is older than the last one")
        self.samples.append((ts_event, value))
        self.total += value
        self.evict(ts_event)

    def evict(self, now: int) -> None:
        low = now - self.window_ns
        while self.samples and self.samples[0][0] <= low:
            self.total -= self.samples.popleft()[1]
            self._evictions += 1
        if self._evictions >= 1024:
            self._evictions = 0
            self.total = math.fsum(value for _, value in self.samples)


def _check_window(window: str) -> None:
    """A rolling window must parse as a positive duration (errors name the `window` key)."""
    try:
        duration = parse_duration_ns(window)
    except ValueError as error:
        raise ValueError(f"window: {error}") from None
    if duration <= 0:
        raise ValueError(f"window: must be positive, got {window!r}")


class SpreadFilterConfig(_Frozen):
    """No entry when the spread exceeds `max_multiple` x its running average over `window`."""

    window: str = "5m"
    max_multiple: float = Field(2.0, gt=1)
    min_samples: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SpreadFilterConfig:
        _check_window(self.window)
        return self


class SpreadFilter:
    """Running average of the quoted spread (bps) over the window, before the current quote."""

    def __init__(self, config: SpreadFilterConfig) -> None:
        self.config = config
        self._history = _RollingSum(parse_duration_ns(config.window))
        self.last: Quote | None = None

    def observe(self, quote: Quote) -> None:
        """Feed a quote; invalid quotes are kept as `last` (so an entry on them is refused) but
        never enter the average."""
        if self.last is not None and self.last.valid:
            self._history.add(self.last.ts_event, self.last.spread_bps)
        self.last = quote
        self._history.evict(quote.ts_event)

    def average_bps(self) -> float:
        count = len(self._history.samples)
        return self._history.total / count if count else math.nan

    def check(self, quantity: float) -> FilterDecision:
        """Decide on an entry now (at the last quote observed)."""
        quote = self.last
        if quote is None or not quote.valid:
            return FilterDecision(False, 0.0, "spread_filter", "no valid quote")
        count = len(self._history.samples)
        if count < self.config.min_samples:
            return FilterDecision(False, 0.0, "spread_filter",
                                  f"spread average warming up: {count} of "
                                  f"{self.config.min_samples} samples")
        spread, average = quote.spread_bps, self.average_bps()
        limit = self.config.max_multiple * average
        if spread > limit:
            return FilterDecision(
                False, 0.0, "spread_filter",
                f"spread {spread:.2f} bps > {self.config.max_multiple:g}x average "
                f"{average:.2f} bps over {self.config.window}",
            )
        return FilterDecision(True, quantity, "spread_filter",
                              f"spread {spread:.2f} bps within {limit:.2f} bps")


class VolumeCapConfig(_Frozen):
    """A single order's notional is capped at `max_fraction` of the rolling quote volume."""

    max_fraction: float = Field(0.01, gt=0, le=1)
    window: str = "24h"

    @model_validator(mode="after")
    def _check(self) -> VolumeCapConfig:
        _check_window(self.window)
        return self


class VolumeCap:
    """Rolling quote volume (fed per trade or per bar) and the cap it puts on one order."""

    def __init__(self, config: VolumeCapConfig) -> None:
        self.config = config
        self._volume = _RollingSum(parse_duration_ns(config.window))

    def observe(self, ts_event: int, quote_volume: float) -> None:
        if not (math.isfinite(quote_volume) and quote_volume >= 0):
            raise ValueError(f"quote volume must be finite and >= 0, got {quote_volume}")
        self._volume.add(ts_event, quote_volume)

    def volume(self, ts_event: int) -> float:
        self._volume.evict(ts_event)
        return max(0.0, self._volume.total)

    def check(self, ts_event: int, quantity: float, price: float) -> FilterDecision:
        """Cap `quantity` (base units at `price`) to the volume share; refuse when nothing is
        known or the cap rounds to nothing."""
        if not (math.isfinite(price) and price > 0 and math.isfinite(quantity) and quantity > 0):
            return FilterDecision(False, 0.0, "volume_cap",
                                  f"invalid quantity {quantity} or price {price}")
        volume = self.volume(ts_event)
        cap = self.config.max_fraction * volume / price
        share = f"{self.config.max_fraction:.2%} of {self.config.window} quote volume {volume:.6g}"
        if not cap > 0:
            return FilterDecision(False, 0.0, "volume_cap", f"no volume: cap is {share}")
        if quantity > cap:
            return FilterDecision(True, cap, "volume_cap",
                                  f"capped {quantity:.6g} to {cap:.6g} ({share})")
        return FilterDecision(True, quantity, "volume_cap", f"{quantity:.6g} within {share}")
