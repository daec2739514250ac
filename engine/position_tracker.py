"""One symbol's position as its engine sees it: protective levels and round-trip accounting.

The tracker holds the open position (side, quantity, average entry), the protective levels of its
`ExitPlan` (stop, take profits, breakeven move, deadline) set from the entry fill price, and the
running figures of the round trip (exits, fees, price extremes for MFE/MAE). A round trip lasts
from flat to flat: partial exits (TP1) stay in it. When the position is fully closed it yields a
`trades` row.

Triggers are searched vectorised over a slice of trade prices: the first trade at or beyond the
stop, the next take profit, or the holding deadline. On the same trade the stop wins over a take
profit, a take profit over the deadline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.strategies.base import ExitPlan, PositionView
from engine.types import Fill

_EPSILON = 1e-12


@dataclass(frozen=True)
class OrderContext:
    """What the engine remembers about why an order was sent."""

    intent_kind: str
    reason: str  # signal reason for entries, exit reason for exits
    signal_id: str | None = None
    score: float | None = None
    exits: ExitPlan | None = None
    take_profit: str | None = None  # name of the take profit an exit order executes


@dataclass
class ActiveTakeProfit:
    price: float
    quantity: float
    name: str


@dataclass(frozen=True)
class Trigger:
    """A protective exit due at trade `index`."""

    index: int
    reason: str  # "stop_loss", "breakeven_stop", "trailing_stop", a take profit name, "time_exit"
    quantity: float
    take_profit: str | None = None


@dataclass
class OpenPosition:
    side: int
    quantity: float
    entry_price: float
    entry_ts: int
    entry_fill_id: str
    entry_quantity: float
    entry_fees: float
    signal_id: str | None
    score: float | None
    realized: float = 0.0
    exit_quantity: float = 0.0
    exit_value: float = 0.0
    exit_fees: float = 0.0
    funding: float = 0.0  # paid while open (received is negative), quote currency
    max_price: float = math.nan
    min_price: float = math.nan
    max_ts: int | None = None  # when max_price was first reached
    min_ts: int | None = None
    highest_close: float = math.nan
    lowest_close: float = math.nan
    stop_price: float | None = None
    stop_reason: str = "stop_loss"
    initial_risk: float = math.nan  # quantity x stop distance at each entry fill; NaN: no stop
    take_profits: list[ActiveTakeProfit] = field(default_factory=list)
    take_profits_hit: int = 0
    breakeven_offset_pct: float | None = None
    deadline: int | None = None


class PositionTracker:
    """The symbol's open position, its protective levels and its round trips. Picklable."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.position: OpenPosition | None = None

    # ------------------------------------------------------------------ views

    @property
    def signed_quantity(self) -> float:
        position = self.position
        return 0.0 if position is None else position.side * position.quantity

    def view(self, pending_quantity: float) -> PositionView:
        position = self.position
        if position is None:
            return PositionView(pending_quantity=pending_quantity)
        return PositionView(
            quantity=position.side * position.quantity,
            pending_quantity=pending_quantity,
            entry_price=position.entry_price,
            entry_ts=position.entry_ts,
            stop_price=position.stop_price,
            take_profits_hit=position.take_profits_hit,
            highest_close=position.highest_close,
            lowest_close=position.lowest_close,
        )

    @property
    def stop_price(self) -> float | None:
        return None if self.position is None else self.position.stop_price

    def has_levels(self) -> bool:
        position = self.position
        return position is not None and (
            position.stop_price is not None
            or bool(position.take_profits)
            or position.deadline is not None
        )

    # ------------------------------------------------------------------ market observations

    def observe_trades(self, prices: np.ndarray, ts: np.ndarray) -> None:
        """Extend the price extremes of the open round trip and when they were first reached
        (for MFE/MAE and their timing)."""
        position = self.position
        if position is None or not len(prices):
            return
        top, bottom = int(prices.argmax()), int(prices.argmin())
        high, low = float(prices[top]), float(prices[bottom])
        if math.isnan(position.max_price) or high > position.max_price:
            position.max_price, position.max_ts = high, int(ts[top])
        if math.isnan(position.min_price) or low < position.min_price:
            position.min_price, position.min_ts = low, int(ts[bottom])

    def observe_close(self, close: float) -> None:
        """A primary bar closed: extend the closes' extremes since entry."""
        position = self.position
        if position is None or not math.isfinite(close):
            return
        position.highest_close = max(position.highest_close, close)
        position.lowest_close = min(position.lowest_close, close)

    def add_funding(self, amount: float) -> None:
        """A funding payment on the open position (paid > 0); it counts in the round trip's
        P&L, as it does in risk's equity."""
        if self.position is not None:
            self.position.funding += amount

    def move_stop(self, price: float, reason: str) -> bool:
        """Tighten the stop (never loosen it); True when it moved."""
        position = self.position
        if position is None or not (math.isfinite(price) and price > 0):
            return False
        current = position.stop_price
        if current is not None and (price - current) * position.side <= 0:
            return False
        position.stop_price = price
        position.stop_reason = reason
        return True

    # ------------------------------------------------------------------ triggers

    def first_trigger(
        self, ts: np.ndarray, prices: np.ndarray, start: int, stop: int
    ) -> Trigger | None:
        """The first protective exit due among trades [start, stop), or None."""
        position = self.position
        if position is None or stop <= start:
            return None
        segment = prices[start:stop]
        side = position.side
        found: list[tuple[int, int, str, float, str | None]] = []  # (index, priority, ...)
        if position.stop_price is not None:
            crossed = segment <= position.stop_price if side > 0 else segment >= position.stop_price
            index = _first_true(crossed)
            if index is not None:
                found.append((index, 0, position.stop_reason, position.quantity, None))
        if position.take_profits:
            target = position.take_profits[0]
            crossed = segment >= target.price if side > 0 else segment <= target.price
            index = _first_true(crossed)
            if index is not None:
                last = len(position.take_profits) == 1
                quantity = position.quantity if last else min(target.quantity, position.quantity)
                found.append((index, 1, target.name, quantity, target.name))
        if position.deadline is not None:
            index = int(np.searchsorted(ts[start:stop], position.deadline, "left"))
            if index < stop - start:
                found.append((index, 2, "time_exit", position.quantity, None))
        if not found:
            return None
        index, _, reason, quantity, take_profit = min(found, key=lambda item: (item[0], item[1]))
        return Trigger(start + index, reason, quantity, take_profit)

    # ------------------------------------------------------------------ fills

    def apply_fill(self, fill: Fill, context: OrderContext) -> list[dict[str, Any]]:
        """Apply one of this symbol's fills; returns the `trades` rows of round trips it closed."""
        rows: list[dict[str, Any]] = []
        position = self.position
        remaining = fill.quantity
        if position is not None and position.side != fill.side:
            closing = min(remaining, position.quantity)
            fee = fill.fee * closing / fill.quantity
            position.realized += closing * (fill.price - position.entry_price) * position.side
            position.exit_quantity += closing
            position.exit_value += closing * fill.price
            position.exit_fees += fee
            position.quantity -= closing
            remaining -= closing
            if context.take_profit is not None:
                self._take_profit_filled(position, context.take_profit)
            if position.quantity <= _EPSILON * max(1.0, position.entry_quantity):
                rows.append(self._round_trip_row(position, fill, context.reason))
                self.position = None
        if remaining > _EPSILON * max(1.0, fill.quantity):
            fee = fill.fee * remaining / fill.quantity
            self._open_or_add(fill, remaining, fee, context)
        return rows

    def _open_or_add(self, fill: Fill, quantity: float, fee: float, context: OrderContext) -> None:
        position = self.position
        if position is not None:  # same side: add to it
            total = position.quantity + quantity
            position.entry_price = (
                position.entry_price * position.quantity + fill.price * quantity
            ) / total
            position.quantity = total
            position.entry_quantity += quantity
            position.entry_fees += fee
            if position.stop_price is not None:
                position.initial_risk += quantity * abs(fill.price - position.stop_price)
            return
        position = OpenPosition(
            side=fill.side,
            quantity=quantity,
            entry_price=fill.price,
            entry_ts=fill.ts_event,
            entry_fill_id=fill.fill_id,
            entry_quantity=quantity,
            entry_fees=fee,
            signal_id=context.signal_id,
            score=context.score,
            highest_close=fill.price,
            lowest_close=fill.price,
        )
        plan = context.exits
        if plan is not None:
            side = fill.side
            if plan.stop_distance is not None:
                position.stop_price = fill.price - side * plan.stop_distance
                position.initial_risk = quantity * plan.stop_distance
            for take_profit in plan.take_profits:
                position.take_profits.append(
                    ActiveTakeProfit(
                        fill.price + side * take_profit.distance,
                        quantity * take_profit.fraction,
                        take_profit.name,
                    )
                )
            position.breakeven_offset_pct = plan.breakeven_offset_pct
            if plan.max_holding_ns is not None:
                position.deadline = fill.ts_event + plan.max_holding_ns
        self.position = position

    def _take_profit_filled(self, position: OpenPosition, name: str) -> None:
        position.take_profits = [tp for tp in position.take_profits if tp.name != name]
        position.take_profits_hit += 1
        offset = position.breakeven_offset_pct
        if position.take_profits_hit == 1 and offset is not None and position.quantity > 0:
            breakeven = position.entry_price * (1 + position.side * offset)
            self.move_stop(breakeven, "breakeven_stop")

    def _round_trip_row(self, position: OpenPosition, fill: Fill, reason: str) -> dict[str, Any]:
        entry = position.entry_price
        fees = position.entry_fees + position.exit_fees
        pnl = position.realized - fees - position.funding
        notional = entry * position.entry_quantity
        high, low = position.max_price, position.min_price
        if position.side > 0:
            favourable, adverse = (high - entry) / entry, (entry - low) / entry
        else:
            favourable, adverse = (entry - low) / entry, (high - entry) / entry
        return {
            "key": f"{position.entry_fill_id}:rt",
            "symbol": self.symbol,
            "side": position.side,
            "entry_ts": position.entry_ts,
            "exit_ts": fill.ts_event,
            "entry_price": entry,
            "exit_price": position.exit_value / position.exit_quantity,
            "quantity": position.entry_quantity,
            "pnl": pnl,
            "fees": fees,
            "funding": position.funding,
            "return_pct": 100.0 * pnl / notional if notional > 0 else math.nan,
            "initial_risk": position.initial_risk,
            "r_multiple": (pnl / position.initial_risk
                           if position.initial_risk > 0 else math.nan),
            "mfe": max(0.0, favourable) if math.isfinite(favourable) else 0.0,
            "mae": max(0.0, adverse) if math.isfinite(adverse) else 0.0,
            # when the best and worst prices of the trip were first reached (NaN-free: the
            # entry's time when no trade was seen while open)
            "mfe_ts": (position.max_ts if position.side > 0 else position.min_ts)
            or position.entry_ts,
            "mae_ts": (position.min_ts if position.side > 0 else position.max_ts)
            or position.entry_ts,
            "exit_reason": reason,
            "entry_signal_id": position.signal_id,
            "entry_score": math.nan if position.score is None else position.score,
        }


def _first_true(mask: np.ndarray) -> int | None:
    if not len(mask):
        return None
    index = int(np.argmax(mask))
    return index if mask[index] else None
