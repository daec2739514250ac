"""Synthetic trade tape from 1-minute bars: every bar expanded into exactly its trade count.

Public data rarely includes every trade of a busy day, but 1-minute klines are everywhere. To
benchmark and test the trade-level pipeline on realistic volumes, each bar becomes `trade_count`
trades whose first price is the open, last the close, maximum the high and minimum the low
(exact float equality), whose quantities (multiples of 1e-8) add up exactly to the bar volume,
and whose times are non-decreasing inside the bar's window. Everything is vectorised over all the
trades of all the bars at once (no Python loop per bar or per trade), and seeded.

Price path of one bar: anchors at position 0 (open), two random interior positions (high and low,
in random order) and the last position (close); straight lines between anchors plus a Brownian
bridge (zero at every anchor) scaled to the bar's range, reflected into [low, high], rounded to
the tick and clipped; anchors are then set exactly. Quantities: heavy-tailed (log-normal) shares
of the bar volume in 1e-8 units, at least one unit per trade, split by cumulative rounding so the
integer sum is exact. Times: exponential gaps scaled into [ts_open, ts_close). Sides: random.

These trades are synthetic: the tape records `"synthetic": true` and never passes for real data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.batches import MarketChunk, TradeColumns

QTY_UNITS_PER_COIN = 100_000_000  # quantities are multiples of 1e-8
DEFAULT_TICK = 0.01  # BTCUSDT price tick
NOISE_SCALE = 0.3  # bridge amplitude as a fraction of the bar range
SIZE_SIGMA = 1.5  # log-normal sigma of trade sizes
BLOCK_MINUTES = 1440  # synth_from_bars generates and writes a day at a time


class SynthesisError(ValueError):
    """A bar cannot be expanded into trades as asked; names the bar and why."""


def minimum_trades(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray
) -> np.ndarray:
    """Fewest trades that can show these O/H/L/C, per bar.

    1 for a flat bar, else 2 (open, close) plus one for each of high and low that is neither the
    open nor the close. In the bundled BTCUSDT month the smallest bar has 70 trades.
    """
    needed = 2 + ((high != open_) & (high != close)).astype(np.int64)
    needed += ((low != open_) & (low != close)).astype(np.int64)
    flat = (open_ == high) & (high == low) & (low == close)
    return np.where(flat, 1, needed)


def _bar_name(ts_close: np.ndarray, index: int, start_minute: int) -> str:
    close_time = np.datetime64(int(ts_close[index]) - 1, "ns").astype("datetime64[ms]")
    return f"bar {start_minute + index} (closing {close_time}Z)"


def _select_bars(
    klines: pa.Table, start_minute: int, minutes: int | None
) -> dict[str, np.ndarray]:
    total = len(klines)
    if start_minute < 0 or start_minute >= total:
        raise SynthesisError(f"start_minute {start_minute} is outside the {total} bars given")
    stop = total if minutes is None else start_minute + minutes
    if minutes is not None and (minutes < 1 or stop > total):
        raise SynthesisError(
            f"minutes={minutes} from start_minute={start_minute} needs bars up to {stop}, "
            f"but there are {total}"
        )
    names = ("ts_open", "ts_close", "open", "high", "low", "close", "volume", "trade_count")
    missing = [name for name in names if name not in klines.column_names]
    if missing:
        raise SynthesisError(f"klines table lacks columns {missing}")
    part = klines.slice(start_minute, stop - start_minute)
    return {name: part.column(name).to_numpy() for name in names}


def _check_bars(bars: dict[str, np.ndarray], units: np.ndarray, start_minute: int) -> None:
    """Raise naming the first bar that cannot be expanded."""
    open_, high, low, close = bars["open"], bars["high"], bars["low"], bars["close"]
    count = bars["trade_count"]
    problems = [
        (~(low <= high) | ~(low <= open_) | ~(open_ <= high) | ~(low <= close)
         | ~(close <= high), "open/close outside [low, high] or not numbers"),
        (count < minimum_trades(open_, high, low, close),
         "trade_count is too small to show open, high, low and close"),
        (units < count, "volume is below one 1e-8 unit per trade"),
        (bars["ts_close"] <= bars["ts_open"], "empty time window"),
    ]
    for bad, what in problems:
        rows = np.flatnonzero(bad)
        if len(rows):
            row = int(rows[0])
            values = (
                f"O={open_[row]} H={high[row]} L={low[row]} C={close[row]} "
                f"volume={bars['volume'][row]} trade_count={count[row]} "
                f"(needs >= {minimum_trades(open_, high, low, close)[row]} trades)"
            )
            raise SynthesisError(
                f"{_bar_name(bars['ts_close'], row, start_minute)}: {what}: {values}"
            )


def synthesize_trades(
    klines: pa.Table,
    *,
    seed: int,
    minutes: int | None = None,
    start_minute: int = 0,
    first_trade_id: int = 1,
    tick: float = DEFAULT_TICK,
) -> TradeColumns:
    """Expand bars `start_minute .. start_minute + minutes` (default: to the end) into trades.

    `klines` has the columns of `storage.klines.read_klines_csv`. The same (klines, seed,
    start_minute, minutes) always gives the same trades; ids run contiguously from
    `first_trade_id`. Raises `SynthesisError` naming the bar when a bar's trade count is below
    `minimum_trades` (a 1-trade bar must be flat), its volume is below 1e-8 per trade, or its
    prices are inconsistent.
    """
    bars = _select_bars(klines, start_minute, minutes)
    count = bars["trade_count"].astype(np.int64)
    units = np.rint(bars["volume"] * QTY_UNITS_PER_COIN).astype(np.int64)
    _check_bars(bars, units, start_minute)
    scale = round(1 / tick)
    if not np.isclose(scale * tick, 1.0):
        raise SynthesisError(f"tick {tick} must divide 1 (e.g. 0.01, 0.5, 1)")
    rng = np.random.default_rng([seed, start_minute])

    bar_count = len(count)
    total = int(count.sum())
    starts = np.cumsum(count) - count
    bar = np.repeat(np.arange(bar_count), count)
    position = np.arange(total) - starts[bar]

    prices = _price_paths(bars, count, starts, bar, position, rng, scale)
    qty = _quantities(units, count, starts, bar, rng)
    ts_event = _times(bars["ts_open"], bars["ts_close"], count, starts, bar, rng)
    side = (rng.integers(0, 2, total, dtype=np.int8) * 2 - 1).astype(np.int8)
    return TradeColumns(
        ts_event=ts_event,
        ts_recv=ts_event.copy(),
        trade_id=np.arange(first_trade_id, first_trade_id + total, dtype=np.int64),
        price=prices,
        qty=qty,
        side=side,
    )


def _price_paths(
    bars: dict[str, np.ndarray],
    count: np.ndarray,
    starts: np.ndarray,
    bar: np.ndarray,
    position: np.ndarray,
    rng: np.random.Generator,
    scale: int,
) -> np.ndarray:
    """Prices of all trades: anchored O/H/L/C plus a Brownian bridge, on the tick grid."""
    open_, high, low, close = bars["open"], bars["high"], bars["low"], bars["close"]
    bar_count = len(count)
    last = count - 1
    # Two distinct interior positions for the extremes (clamped for bars under 4 trades, which
    # are fixed up below).
    first = 1 + (rng.random(bar_count) * np.maximum(count - 2, 1)).astype(np.int64)
    second = 1 + (rng.random(bar_count) * np.maximum(count - 3, 1)).astype(np.int64)
    second += second >= first
    early, late = np.minimum(first, second), np.maximum(first, second)
    early, late = np.minimum(early, last), np.minimum(late, last)
    high_first = rng.random(bar_count) < 0.5
    anchors = np.column_stack([np.zeros(bar_count, np.int64), early, late, last])
    values = np.column_stack(
        [open_, np.where(high_first, high, low), np.where(high_first, low, high), close]
    )

    segment = (position >= early[bar]).astype(np.int64) + (position >= late[bar])
    left = anchors[bar, segment]
    right = anchors[bar, np.minimum(segment + 1, 3)]
    span = np.maximum(right - left, 1)
    fraction = (position - left) / span
    left_value = values[bar, segment]
    path = left_value + (values[bar, np.minimum(segment + 1, 3)] - left_value) * fraction
    walk = np.cumsum(rng.standard_normal(len(bar)))
    left_walk = walk[starts[bar] + left]
    bridge = (walk - left_walk) - fraction * (walk[starts[bar] + right] - left_walk)
    path += bridge * ((high - low)[bar] * NOISE_SCALE / np.sqrt(span))
    del segment, left, right, fraction, left_value, walk, left_walk, bridge, span

    bar_high, bar_low = high[bar], low[bar]
    path = np.where(path > bar_high, 2 * bar_high - path, path)
    path = np.where(path < bar_low, 2 * bar_low - path, path)
    path = np.clip(np.rint(np.clip(path, bar_low, bar_high) * scale) / scale, bar_low, bar_high)

    path[starts] = open_
    path[starts + early] = np.where(high_first, high, low)
    path[starts + late] = np.where(high_first, low, high)
    path[starts + last] = close
    for index in np.flatnonzero(count < 4).tolist():  # rare: tiny bars get an explicit path
        o, h, lo, c = open_[index], high[index], low[index], close[index]
        middle = h if h not in (o, c) else lo if lo not in (o, c) else o
        explicit = {1: [o], 2: [o, c], 3: [o, middle, c]}[int(count[index])]
        path[starts[index] : starts[index] + count[index]] = explicit
    return path


def _quantities(
    units: np.ndarray,
    count: np.ndarray,
    starts: np.ndarray,
    bar: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sizes in 1e-8 units, >= 1 each, summing exactly to each bar's units (cumulative split)."""
    weights = rng.lognormal(0.0, SIZE_SIGMA, len(bar))
    cumulative = np.cumsum(weights)
    base = np.concatenate([[0.0], cumulative])[starts]
    bar_total = cumulative[starts + count - 1] - base
    within = cumulative - base[bar]
    spare = units - count
    shares = np.floor(within / bar_total[bar] * spare[bar]).astype(np.int64)
    shares[starts + count - 1] = spare  # the cumulative share of a whole bar is all of it
    previous = np.empty_like(shares)
    previous[0] = 0
    previous[1:] = shares[:-1]
    previous[starts] = 0
    qty_units = 1 + shares - previous
    return qty_units / QTY_UNITS_PER_COIN


def _times(
    ts_open: np.ndarray,
    ts_close: np.ndarray,
    count: np.ndarray,
    starts: np.ndarray,
    bar: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Non-decreasing times in [ts_open, ts_close) from exponential gaps."""
    gaps = rng.exponential(1.0, len(bar))
    cumulative = np.cumsum(gaps)
    base = np.concatenate([[0.0], cumulative])[starts]
    within = cumulative - base[bar]
    # One more gap after the last trade keeps every fraction below 1.
    total = cumulative[starts + count - 1] - base + rng.exponential(1.0, len(count))
    duration = ts_close - ts_open
    offset = np.floor(within / total[bar] * duration[bar]).astype(np.int64)
    return ts_open[bar] + np.minimum(offset, duration[bar] - 1)


def synth_from_bars(
    bars_csv: Path,
    out: Path,
    *,
    symbol: str = "BTCUSDT",
    minutes: int | None = None,
    seed: int = 0,
    start_minute: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a synthetic trade tape from a 1-minute kline CSV and return a summary.

    Bars `start_minute .. start_minute + minutes` (default: all, which for the bundled BTCUSDT
    month is about 185 million trades) are generated and written a day (`BLOCK_MINUTES` bars) at
    a time, each block seeded by (seed, its first minute), so a block equals
    `synthesize_trades(klines, seed=seed, start_minute=block_start, minutes=...)` of the same
    bars with ids continuing across blocks.
    """
    from storage.klines import read_klines_csv
    from storage.tape import TapeWriter

    bars_csv = Path(bars_csv)
    klines = read_klines_csv(bars_csv)
    stop = len(klines) if minutes is None else start_minute + minutes
    _select_bars(klines, start_minute, minutes)  # range check before creating anything
    summary: dict[str, Any] = {
        "path": str(out),
        "symbol": symbol,
        "source_csv": bars_csv.name,
        "seed": seed,
        "start_minute": start_minute,
        "minutes": stop - start_minute,
        "bars": stop - start_minute,
        "trades": 0,
        "first_ts": None,
        "last_ts": None,
        "first_trade_id": 1,
        "last_trade_id": 0,
    }
    metadata = {
        key: summary[key] for key in ("source_csv", "seed", "start_minute", "minutes", "bars")
    }
    metadata["generator"] = "engine.synth"
    with TapeWriter(
        out, synthetic=True, source=bars_csv.name, extra_metadata=metadata, overwrite=overwrite
    ) as writer:
        next_id = 1
        for sequence, block_start in enumerate(range(start_minute, stop, BLOCK_MINUTES)):
            block = min(BLOCK_MINUTES, stop - block_start)
            trades = synthesize_trades(
                klines, seed=seed, minutes=block, start_minute=block_start, first_trade_id=next_id
            )
            writer.write_chunk(MarketChunk(symbol=symbol, sequence=sequence, trades=trades))
            next_id += len(trades)
            if summary["first_ts"] is None and len(trades):
                summary["first_ts"] = int(trades.ts_event[0])
            if len(trades):
                summary["last_ts"] = int(trades.ts_event[-1])
        summary["trades"] = next_id - 1
        summary["last_trade_id"] = next_id - 1
        writer.extra_metadata["trades"] = next_id - 1
    return summary
