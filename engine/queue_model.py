"""Resting limit orders of the paper matcher: where they queue and when the queue lets them fill.

A limit order (`PaperMatcher.submit_limit`) reaches the venue after the feed and order latencies
(`engine.matching`). At arrival the book is the last depth sample at or before it (else the last
quote, as a one-level book; with neither there is no book):
- the part of the order that crosses the book (a buy priced at or above asks) takes those levels
  at once, as a taker, at their prices (VWAP), at the arrival time; reference = the sample's mid;
- the rest joins the queue at its price behind the visible size there (`queue_ahead`, 0 when no
  visible level has that price, when the price is deeper than the visible levels, or without a
  book: an unknown queue is taken as empty, which is optimistic for deep orders).

Then, in event time (`match_order`, vectorised over the trades between two book samples):
- a trade at the order's price whose aggressor is on the other side (a seller for a resting buy)
  consumes the queue ahead first; what it trades beyond the queue fills the order (possibly in
  part), as a maker, at the limit price;
- a trade through the price (below a buy's price, above a sell's, any aggressor) fills what is
  left of the order at the limit price, as a maker;
- cancellations: at each new book sample the visible size at the price (`level_size`, tracked
  net of the trades that consumed it) is compared with the new size L'. A decrease not explained
  by trades is taken as cancellations spread evenly over the level, so the queue ahead shrinks in
  proportion: queue_ahead x L' / level_size. An increase joins behind the order. Our own paper
  order is not in the recorded book, so visible sizes exclude it.
- a cancel (`PaperMatcher.cancel`) takes effect at its arrival: trades before it still fill.
- an amend of the price (`PaperMatcher.amend`) takes effect at its arrival too: until then the
  old price works; then the order joins anew at the new price, behind the level (it loses its
  place, as a venue's price modify does). An order that filled before the amend arrived keeps
  its fills; the amend finds nothing to change.

Maker fills have the limit price as reference (slippage 0). A trade is a price observation: two
paper orders at one price each see the full trade. Everything is a pure function of the order's
state and the batch's columns, so replays are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.batches import DepthSamples, QuoteColumns, TradeColumns
from engine.orders import ManagedOrder
from engine.types import OrderIntent

_PRICE_TOLERANCE = 1e-9  # relative: two prices this close are the same tick
_EPSILON = 1e-12
_NO_TIME = -(2**63)


@dataclass
class RestingOrder:
    """A limit order: in flight until `arrival_ts`, then working at `limit_price`."""

    order_id: str
    intent: OrderIntent
    side: int
    quantity: float
    limit_price: float
    ts_submitted: int
    arrival_ts: int
    latency_ms: float
    managed: ManagedOrder  # the lifecycle (engine.orders): states, fills by id, overfill guard
    rows_emitted: int = 0  # history records of `managed` already journaled
    filled: float = 0.0
    cancel_at: int | None = None  # when the cancel reaches the venue
    amend_at: int | None = None  # when a price amend reaches the venue
    amend_price: float = math.nan
    joined: bool = False  # arrived and queued
    queue_ahead: float = 0.0
    level_size: float = 0.0
    processed_ts: int = _NO_TIME  # events before this time are matched
    last_sample_ts: int = _NO_TIME  # the last book sample applied


@dataclass(frozen=True)
class LimitExecution:
    ts_event: int
    quantity: float
    price: float
    reference_price: float
    liquidity: str  # "maker" or "taker"


@dataclass
class MatchOutcome:
    """What one `match_order` call found: executions, and whether the order left the book."""

    executions: list[LimitExecution] = field(default_factory=list)
    done_state: str | None = None  # "filled" or "canceled"
    done_ts: int = 0
    reason: str = ""


def sample_times(depth: DepthSamples | None, quotes: QuoteColumns | None) -> np.ndarray:
    """Times of the book samples the matcher uses: depth samples, else quotes."""
    if depth is not None and len(depth):
        return np.asarray(depth.ts_event)
    if quotes is not None and len(quotes):
        return np.asarray(quotes.ts_event)
    return np.empty(0, np.int64)


def book_side(depth: DepthSamples, sample: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid (price, size) levels, best first, of one side (+1 bids, -1 asks) of a sample."""
    prices = np.asarray(depth.bid_price[sample] if side > 0 else depth.ask_price[sample])
    sizes = np.asarray(depth.bid_qty[sample] if side > 0 else depth.ask_qty[sample])
    valid = np.isfinite(prices) & np.isfinite(sizes) & (prices > 0) & (sizes > 0)
    return prices[valid], sizes[valid]


def _levels(
    depth: DepthSamples | None, quotes: QuoteColumns | None, sample: int, side: int
) -> tuple[np.ndarray, np.ndarray]:
    if depth is not None and len(depth):
        return book_side(depth, sample, side)
    assert quotes is not None
    price = float(quotes.bid_price[sample] if side > 0 else quotes.ask_price[sample])
    size = float(quotes.bid_qty[sample] if side > 0 else quotes.ask_qty[sample])
    if math.isfinite(price) and math.isfinite(size) and price > 0 and size > 0:
        return np.asarray([price]), np.asarray([size])
    return np.empty(0), np.empty(0)


def _size_at(prices: np.ndarray, sizes: np.ndarray, price: float) -> float:
    same = np.abs(prices - price) <= _PRICE_TOLERANCE * price
    return float(sizes[same].sum())


def _mid(depth: DepthSamples | None, quotes: QuoteColumns | None, sample: int) -> float:
    bids, _ = _levels(depth, quotes, sample, 1)
    asks, _ = _levels(depth, quotes, sample, -1)
    if len(bids) and len(asks) and bids[0] <= asks[0]:
        return float(bids[0] + asks[0]) / 2
    return math.nan


def _join(
    order: RestingOrder,
    remaining: float,
    depth: DepthSamples | None,
    quotes: QuoteColumns | None,
    times: np.ndarray,
    outcome: MatchOutcome,
) -> float:
    """Arrival: take what crosses (taker), queue the rest; returns what is left."""
    order.joined = True
    order.processed_ts = order.arrival_ts
    sample = int(np.searchsorted(times, order.arrival_ts, "right")) - 1
    if sample < 0:
        return remaining  # no book yet: an empty queue
    order.last_sample_ts = int(times[sample])
    price = order.limit_price
    prices, sizes = _levels(depth, quotes, sample, -order.side)
    crossing = prices <= price * (1 + _PRICE_TOLERANCE) if order.side > 0 else (
        prices >= price * (1 - _PRICE_TOLERANCE)
    )
    prices, sizes = prices[crossing], sizes[crossing]
    if len(prices):
        before = np.cumsum(sizes) - sizes
        taken = np.clip(remaining - before, 0.0, sizes)
        quantity = float(taken.sum())
        vwap = float((taken * prices).sum()) / quantity
        outcome.executions.append(
            LimitExecution(
                order.arrival_ts, quantity, vwap, _mid(depth, quotes, sample), "taker"
            )
        )
        remaining -= quantity
        order.queue_ahead = order.level_size = 0.0  # the level is ours now
        return remaining
    own_prices, own_sizes = _levels(depth, quotes, sample, order.side)
    order.level_size = _size_at(own_prices, own_sizes, price)
    order.queue_ahead = order.level_size
    return remaining


def _apply_sample(
    order: RestingOrder, depth: DepthSamples | None, quotes: QuoteColumns | None, sample: int
) -> None:
    """Proportional cancellation: the queue ahead shrinks with unexplained level decreases."""
    prices, sizes = _levels(depth, quotes, sample, order.side)
    visible = _size_at(prices, sizes, order.limit_price)
    if visible < order.level_size and order.level_size > 0:
        order.queue_ahead *= visible / order.level_size
    order.level_size = visible


def _match_trades(
    order: RestingOrder, trades: TradeColumns, lo: int, hi: int, remaining: float,
    outcome: MatchOutcome,
) -> float:
    """Trades [lo, hi) against the order's queue (vectorised); returns what is left."""
    if hi <= lo or remaining <= 0:
        return remaining
    price = order.limit_price
    prices = trades.price[lo:hi]
    tolerance = _PRICE_TOLERANCE * price
    at_price = (np.abs(prices - price) <= tolerance) & (trades.side[lo:hi] == -order.side)
    through = prices < price - tolerance if order.side > 0 else prices > price + tolerance
    through_at = np.flatnonzero(through)
    end = int(through_at[0]) if len(through_at) else hi - lo
    consumed = np.cumsum(np.where(at_price[:end], trades.qty[lo : lo + end], 0.0))
    ours = np.clip(consumed - order.queue_ahead, 0.0, remaining)
    increments = np.diff(ours, prepend=0.0)
    for offset in np.flatnonzero(increments > 0):
        outcome.executions.append(
            LimitExecution(
                int(trades.ts_event[lo + offset]), float(increments[offset]), price, price,
                "maker",
            )
        )
    if len(consumed):
        remaining -= float(ours[-1])
        order.queue_ahead = max(0.0, order.queue_ahead - float(consumed[-1]))
        order.level_size = max(0.0, order.level_size - float(consumed[-1]))
    if len(through_at) and remaining > _EPSILON * max(1.0, order.quantity):
        ts_through = int(trades.ts_event[lo + end])
        outcome.executions.append(LimitExecution(ts_through, remaining, price, price, "maker"))
        remaining = 0.0
    return remaining


def match_order(
    order: RestingOrder,
    trades: TradeColumns,
    until: int,
    depth: DepthSamples | None,
    quotes: QuoteColumns | None,
    already: float = 0.0,
) -> MatchOutcome:
    """Advance one order through the events with ts_event < `until` (see module docstring).

    Updates the order's queue state and `processed_ts`; the caller adds the executions to
    `filled` and removes the order when `done_state` is set. `already`: executions found by
    this call's earlier part (before an amend), not yet in `filled`.
    """
    amend_at = order.amend_at
    if amend_at is not None and amend_at < until and (
            order.cancel_at is None or amend_at < order.cancel_at):
        before = match_order(order, trades, amend_at, depth, quotes, already)
        order.amend_at = None
        if before.done_state is not None:
            return before  # filled before the amend arrived
        order.limit_price, order.arrival_ts, order.joined = order.amend_price, amend_at, False
        done = already + sum(execution.quantity for execution in before.executions)
        after = match_order(order, trades, until, depth, quotes, done)
        after.executions[:0] = before.executions
        return after
    outcome = MatchOutcome()
    end = until if order.cancel_at is None else min(until, order.cancel_at)
    if order.arrival_ts >= until:
        return outcome
    times = sample_times(depth, quotes)
    remaining = order.quantity - order.filled - already
    if not order.joined:
        remaining = _join(order, remaining, depth, quotes, times, outcome)
    ts = trades.ts_event
    first = int(np.searchsorted(times, order.last_sample_ts, "right"))
    last = int(np.searchsorted(times, end, "left"))
    lo = int(np.searchsorted(ts, order.processed_ts, "left"))
    for sample in range(first, last + 1):
        boundary = end if sample == last else int(times[sample])
        hi = int(np.searchsorted(ts, boundary, "left"))
        remaining = _match_trades(order, trades, lo, hi, remaining, outcome)
        lo = max(lo, hi)
        if remaining <= _EPSILON * max(1.0, order.quantity):
            break
        if sample < last:
            _apply_sample(order, depth, quotes, sample)
            order.last_sample_ts = int(times[sample])
    order.processed_ts = max(order.processed_ts, end)
    if remaining <= _EPSILON * max(1.0, order.quantity):
        outcome.done_state = "filled"
        outcome.done_ts = outcome.executions[-1].ts_event
    elif order.cancel_at is not None and order.cancel_at < until:
        outcome.done_state, outcome.done_ts, outcome.reason = "canceled", order.cancel_at, ""
    return outcome
