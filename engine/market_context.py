"""Market facts risk rules read at an entry: the quoted spread against its recent average, and
the traded quote volume over the last day.

Columns only: each batch's quotes and trades are taken as arrays (`observe`), and a question is
answered for one event time (`spread_at`, `quote_volume_at`) with binary searches over them, so
an entry never sees data from after its own time, even within its batch. What later batches need
is carried over in bounded form: the quotes of the last spread window, and the day's trades
folded into one-minute sums. Values at an entry:

- `spread_bps`: (ask - bid) / mid of the last valid quote at or before the entry, in bps;
- `spread_avg_bps`: the mean of the valid quotes' spreads within the window before that quote,
  and `spread_samples`, how many they are;
- `quote_volume_24h`: the quote volume (price x quantity) traded in the volume window up to the
  entry; whole minutes before the current batch, exact trades within it. A run younger than the
  window sees less volume, which only makes a volume cap tighter.
"""

from __future__ import annotations

import math

import numpy as np

from engine.batches import FeatureBatch
from engine.timeframes import NS_PER_MINUTE

_EMPTY_I = np.empty(0, np.int64)
_EMPTY_F = np.empty(0, np.float64)


class MarketContext:
    """One symbol's spread and volume history (see module docs); picklable."""

    def __init__(self, spread_window_ns: int, volume_window_ns: int) -> None:
        self.spread_window_ns = spread_window_ns
        self.volume_window_ns = volume_window_ns
        self._quote_ts, self._spread = _EMPTY_I, _EMPTY_F  # carried + current batch
        self._minutes, self._minute_volume = _EMPTY_I, _EMPTY_F  # folded earlier batches
        self._trade_ts, self._trade_cumulative = _EMPTY_I, _EMPTY_F  # current batch

    def observe(self, batch: FeatureBatch) -> None:
        """Take a batch's quotes and trades (at its start; questions stay time-bounded)."""
        quotes = batch.quotes
        if quotes is not None and len(quotes):
            bid, ask = np.asarray(quotes.bid_price), np.asarray(quotes.ask_price)
            valid = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
            spread = (ask[valid] - bid[valid]) / ((ask[valid] + bid[valid]) / 2) * 1e4
            ts = np.asarray(quotes.ts_event)[valid]
            order = np.argsort(ts, kind="stable")
            self._quote_ts = np.concatenate([self._quote_ts, ts[order]])
            self._spread = np.concatenate([self._spread, spread[order]])
        trades = batch.trades
        self._trade_ts = np.asarray(trades.ts_event)
        self._trade_cumulative = np.cumsum(np.asarray(trades.price) * np.asarray(trades.qty))

    def end_batch(self) -> None:
        """Fold the batch's trades into minutes and trim what no window needs any more."""
        if len(self._trade_ts):
            notional = np.diff(self._trade_cumulative, prepend=0.0)
            minutes = self._trade_ts // NS_PER_MINUTE
            unique, inverse = np.unique(minutes, return_inverse=True)
            sums = np.bincount(inverse, weights=notional)
            self._minutes = np.concatenate([self._minutes, unique])
            self._minute_volume = np.concatenate([self._minute_volume, sums])
            keep = self._minutes * NS_PER_MINUTE > self._trade_ts[-1] - self.volume_window_ns
            self._minutes, self._minute_volume = self._minutes[keep], self._minute_volume[keep]
        if len(self._quote_ts):
            start = int(np.searchsorted(self._quote_ts,
                                        self._quote_ts[-1] - self.spread_window_ns, "left"))
            self._quote_ts, self._spread = self._quote_ts[start:], self._spread[start:]
        self._trade_ts, self._trade_cumulative = _EMPTY_I, _EMPTY_F

    def spread_at(self, ts_event: int) -> tuple[float, float, int]:
        """(spread now, its window average before now, how many quotes that average is of);
        NaN where unknown."""
        last = int(np.searchsorted(self._quote_ts, ts_event, "right")) - 1
        if last < 0:
            return math.nan, math.nan, 0
        now = float(self._spread[last])
        start = int(np.searchsorted(self._quote_ts,
                                    self._quote_ts[last] - self.spread_window_ns, "right"))
        window = self._spread[start:last]
        return now, float(window.mean()) if len(window) else math.nan, len(window)

    def quote_volume_at(self, ts_event: int) -> float:
        """Quote volume traded in the window up to `ts_event` (NaN before any trade)."""
        if not len(self._minutes) and not len(self._trade_ts):
            return math.nan
        first_minute = (ts_event - self.volume_window_ns) // NS_PER_MINUTE
        earlier = float(self._minute_volume[self._minutes >= first_minute].sum())
        index = int(np.searchsorted(self._trade_ts, ts_event, "right"))
        current = float(self._trade_cumulative[index - 1]) if index > 0 else 0.0
        return earlier + current
