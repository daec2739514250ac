"""Paper matching: a pure, seeded simulator of market-order execution for one symbol.

Latencies. Event time T of a decision is the time of the market data it used (a bar close, a
trade). Two delays follow it:
- `feed_latency_ms` (constant): the data of time T reached the strategy that much later, so the
  order (or cancel) leaves at T + feed latency. Decisions therefore act on data that is feed
  latency old at sending time; equivalently, the order's arrival is shifted by it.
- `order_latency_ms` plus uniform jitter in +-`order_latency_jitter_ms` (drawn from a NumPy
  Generator seeded with (config seed, crc32(symbol)), floored at zero): the trip of the order or
  cancel to the venue. Arrival = T + feed latency + order latency. Orders and cancels travel one
  connection, so they arrive in the order they were sent (never overtaking an earlier one).
`Fill.latency_ms` is arrival - T (both delays).

Market orders. `submit` records an order decided at T ("new" at T). It fills at the first trade
with ts_event >= arrival ("accepted" at the arrival time, "filled" at that trade's time); if the
batch ends first it waits for the next batch. Several orders may fill against the same trade (it
is a price observation, not consumed liquidity). Every state change is a row of the `orders`
table keyed "{order_id}:{state_seq}".

Partial fills (`market_remainder`). With "impact" (the default) the whole quantity fills at once,
a book that runs out pricing the rest at its last level moved by the impact term (below). With
"next_sample" or "cancel" only what the visible book offers fills ("partially_filled"): the book
is the depth sample (else the quote, one level) at or before the time the order became ready.
"cancel" then cancels the rest (IOC); "next_sample" keeps it in flight: it becomes ready again at
the next book sample (the refill rule: each new sample is the venue's book again, so its levels
are available afresh) and fills at the first trade at or after it, until
`market_remainder_timeout_ms` after arrival, when the rest is cancelled at the first trade at or
after that deadline. Without book or quote (seed model) there are no sizes and the order fills
whole. Each partial is its own Fill with the flow's next sequence (fill id "{symbol}:f{seq}").

Limit orders (`submit_limit`, `cancel`, `match_resting`): see `engine.queue_model`.

Price, in order of preference:
1. depth samples: walk the last sample at or before arrival (asks for buys, bids for sells) for the
   quantity; the price is the VWAP of the levels consumed; if the book runs out, the rest fills at
   the last level moved by the impact term; reference = the sample's mid;
2. quotes: the last quote at or before arrival, ask for buys / bid for sells, moved by the impact
   term; reference = the quote's mid;
3. the seed model: the price of the trade the order fills against, moved by half of
   `default_spread_bps` plus the impact term; reference = that trade's price.

The impact term, in bps, is `impact_bps_per_unit_participation x quantity / V`, where V is the
summed quantity of this symbol's trades in the 60 s before arrival (the matcher keeps the last 60 s
of the previous batch for this); when V is zero the quantity of the trade filled against is used.
Buys pay more, sells receive less. Market orders pay the taker fee on notional, resting limit
orders the maker fee. `slippage_bps` is the cost against the reference, positive when the fill is
worse than the reference.

Order states. Limit orders live in an `engine.orders.ManagedOrder` (new, submitted, accepted,
partially_filled, filled, cancel_requested, canceled; fills applied by fill id, an overfill
raises): its history is their `orders` rows. Market orders keep the matcher's own rows (new,
accepted, partially_filled, filled, canceled, rejected: the same state names), as before.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.batches import DepthSamples, QuoteColumns, TradeColumns
from engine.book_prices import Execution, from_quote, slippage_bps, walk_depth, window_sum
from engine.config import SimulationConfig
from engine.orders import ManagedOrder, OrderFill, OrderState
from engine.queue_model import RestingOrder, match_order, sample_times
from engine.timeframes import NS_PER_MINUTE
from engine.types import Fill, OrderIntent

PARTICIPATION_WINDOW_NS = NS_PER_MINUTE
_NS_PER_MS = 1_000_000
_EPSILON = 1e-12

__all__ = ["Execution", "PaperMatcher", "PaperOrder", "rng_for", "slippage_bps"]


@dataclass
class PaperOrder:
    """A market order in flight. `filled` grows with partial fills; `ready_ts` is when it may
    fill next (None: at the book sample after `consumed_sample_ts`)."""

    order_id: str
    intent: OrderIntent
    side: int
    quantity: float
    ts_submitted: int
    arrival_ts: int
    latency_ms: float
    state_seq: int = 0
    filled: float = 0.0
    ready_ts: int | None = None
    consumed_sample_ts: int | None = None
    accepted: bool = False

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled


def rng_for(symbol: str, seed: int) -> np.random.Generator:
    """The symbol's deterministic generator: seeded from the config seed and crc32(symbol)."""
    return np.random.default_rng([seed % 2**64, zlib.crc32(symbol.encode())])


@dataclass
class _Connection:
    """The one order connection: the last arrival time, so nothing overtakes."""

    last_arrival: int = -(2**63)


class PaperMatcher:
    """Latency, fees, slippage and partial fills for one symbol's market and limit orders;
    deterministic and picklable."""

    def __init__(self, symbol: str, config: SimulationConfig) -> None:
        self.symbol = symbol
        self.config = config
        self._rng = rng_for(symbol, config.seed)
        self.pending: deque[PaperOrder] = deque()
        self.resting: dict[str, RestingOrder] = {}
        self._connection = _Connection()
        self._tail_ts = np.empty(0, np.int64)
        self._tail_qty = np.empty(0, np.float64)
        self._rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ latency

    def _arrival(self, ts_event: int) -> int:
        """Arrival at the venue of an order or cancel decided at `ts_event` (module docstring)."""
        jitter = self.config.order_latency_jitter_ms
        draw = float(self._rng.uniform(-jitter, jitter)) if jitter > 0 else 0.0
        latency_ms = max(0.0, self.config.order_latency_ms + draw) + self.config.feed_latency_ms
        arrival = max(ts_event + round(latency_ms * _NS_PER_MS), self._connection.last_arrival)
        self._connection.last_arrival = arrival
        return arrival

    # ------------------------------------------------------------------ market orders

    def submit(self, intent: OrderIntent, quantity: float, ts_event: int,
               order_id: str | None = None) -> PaperOrder:
        """Send a market order for an approved intent; it arrives after the simulated latency.
        `order_id` names a second order of the intent (default: the intent's order id)."""
        arrival = self._arrival(ts_event)
        order = PaperOrder(
            order_id or intent.order_id,
            intent,
            intent.side,
            quantity,
            ts_event,
            arrival,
            (arrival - ts_event) / _NS_PER_MS,
            ready_ts=arrival,
        )
        self.pending.append(order)
        self._row(order, ts_event, "new", intent.reason)
        return order

    def pending_quantity(self) -> float:
        """Signed quantity of the market orders in flight (what is left of them)."""
        return sum(order.side * order.remaining for order in self.pending)

    def is_pending(self, order_id: str) -> bool:
        """The market order is still in flight (not filled, rejected or cancelled)."""
        return any(order.order_id == order_id for order in self.pending)

    def next_fill_index(
        self,
        trades: TradeColumns,
        start: int,
        depth: DepthSamples | None = None,
        quotes: QuoteColumns | None = None,
    ) -> int | None:
        """Index of the trade (at or after `start`) the first order in flight fills (or, for a
        remainder past its deadline, is cancelled) at. A remainder waiting for the next book
        sample needs the batch's `depth`/`quotes` to find it."""
        if not self.pending:
            return None
        order = self.pending[0]
        ready = order.ready_ts
        if ready is None:
            next_sample = _next_sample_ts(order, depth, quotes)
            deadline = self._deadline(order)
            ready = deadline if next_sample is None else min(next_sample, deadline)
        index = int(np.searchsorted(trades.ts_event, ready, "left"))
        index = max(index, start)
        return index if index < len(trades) else None

    def fill_next(
        self,
        trades: TradeColumns,
        index: int,
        sequence: int,
        quotes: QuoteColumns | None = None,
        depth: DepthSamples | None = None,
    ) -> Fill | None:
        """Fill the first order in flight against trade `index`, wholly or in part (see the
        module docstring); None if it was rejected (no finite price: fail closed) or its
        remainder was cancelled at the timeout."""
        order = self.pending[0]
        ts_fill = int(trades.ts_event[index])
        if not order.accepted:
            order.accepted = True
            self._row(order, order.arrival_ts, "accepted", "")
        policy = self.config.market_remainder
        if order.ready_ts is None:
            next_sample = _next_sample_ts(order, depth, quotes)
            if ts_fill >= self._deadline(order) or next_sample is None or next_sample > ts_fill:
                self.pending.popleft()
                self._row(order, ts_fill, "canceled", "remainder timeout", filled=order.filled)
                return None
            order.ready_ts = next_sample
        book_ts = order.ready_ts
        assert book_ts is not None
        execution = self.execution(
            order.side, order.remaining, book_ts, trades, index, quotes, depth,
            partial=policy != "impact",
        )
        if not (math.isfinite(execution.price) and execution.price > 0):
            self.pending.popleft()
            self._row(order, ts_fill, "rejected", "no finite execution price", filled=order.filled)
            return None
        quantity = order.remaining
        if math.isfinite(execution.quantity):
            quantity = min(quantity, execution.quantity)
        order.filled += quantity
        done = order.remaining <= _EPSILON * max(1.0, order.quantity)
        if done:
            self.pending.popleft()
            self._row(order, ts_fill, "filled", execution.model, execution.price, order.filled)
        else:
            self._row(
                order, ts_fill, "partially_filled", execution.model, execution.price, order.filled
            )
            if policy == "cancel":
                self.pending.popleft()
                self._row(order, ts_fill, "canceled", "book exhausted (ioc)", filled=order.filled)
            else:
                order.ready_ts = None
                order.consumed_sample_ts = execution.sample_ts
        return self._fill(
            order.order_id, order.side, quantity, execution.price, execution.reference_price,
            ts_fill, sequence, "taker", order.latency_ms,
        )

    def _deadline(self, order: PaperOrder) -> int:
        """'next_sample': when the rest of a market order is given up."""
        return order.arrival_ts + round(self.config.market_remainder_timeout_ms * _NS_PER_MS)

    def _fill(
        self,
        order_id: str,
        side: int,
        quantity: float,
        price: float,
        reference: float,
        ts_event: int,
        sequence: int,
        liquidity: str,
        latency_ms: float,
    ) -> Fill:
        fee_bps = self.config.maker_fee_bps if liquidity == "maker" else self.config.taker_fee_bps
        return Fill(
            fill_id=f"{self.symbol}:f{sequence}",
            order_id=order_id,
            symbol=self.symbol,
            ts_event=ts_event,
            sequence=sequence,
            side=side,
            quantity=quantity,
            price=price,
            reference_price=reference,
            fee=quantity * price * fee_bps / 1e4,
            liquidity=liquidity,
            slippage_bps=slippage_bps(side, price, reference),
            latency_ms=latency_ms,
        )

    # ------------------------------------------------------------------ limit orders

    def submit_limit(
        self, intent: OrderIntent, quantity: float, price: float, ts_event: int
    ) -> RestingOrder:
        """Send a limit order; it joins the queue at its price on arrival (`engine.queue_model`).
        Fails closed on a non-finite or non-positive price or quantity."""
        if not (math.isfinite(price) and price > 0 and math.isfinite(quantity) and quantity > 0):
            raise ValueError(
                f"{intent.order_id}: limit price and quantity must be finite and > 0, "
                f"got {price!r} x {quantity!r}"
            )
        arrival = self._arrival(ts_event)
        managed = ManagedOrder(
            client_order_id=f"ats-{intent.order_id}", symbol=self.symbol, side=intent.side,
            order_type="limit", quantity=quantity, price=price, reduce_only=intent.reduce_only,
            order_id=intent.order_id, intent_id=intent.intent_id, ts_created=ts_event,
        )
        managed.transition(OrderState.SUBMITTED, ts_event, intent.reason)
        order = RestingOrder(
            intent.order_id, intent, intent.side, quantity, price, ts_event, arrival,
            (arrival - ts_event) / _NS_PER_MS, managed,
        )
        self.resting[order.order_id] = order
        self._limit_rows(order)
        return order

    def cancel(self, order_id: str, ts_event: int) -> bool:
        """Ask to cancel a working limit order; the cancel reaches the venue after the same
        latencies as an order, and fills before that still happen. False if there is no such
        open limit order or a cancel is already on its way."""
        order = self.resting.get(order_id)
        if order is None or order.cancel_at is not None:
            return False
        if ts_event >= order.arrival_ts:
            self._accept(order)  # it has reached the venue before the cancel was sent
        order.cancel_at = self._arrival(ts_event)
        order.managed.transition(OrderState.CANCEL_REQUESTED, ts_event, "cancel sent")
        self._limit_rows(order)
        return True

    def amend(self, order_id: str, price: float, ts_event: int, reason: str) -> bool:
        """Ask to move a working limit order to `price`; it takes effect at its arrival
        (`engine.queue_model`). False if there is no such open order, or a cancel or another
        amend is already on its way."""
        order = self.resting.get(order_id)
        if order is None or order.cancel_at is not None or order.amend_at is not None:
            return False
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"{order_id}: amend price must be finite and > 0, got {price!r}")
        if ts_event >= order.arrival_ts:
            self._accept(order)
        if order.managed.state not in (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED):
            return False  # still on its way to the venue
        order.amend_at, order.amend_price = self._arrival(ts_event), price
        order.managed.reprice(price, ts_event, reason)
        self._limit_rows(order)
        return True

    def match_resting(
        self,
        trades: TradeColumns,
        next_sequence: Callable[[], int],
        until: int | None = None,
        depth: DepthSamples | None = None,
        quotes: QuoteColumns | None = None,
    ) -> list[Fill]:
        """Match the resting limit orders against the batch's trades and book samples with
        ts_event < `until` (default: just after the last trade); each order remembers how far
        it got, so calls may advance `until` step by step and across batches. Returns the fills
        in (time, order sent) order; sequences are drawn from `next_sequence` in that order, so
        fill ids are deterministic."""
        if until is None:
            until = int(trades.ts_event[-1]) + 1 if len(trades) else -(2**63)
        events: list[tuple[int, int, int, Any]] = []
        for rank, order in enumerate(list(self.resting.values())):
            outcome = match_order(order, trades, until, depth, quotes)
            if order.joined:
                self._accept(order)
            for number, execution in enumerate(outcome.executions):
                events.append((execution.ts_event, rank, number, (order, execution)))
            if outcome.done_state is not None:
                events.append((outcome.done_ts, rank, 1 << 30, (order, outcome)))
        fills: list[Fill] = []
        for _, _, number, (order, item) in sorted(events, key=lambda event: event[:3]):
            if number == 1 << 30:
                del self.resting[order.order_id]
                if item.done_state == "canceled":
                    order.managed.transition(OrderState.CANCELED, item.done_ts, "cancel arrived")
                self._limit_rows(order)
                continue
            fill = self._fill(
                order.order_id, order.side, item.quantity, item.price, item.reference_price,
                item.ts_event, next_sequence(), item.liquidity, order.latency_ms,
            )
            # Raises OverFill rather than ever filling more than the order (fail closed).
            order.managed.apply_fill(
                OrderFill(fill.fill_id, fill.quantity, fill.price, fill.fee, fill.ts_event,
                          fill.liquidity)
            )
            order.filled = order.managed.filled_quantity
            fills.append(fill)
        for order in self.resting.values():
            self._limit_rows(order)
        return fills

    def end_batch(self, trades: TradeColumns) -> None:
        """Keep the last minute of trades for the next batch's participation window."""
        if not len(trades):
            return
        ts = np.concatenate([self._tail_ts, trades.ts_event])
        qty = np.concatenate([self._tail_qty, trades.qty])
        start = int(np.searchsorted(ts, ts[-1] - PARTICIPATION_WINDOW_NS, "left"))
        self._tail_ts, self._tail_qty = ts[start:].copy(), qty[start:].copy()

    def drain_rows(self) -> list[dict[str, Any]]:
        rows, self._rows = self._rows, []
        return rows

    # ------------------------------------------------------------------ prices

    def estimate_slippage_bps(
        self,
        side: int,
        quantity: float,
        ts_event: int,
        trades: TradeColumns,
        quotes: QuoteColumns | None = None,
        depth: DepthSamples | None = None,
    ) -> float:
        """Slippage the model expects for an order executed at `ts_event` (no latency)."""
        if not len(trades) or not (math.isfinite(quantity) and quantity > 0):
            return math.nan
        index = max(0, int(np.searchsorted(trades.ts_event, ts_event, "right")) - 1)
        execution = self.execution(side, quantity, ts_event, trades, index, quotes, depth)
        return slippage_bps(side, execution.price, execution.reference_price)

    def impact_bps(
        self, quantity: float, arrival_ts: int, trades: TradeColumns, index: int
    ) -> float:
        """The impact term: bps per unit participation x quantity / last-60-s traded quantity."""
        low = arrival_ts - PARTICIPATION_WINDOW_NS
        volume = window_sum(trades.ts_event, trades.qty, low, arrival_ts)
        volume += window_sum(self._tail_ts, self._tail_qty, low, arrival_ts)
        if not volume > 0:
            volume = float(trades.qty[index]) if len(trades) else 0.0
        participation = quantity / volume if volume > 0 else 1.0
        return self.config.impact_bps_per_unit_participation * participation

    def execution(
        self,
        side: int,
        quantity: float,
        arrival_ts: int,
        trades: TradeColumns,
        index: int,
        quotes: QuoteColumns | None,
        depth: DepthSamples | None,
        partial: bool = False,
    ) -> Execution:
        """Price of `quantity` at `arrival_ts`; with `partial`, only what the book offers (its
        `quantity`) and no impact-priced overflow."""
        impact = self.impact_bps(quantity, arrival_ts, trades, index)
        if depth is not None and len(depth):
            walked = walk_depth(side, quantity, arrival_ts, depth, impact, partial)
            if walked is not None:
                return walked
        if quotes is not None and len(quotes):
            quoted = from_quote(side, arrival_ts, quotes, impact, partial)
            if quoted is not None:
                return quoted
        trade_price = float(trades.price[index])
        half_spread = self.config.default_spread_bps / 2
        price = trade_price * (1 + side * (half_spread + impact) / 1e4)
        return Execution(price, trade_price, "seed")

    # ------------------------------------------------------------------ journal

    def _row(
        self,
        order: PaperOrder,
        ts_event: int,
        state: str,
        reason: str,
        price: float = math.nan,
        filled: float = 0.0,
    ) -> None:
        self._rows.append(
            _order_row(self.symbol, order.order_id, order.intent, order.side, "market",
                       order.quantity, order.state_seq, ts_event, state, reason, price, filled)
        )
        order.state_seq += 1

    @staticmethod
    def _accept(order: RestingOrder) -> None:
        """Record the venue's acceptance at arrival, once."""
        if order.managed.state == OrderState.SUBMITTED:
            order.managed.venue_order_id = f"paper-{order.order_id}"
            order.managed.transition(OrderState.ACCEPTED, order.arrival_ts, "queued")

    def _limit_rows(self, order: RestingOrder) -> None:
        """The limit order's new lifecycle records as `orders` rows."""
        self._rows.extend(order.managed.journal_rows(order.rows_emitted))
        order.rows_emitted = len(order.managed.history)


def _order_row(
    symbol: str,
    order_id: str,
    intent: OrderIntent,
    side: int,
    order_type: str,
    quantity: float,
    state_seq: int,
    ts_event: int,
    state: str,
    reason: str,
    price: float,
    filled_qty: float,
) -> dict[str, Any]:
    return {
        "key": f"{order_id}:{state_seq}",
        "ts_event": ts_event,
        "symbol": symbol,
        "order_id": order_id,
        "client_order_id": f"ats-{order_id}",
        "venue_order_id": None if state == "new" else f"paper-{order_id}",
        "intent_id": intent.intent_id,
        "side": side,
        "order_type": order_type,
        "quantity": quantity,
        "price": price,
        "filled_qty": filled_qty,
        "state": state,
        "reason": reason,
    }


def _next_sample_ts(
    order: PaperOrder, depth: DepthSamples | None, quotes: QuoteColumns | None
) -> int | None:
    """The first book sample after the one the order's last partial walked, if known."""
    times = sample_times(depth, quotes)
    consumed = -(2**63) if order.consumed_sample_ts is None else order.consumed_sample_ts
    after = int(np.searchsorted(times, consumed, "right"))
    return int(times[after]) if after < len(times) else None
