"""Paper matching: a pure, seeded simulator of market-order execution for one symbol.

Lifecycle. `submit` records an order decided at time T ("new" at T). It reaches the venue at
T + latency, latency being `latency_ms` plus uniform jitter in +-`latency_jitter_ms` drawn from a
NumPy Generator seeded with (config seed, crc32(symbol)), floored at zero. Orders travel one
connection, so they arrive in the order they were sent (an order never overtakes an earlier one).
An order fills at the first trade with ts_event >= arrival ("accepted" at the arrival time,
"filled" at that trade's time); if the batch ends first it waits for the next batch. Several
orders may fill against the same trade (it is a price observation, not consumed liquidity).
Every state change is a row of the `orders` table keyed "{order_id}:{state_seq}".

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
Buys pay more, sells receive less. Fees are taker fees on notional. `slippage_bps` is the cost
against the reference, positive when the fill is worse than the reference.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.batches import DepthSamples, QuoteColumns, TradeColumns
from engine.config import SimulationConfig
from engine.timeframes import NS_PER_MINUTE
from engine.types import Fill, OrderIntent

PARTICIPATION_WINDOW_NS = NS_PER_MINUTE
_NS_PER_MS = 1_000_000


@dataclass
class PaperOrder:
    """A market order in flight."""

    order_id: str
    intent: OrderIntent
    side: int
    quantity: float
    ts_submitted: int
    arrival_ts: int
    latency_ms: float
    state_seq: int = 0


@dataclass(frozen=True)
class Execution:
    """Price of a simulated execution and what it was measured against."""

    price: float
    reference_price: float
    model: str  # "depth", "quote" or "seed"


def rng_for(symbol: str, seed: int) -> np.random.Generator:
    """The symbol's deterministic generator: seeded from the config seed and crc32(symbol)."""
    return np.random.default_rng([seed % 2**64, zlib.crc32(symbol.encode())])


class PaperMatcher:
    """Latency, fees and slippage for one symbol's market orders; deterministic and picklable."""

    def __init__(self, symbol: str, config: SimulationConfig) -> None:
        self.symbol = symbol
        self.config = config
        self._rng = rng_for(symbol, config.seed)
        self.pending: deque[PaperOrder] = deque()
        self._tail_ts = np.empty(0, np.int64)
        self._tail_qty = np.empty(0, np.float64)
        self._rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ orders

    def submit(self, intent: OrderIntent, quantity: float, ts_event: int) -> PaperOrder:
        """Send a market order for an approved intent; it arrives after the simulated latency."""
        jitter = self.config.latency_jitter_ms
        draw = float(self._rng.uniform(-jitter, jitter)) if jitter > 0 else 0.0
        latency_ms = max(0.0, self.config.latency_ms + draw)
        arrival = ts_event + round(latency_ms * _NS_PER_MS)
        if self.pending:
            arrival = max(arrival, self.pending[-1].arrival_ts)
        order = PaperOrder(
            intent.order_id,
            intent,
            intent.side,
            quantity,
            ts_event,
            arrival,
            (arrival - ts_event) / _NS_PER_MS,
        )
        self.pending.append(order)
        self._row(order, ts_event, "new", intent.reason)
        return order

    def pending_quantity(self) -> float:
        """Signed quantity of the orders in flight."""
        return sum(order.side * order.quantity for order in self.pending)

    def next_fill_index(self, trades: TradeColumns, start: int) -> int | None:
        """Index of the trade (at or after `start`) the first order in flight fills against."""
        if not self.pending:
            return None
        index = int(np.searchsorted(trades.ts_event, self.pending[0].arrival_ts, "left"))
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
        """Fill the first order in flight against trade `index`; None if it had to be rejected
        (no finite price could be found: fail closed, journaled as a rejected order)."""
        order = self.pending.popleft()
        ts_fill = int(trades.ts_event[index])
        self._row(order, order.arrival_ts, "accepted", "")
        execution = self.execution(
            order.side, order.quantity, order.arrival_ts, trades, index, quotes, depth
        )
        if not (math.isfinite(execution.price) and execution.price > 0):
            self._row(order, ts_fill, "rejected", "no finite execution price")
            return None
        notional = order.quantity * execution.price
        reference = execution.reference_price
        self._row(order, ts_fill, "filled", execution.model, execution.price, order.quantity)
        return Fill(
            fill_id=f"{self.symbol}:f{sequence}",
            order_id=order.order_id,
            symbol=self.symbol,
            ts_event=ts_fill,
            sequence=sequence,
            side=order.side,
            quantity=order.quantity,
            price=execution.price,
            reference_price=reference,
            fee=notional * self.config.taker_fee_bps / 1e4,
            liquidity="taker",
            slippage_bps=slippage_bps(order.side, execution.price, reference),
            latency_ms=order.latency_ms,
        )

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
        volume = _window_sum(trades.ts_event, trades.qty, low, arrival_ts)
        volume += _window_sum(self._tail_ts, self._tail_qty, low, arrival_ts)
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
    ) -> Execution:
        impact = self.impact_bps(quantity, arrival_ts, trades, index)
        if depth is not None and len(depth):
            walked = _walk_depth(side, quantity, arrival_ts, depth, impact)
            if walked is not None:
                return walked
        if quotes is not None and len(quotes):
            quoted = _from_quote(side, arrival_ts, quotes, impact)
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
        filled_qty: float = 0.0,
    ) -> None:
        self._rows.append(
            {
                "key": f"{order.order_id}:{order.state_seq}",
                "ts_event": ts_event,
                "symbol": self.symbol,
                "order_id": order.order_id,
                "client_order_id": f"ats-{order.order_id}",
                "venue_order_id": None if state == "new" else f"paper-{order.order_id}",
                "intent_id": order.intent.intent_id,
                "side": order.side,
                "order_type": "market",
                "quantity": order.quantity,
                "price": price,
                "filled_qty": filled_qty,
                "state": state,
                "reason": reason,
            }
        )
        order.state_seq += 1


def slippage_bps(side: int, price: float, reference: float) -> float:
    """Cost against the reference in bps; positive when the fill is worse than the reference."""
    if not (math.isfinite(reference) and reference > 0):
        return math.nan
    return side * (price - reference) / reference * 1e4


def _window_sum(ts: np.ndarray, qty: np.ndarray, low: int, high: int) -> float:
    start = int(np.searchsorted(ts, low, "left"))
    stop = int(np.searchsorted(ts, high, "left"))
    return float(qty[start:stop].sum()) if stop > start else 0.0


def _walk_depth(
    side: int, quantity: float, arrival_ts: int, depth: DepthSamples, impact_bps: float
) -> Execution | None:
    sample = int(np.searchsorted(depth.ts_event, arrival_ts, "right")) - 1
    if sample < 0:
        return None
    prices = np.asarray(depth.ask_price[sample] if side > 0 else depth.bid_price[sample])
    sizes = np.asarray(depth.ask_qty[sample] if side > 0 else depth.bid_qty[sample])
    valid = np.isfinite(prices) & np.isfinite(sizes) & (prices > 0) & (sizes > 0)
    prices, sizes = prices[valid], sizes[valid]
    if not len(prices):
        return None
    before = np.cumsum(sizes) - sizes
    taken = np.clip(quantity - before, 0.0, sizes)
    cost = float((taken * prices).sum())
    remaining = quantity - float(taken.sum())
    if remaining > 0:
        cost += remaining * float(prices[-1]) * (1 + side * impact_bps / 1e4)
    best_bid = float(depth.bid_price[sample][0])
    best_ask = float(depth.ask_price[sample][0])
    if math.isfinite(best_bid) and math.isfinite(best_ask) and 0 < best_bid <= best_ask:
        reference = (best_bid + best_ask) / 2
    else:
        reference = float(prices[0])
    return Execution(cost / quantity, reference, "depth")


def _from_quote(
    side: int, arrival_ts: int, quotes: QuoteColumns, impact_bps: float
) -> Execution | None:
    row = int(np.searchsorted(quotes.ts_event, arrival_ts, "right")) - 1
    if row < 0:
        return None
    bid = float(quotes.bid_price[row])
    ask = float(quotes.ask_price[row])
    if not (math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask):
        return None
    touch = ask if side > 0 else bid
    return Execution(touch * (1 + side * impact_bps / 1e4), (bid + ask) / 2, "quote")
