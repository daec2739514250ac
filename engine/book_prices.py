"""Prices of market executions from a book sample, a quote or a trade (see `engine.matching`).

`walk_depth` walks one side of the last depth sample at or before a time (VWAP of the levels
consumed); `from_quote` takes the touch; both add the impact term where the model says so and,
with `partial`, report how much the book offered instead of pricing an overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.batches import DepthSamples, QuoteColumns
from engine.queue_model import book_side


@dataclass(frozen=True)
class Execution:
    """Price of a simulated execution and what it was measured against. `quantity` is what the
    book offered (NaN: everything asked); `sample_ts` the book sample walked, if any."""

    price: float
    reference_price: float
    model: str  # "depth", "quote" or "seed"
    quantity: float = math.nan
    sample_ts: int | None = None


def slippage_bps(side: int, price: float, reference: float) -> float:
    """Cost against the reference in bps; positive when the fill is worse than the reference."""
    if not (math.isfinite(reference) and reference > 0):
        return math.nan
    return side * (price - reference) / reference * 1e4


def window_sum(ts: np.ndarray, qty: np.ndarray, low: int, high: int) -> float:
    start = int(np.searchsorted(ts, low, "left"))
    stop = int(np.searchsorted(ts, high, "left"))
    return float(qty[start:stop].sum()) if stop > start else 0.0


def walk_depth(
    side: int,
    quantity: float,
    arrival_ts: int,
    depth: DepthSamples,
    impact_bps: float,
    partial: bool = False,
) -> Execution | None:
    sample = int(np.searchsorted(depth.ts_event, arrival_ts, "right")) - 1
    if sample < 0:
        return None
    prices, sizes = book_side(depth, sample, -side)
    if not len(prices):
        return None
    before = np.cumsum(sizes) - sizes
    taken = np.clip(quantity - before, 0.0, sizes)
    cost = float((taken * prices).sum())
    filled = float(taken.sum())
    remaining = quantity - filled
    offered = math.nan
    if remaining > 0 and not partial:
        cost += remaining * float(prices[-1]) * (1 + side * impact_bps / 1e4)
        filled = quantity
    elif partial:
        offered = filled
    best_bid = float(depth.bid_price[sample][0])
    best_ask = float(depth.ask_price[sample][0])
    if math.isfinite(best_bid) and math.isfinite(best_ask) and 0 < best_bid <= best_ask:
        reference = (best_bid + best_ask) / 2
    else:
        reference = float(prices[0])
    sample_ts = int(depth.ts_event[sample])
    return Execution(cost / filled, reference, "depth", offered, sample_ts)


def from_quote(
    side: int,
    arrival_ts: int,
    quotes: QuoteColumns,
    impact_bps: float,
    partial: bool = False,
) -> Execution | None:
    row = int(np.searchsorted(quotes.ts_event, arrival_ts, "right")) - 1
    if row < 0:
        return None
    bid = float(quotes.bid_price[row])
    ask = float(quotes.ask_price[row])
    if not (math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask):
        return None
    touch = ask if side > 0 else bid
    offered = math.nan
    if partial:
        size = float(quotes.ask_qty[row] if side > 0 else quotes.bid_qty[row])
        if not (math.isfinite(size) and size > 0):
            return None
        offered = size
    price = touch * (1 + side * impact_bps / 1e4)
    return Execution(price, (bid + ask) / 2, "quote", offered, int(quotes.ts_event[row]))
