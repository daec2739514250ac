"""Tumbling-window bars from trades, vectorised, with the open windows carried between batches.

Windows are [ts_open, ts_open + timeframe) aligned to the epoch. A bar is emitted once its window
has closed by the watermark (ts_close <= watermark); a window with no trades emits no bar.

How a batch is folded (DESIGN.md's performance rule: NumPy over the batch, small carried state):

1. Trades are cut at base-window boundaries (the base is the gcd of the timeframes, 1 s for the
   defaults) with one comparison of neighbours, and each base window is reduced with
   `np.maximum.reduceat` / `np.add.reduceat` into a partial bar (OHLC, volumes, notional, count).
2. Each timeframe is built from the partials of the largest smaller timeframe that divides it
   (1s -> 1m -> 5m -> 15m -> 1h -> 4h), again with `reduceat`, so the big windows cost a few rows.

A window is reduced only once it is final, that is when all its trades are known: its end is at
or before the watermark, or a trade from a later base window has arrived (trades come in
non-decreasing ts_event order). So every partial is computed from exactly the same inputs in one
`reduceat`, and the bars are identical, bit for bit, however the trades are cut into batches.
What is carried between batches is small: the raw trades of the last, unfinished base window, and
per timeframe the final partials of its open window (at most timeframe / source rows), plus final
windows still waiting for the watermark.

Book features come from `BookTrack` samples (see dataflows/book.py): a bar takes the last sample
stamped in (ts_open, ts_close], a sample stamped B being the book just before B, so a bar closing
at a sampling boundary gets the book as it was at its close. NaN when there is no such sample or
the book was out of sync (the track's features are NaN then).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

import numpy as np

from dataflows.book import BookTrack
from engine.batches import BarColumns, DeadLetter, TradeColumns
from engine.timeframes import DEFAULT_TIMEFRAMES, timeframe_ns

STAGE = "fold_bars"


@dataclass(frozen=True)
class _Partials:
    """Partial bars, one row per window, ordered by ts_open."""

    ts_open: np.ndarray  # int64
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    buy_volume: np.ndarray
    sell_volume: np.ndarray
    notional: np.ndarray  # sum of price * qty
    trade_count: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ts_open)

    def columns(self) -> dict[str, np.ndarray]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    def rows(self, index: slice) -> _Partials:
        """The rows in `index`, copied so that carried state never pins a batch's arrays."""
        return _Partials(**{name: values[index].copy() for name, values in self.columns().items()})

    @staticmethod
    def empty() -> _Partials:
        integers = ("ts_open", "trade_count")
        return _Partials(**{item.name: np.empty(0, np.int64 if item.name in integers
                                                else np.float64) for item in fields(_Partials)})

    @staticmethod
    def join(first: _Partials, second: _Partials) -> _Partials:
        if len(first) == 0:
            return second
        if len(second) == 0:
            return first
        return _Partials(**{name: np.concatenate([values, getattr(second, name)])
                            for name, values in first.columns().items()})

    @staticmethod
    def from_trades(trades: tuple[np.ndarray, ...], width: int) -> _Partials:
        """Reduce sorted trades (ts_event, price, qty, side) into windows of `width` ns."""
        ts, price, qty, side = trades
        if len(ts) == 0:
            return _Partials.empty()
        window = ts - ts % width
        starts = _group_starts(window)
        ends = np.append(starts[1:], len(ts))
        return _Partials(
            ts_open=window[starts], open=price[starts],
            high=np.maximum.reduceat(price, starts), low=np.minimum.reduceat(price, starts),
            close=price[ends - 1], volume=np.add.reduceat(qty, starts),
            buy_volume=np.add.reduceat(np.where(side > 0, qty, 0.0), starts),
            sell_volume=np.add.reduceat(np.where(side < 0, qty, 0.0), starts),
            notional=np.add.reduceat(price * qty, starts), trade_count=ends - starts,
        )

    def group(self, width: int) -> _Partials:
        """Combine rows into windows of `width` ns (a multiple of the rows' own width)."""
        if len(self) == 0:
            return self
        window = self.ts_open - self.ts_open % width
        starts = _group_starts(window)
        ends = np.append(starts[1:], len(self))
        return _Partials(
            ts_open=window[starts], open=self.open[starts],
            high=np.maximum.reduceat(self.high, starts), low=np.minimum.reduceat(self.low, starts),
            close=self.close[ends - 1], volume=np.add.reduceat(self.volume, starts),
            buy_volume=np.add.reduceat(self.buy_volume, starts),
            sell_volume=np.add.reduceat(self.sell_volume, starts),
            notional=np.add.reduceat(self.notional, starts),
            trade_count=np.add.reduceat(self.trade_count, starts),
        )


def _group_starts(window: np.ndarray) -> np.ndarray:
    """Indices where a sorted array of window starts changes value, 0 included."""
    change = np.flatnonzero(window[1:] != window[:-1]) + 1
    return np.concatenate([np.zeros(1, np.int64), change])


def _no_trades() -> tuple[np.ndarray, ...]:
    empty = TradeColumns.empty()
    return (empty.ts_event, empty.price, empty.qty, empty.side)


class _Level:
    """One timeframe: where its rows come from and its carried open and unemitted windows."""

    def __init__(self, name: str, width: int, source: int, source_width: int) -> None:
        self.name = name
        self.width = width
        self.source = source  # index of the level it is built from; -1 for the base partials
        self.source_width = source_width
        self.pending = _Partials.empty()  # final source rows of windows not yet final
        self.unemitted = _Partials.empty()  # final windows not yet closed by the watermark


class BarFolder:
    """Folds one symbol's trades into bars of several timeframes; picklable between batches."""

    def __init__(self, timeframes: tuple[str, ...] = DEFAULT_TIMEFRAMES) -> None:
        names = list(dict.fromkeys(timeframes))
        if not names:
            raise ValueError("BarFolder needs at least one timeframe")
        widths = {name: timeframe_ns(name) for name in names}
        self.timeframes = tuple(names)
        self.base_width = math.gcd(*widths.values())
        self.levels: list[_Level] = []
        for name in sorted(names, key=widths.__getitem__):
            width = widths[name]
            sources = [i for i, level in enumerate(self.levels) if width % level.width == 0]
            source = sources[-1] if sources else -1
            source_width = self.levels[source].width if sources else self.base_width
            self.levels.append(_Level(name, width, source, source_width))
        self.watermark = -(2**62)
        self.final_until = -(2**62)  # every base window ending at or before this is final
        # Raw ts_event, price, qty and side of the trades of the unfinished last base window.
        self.carry: tuple[np.ndarray, ...] = _no_trades()
        self.samples = BookTrack.empty()
        self.dead_letters: list[DeadLetter] = []
        self._no_bars: dict[str, BarColumns] | None = None  # what a quiet batch returns

    def fold(self, trades: TradeColumns, watermark: int,
             book: BookTrack | None = None) -> dict[str, BarColumns]:
        """Add trades (non-decreasing ts_event) and return, per timeframe, the bars that closed.

        `book` holds the book samples produced for this slice; they are kept as long as a bar
        still to come may need them. Trades in windows already final are late: they are left
        out and routed to `dead_letters` (drain with `take_dead_letters`).
        """
        return self._advance(trades, watermark, book, force=False)

    def flush(self, final_watermark: int, book: BookTrack | None = None) -> dict[str, BarColumns]:
        """End of stream: close every open window and emit it with its nominal ts_close."""
        return self._advance(TradeColumns.empty(), final_watermark, book, force=True)

    def take_dead_letters(self) -> list[DeadLetter]:
        letters, self.dead_letters = self.dead_letters, []
        return letters

    # ------------------------------------------------------------ one batch

    def _advance(self, trades: TradeColumns, watermark: int, book: BookTrack | None,
                 force: bool) -> dict[str, BarColumns]:
        if not force and self._quiet(trades, watermark):
            return self._absorb_quietly(trades, watermark, book)
        self.watermark = max(self.watermark, watermark)
        trades = self._drop_late(trades)
        if book is not None and len(book):
            self.samples = BookTrack.concat([self.samples, book])
        final: dict[int, _Partials] = {-1: self._base_partials(trades, force)}
        bars: dict[str, BarColumns] = {}
        for index, level in enumerate(self.levels):
            final[index] = self._close_windows(level, final[level.source], force)
            bars[level.name] = self._emit(level, final[index], force)
            if force and len(bars[level.name]):
                self.final_until = max(self.final_until, int(bars[level.name]["ts_close"][-1]))
        self._trim_samples()
        return {name: bars[name] for name in self.timeframes}

    # ------------------------------------------------------------ live fast path

    def _quiet(self, trades: TradeColumns, watermark: int) -> bool:
        """True when a batch can close no window: its trades stay in the open base window and
        neither they nor the watermark make any window final or emittable. Live batches of a
        few frames are almost all like this; the full fold would give the same (empty) bars."""
        width = self.base_width
        watermark = max(self.watermark, watermark)
        final_until = max(self.final_until, watermark - watermark % width)
        ts = trades.ts_event
        if len(ts):
            first, last = int(ts[0]), int(ts[-1])
            if first < self.final_until or last < first:
                return False  # late or unordered trades: the full path reports them
            start = int(self.carry[0][0]) if len(self.carry[0]) else first
            start -= start % width
            if last >= start + width:
                return False
            final_until = max(final_until, start)
        for level in self.levels:
            if (final_until - final_until % level.width
                    != self.final_until - self.final_until % level.width):
                return False
            unemitted = level.unemitted
            if len(unemitted) and int(unemitted.ts_open[0]) <= watermark - level.width:
                return False
        return True

    def _absorb_quietly(self, trades: TradeColumns, watermark: int,
                        book: BookTrack | None) -> dict[str, BarColumns]:
        """The state change of a quiet batch, exactly as `_advance` would make it."""
        self.watermark = max(self.watermark, watermark)
        width = self.base_width
        self.final_until = max(self.final_until, self.watermark - self.watermark % width)
        if len(trades):
            columns = (trades.ts_event, trades.price, trades.qty, trades.side)
            if len(self.carry[0]):
                self.carry = tuple(np.concatenate([old, new])
                                   for old, new in zip(self.carry, columns, strict=True))
            else:
                self.carry = tuple(values.copy() for values in columns)
            start = int(self.carry[0][0])
            self.final_until = max(self.final_until, start - start % width)
        if book is not None and len(book):
            self.samples = BookTrack.concat([self.samples, book])
        self._trim_samples()
        if self._no_bars is None:
            empty = _Partials.empty()
            by_name = {level.name: self._bars(level, empty) for level in self.levels}
            self._no_bars = {name: by_name[name] for name in self.timeframes}
        return dict(self._no_bars)

    def _drop_late(self, trades: TradeColumns) -> TradeColumns:
        ts = trades.ts_event
        if len(ts) > 1 and bool((ts[1:] < ts[:-1]).any()):
            raise ValueError("BarFolder.fold needs trades in non-decreasing ts_event order")
        late = int(np.searchsorted(ts, self.final_until, side="left")) if len(ts) else 0
        for row in range(late):
            self.dead_letters.append(DeadLetter(
                STAGE, "late_trade", f"trade at ts_event {int(ts[row])} arrived after its "
                f"window was closed (final up to {self.final_until}); left out of the bars",
                f"trade_id {int(trades.trade_id[row])}", None, int(ts[row]),
                int(trades.ts_recv[row]),
                f"price={float(trades.price[row])} qty={float(trades.qty[row])}"))
        return trades.take(slice(late, None)) if late else trades

    def _base_partials(self, trades: TradeColumns, force: bool) -> _Partials:
        """Final base-window partials; the trades of an unfinished last window are carried."""
        width = self.base_width
        columns = (trades.ts_event, trades.price, trades.qty, trades.side)
        segments: list[tuple[np.ndarray, ...]] = [columns]
        if len(self.carry[0]):
            # The carried window is completed from the head of the batch and reduced on its own.
            carried_start = int(self.carry[0][0]) - int(self.carry[0][0]) % width
            head = int(np.searchsorted(columns[0], carried_start + width, side="left"))
            segments = [tuple(np.concatenate([old, new[:head]])
                              for old, new in zip(self.carry, columns, strict=True)),
                        tuple(values[head:] for values in columns)]
        partials = _Partials.empty()
        for segment in segments:
            partials = _Partials.join(partials, _Partials.from_trades(segment, width))
        if len(partials):
            self.final_until = max(self.final_until, int(partials.ts_open[-1]))
        self.final_until = max(self.final_until, self.watermark - self.watermark % width)
        last = segments[-1] if len(segments[-1][0]) else segments[0]
        if len(partials) and not force and partials.ts_open[-1] + width > self.final_until:
            start = int(np.searchsorted(last[0], partials.ts_open[-1], side="left"))
            self.carry = tuple(values[start:].copy() for values in last)
            return partials.rows(slice(0, len(partials) - 1))
        self.carry = _no_trades()
        return partials

    def _close_windows(self, level: _Level, source_rows: _Partials, force: bool) -> _Partials:
        """Newly final windows of `level`, from the newly final rows of its source."""
        if level.width == level.source_width:
            return source_rows
        rows = _Partials.join(level.pending, source_rows)
        if force:
            cut = len(rows)
        else:
            final_end = self.final_until - self.final_until % level.width
            cut = int(np.searchsorted(rows.ts_open, final_end, side="left"))
        level.pending = rows.rows(slice(cut, None))
        return rows.rows(slice(0, cut)).group(level.width) if cut else _Partials.empty()

    def _emit(self, level: _Level, closed: _Partials, force: bool) -> BarColumns:
        """Bars of the final windows that the watermark has closed (all of them if forced)."""
        ready = _Partials.join(level.unemitted, closed)
        if force:
            cut = len(ready)
        else:
            cut = int(np.searchsorted(ready.ts_open, self.watermark - level.width, side="right"))
        level.unemitted = ready.rows(slice(cut, None))
        return self._bars(level, ready.rows(slice(0, cut)))

    def _bars(self, level: _Level, windows: _Partials) -> BarColumns:
        ts_close = windows.ts_open + level.width
        buy, sell = windows.buy_volume, windows.sell_volume
        with np.errstate(invalid="ignore", divide="ignore"):
            columns = {
                "ts_open": windows.ts_open, "ts_close": ts_close, "open": windows.open,
                "high": windows.high, "low": windows.low, "close": windows.close,
                "volume": windows.volume, "buy_volume": buy, "sell_volume": sell,
                "trade_count": windows.trade_count, "vwap": windows.notional / windows.volume,
                "order_flow_imbalance": (buy - sell) / (buy + sell),
            }
        columns.update(self._book_features(windows.ts_open, ts_close))
        return BarColumns(level.name, columns)

    def _book_features(self, ts_open: np.ndarray, ts_close: np.ndarray) -> dict[str, np.ndarray]:
        names = ("spread", "top_imbalance", "depth_bid_5pct", "depth_ask_5pct")
        samples = self.samples
        found = np.searchsorted(samples.ts_event, ts_close, side="right") - 1
        inside = found >= 0
        inside[inside] = samples.ts_event[found[inside]] > ts_open[inside]
        out = {}
        for name in names:
            values = np.full(len(ts_close), np.nan)
            values[inside] = getattr(samples, name)[found[inside]]
            out[name] = values
        return out

    def _trim_samples(self) -> None:
        """Keep the samples a bar still to come may need: the last one up to the watermark
        (every future bar closes after the watermark) and all those after it."""
        keep_from = max(int(np.searchsorted(self.samples.ts_event, self.watermark, "right")) - 1,
                        0)
        if keep_from:
            self.samples = self.samples.take(slice(keep_from, None))


# ---------------------------------------------------------------- benchmark (not a test)


def synthetic_trades(n_trades: int, trades_per_second: float = 40.0, seed: int = 7) -> TradeColumns:
    """Random-walk trades with exponential gaps, for timing; 40/s spreads 3.6M over 25 hours."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1e9 / trades_per_second, n_trades).astype(np.int64)
    ts_event = 1_700_000_000 * 1_000_000_000 + np.cumsum(gaps)
    return TradeColumns(
        ts_event=ts_event, ts_recv=ts_event, trade_id=np.arange(n_trades, dtype=np.int64),
        price=60_000.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-4, n_trades))),
        qty=rng.lognormal(-5.0, 1.5, n_trades),
        side=np.where(rng.random(n_trades) < 0.5, 1, -1).astype(np.int8),
    )


def benchmark_fold(n_trades: int = 3_600_000, batch_size: int = 200_000,
                   timeframes: tuple[str, ...] = DEFAULT_TIMEFRAMES) -> dict[str, float]:
    """Time folding `n_trades` synthetic trades through `timeframes` in batches (no book)."""
    trades = synthetic_trades(n_trades)
    folder = BarFolder(timeframes)
    bars = 0
    start = time.perf_counter()
    for begin in range(0, n_trades, batch_size):
        batch = trades.take(slice(begin, begin + batch_size))
        out = folder.fold(batch, int(batch.ts_event[-1]))
        bars += sum(len(columns) for columns in out.values())
    bars += sum(len(columns) for columns in folder.flush(int(trades.ts_event[-1])).values())
    seconds = time.perf_counter() - start
    return {"trades": n_trades, "bars": bars, "seconds": seconds,
            "trades_per_second": n_trades / seconds}


if __name__ == "__main__":
    print(benchmark_fold())
