"""Limit entry at the best bid/ask: one reprice, then cancel or fall back to market.

Timeline in event time from `start` (the first quote):
- place a limit at the best bid (buy) or best ask (sell), purpose "e";
- at `reprice_after` (15 s), if not completely filled, amend it once to the current best price
  (no amend when the best has not moved);
- at `give_up_after` (30 s), cancel it. With `fallback: market`, once the venue confirms the
  cancel (`OrderClosed`), send a market order (purpose "em") for what is still unfilled.

The market order waits for the cancel confirmation on purpose: sending it earlier could fill the
limit and the market order both, i.e. more than the approved quantity (fail closed). A limit that
the venue rejects or expires before the give-up ends the tactic without fallback: a market order
is only the planned last step of a working entry, not a retry of a refused one.
"""

from __future__ import annotations

import math

from engine.config import LimitEntryConfig
from engine.orders import QUANTITY_TOLERANCE
from engine.tactics.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    OrderClosed,
    PlaceOrder,
    Quote,
    TacticFill,
)

ENTRY = "e"
ENTRY_MARKET = "em"


class LimitEntryTactic:
    """One entry of `quantity` on `side` (+1 buy, -1 sell). States: "idle", "working",
    "canceling", "market", "done"; `outcome` says how it ended."""

    def __init__(self, config: LimitEntryConfig, side: int, quantity: float) -> None:
        if side not in (1, -1):
            raise ValueError(f"side must be +1 or -1, got {side!r}")
        if not (math.isfinite(quantity) and quantity > 0):
            raise ValueError(f"quantity must be > 0, got {quantity}")
        self.config = config
        self.side = side
        self.quantity = quantity
        self.state = "idle"
        self.outcome = ""
        self.filled = 0.0
        self.price: float | None = None
        self.reprices = 0
        self.started_at: int | None = None
        self.last_quote: Quote | None = None

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled)

    @property
    def done(self) -> bool:
        return self.state == "done"

    def start(self, quote: Quote) -> list[Command]:
        """Place the limit at the touch; refuses (no order, done) on an invalid quote."""
        if self.state != "idle":
            raise RuntimeError(f"limit entry already started (state {self.state})")
        self.started_at = quote.ts_event
        if not quote.valid:
            self._finish(f"no entry: invalid quote bid={quote.bid} ask={quote.ask}")
            return []
        self.last_quote = quote
        self.price = self._touch(quote)
        self.state = "working"
        return [
            PlaceOrder(ENTRY, self.side, "limit", self.quantity, price=self.price,
                       reason=f"limit at best {'bid' if self.side > 0 else 'ask'}")
        ]

    def on_quote(self, quote: Quote) -> list[Command]:
        if quote.valid:
            self.last_quote = quote
        return self.on_time(quote.ts_event)

    def on_time(self, ts_event: int) -> list[Command]:
        """Event time advanced: reprice or give up when due."""
        if self.state != "working" or self.started_at is None:
            return []
        elapsed = ts_event - self.started_at
        if elapsed >= self.config.give_up_after_ns:
            self.state = "canceling"
            return [CancelOrder(ENTRY, f"not filled after {self.config.give_up_after}")]
        due = self.config.reprice_after_ns * (self.reprices + 1)
        if self.reprices < self.config.max_reprices and elapsed >= due:
            self.reprices += 1
            quote = self.last_quote
            best = self._touch(quote) if quote is not None else None
            if best is not None and best != self.price:
                self.price = best
                return [AmendOrder(ENTRY, price=best,
                                   reason=f"reprice to best after {self.config.reprice_after}")]
        return []

    def on_fill(self, fill: TacticFill) -> list[Command]:
        if fill.purpose not in (ENTRY, ENTRY_MARKET):
            return []
        self.filled += fill.quantity
        if self.remaining <= QUANTITY_TOLERANCE * self.quantity:
            self._finish("filled" if fill.purpose == ENTRY else "filled at market fallback")
        return []

    def on_order_closed(self, event: OrderClosed) -> list[Command]:
        if self.state == "done":
            return []
        if event.purpose == ENTRY_MARKET:
            self._finish(f"market fallback {event.state}")
            return []
        if event.purpose != ENTRY:
            return []
        if self.state == "canceling" and self.config.fallback == "market" and self.remaining > 0:
            self.state = "market"
            return [PlaceOrder(ENTRY_MARKET, self.side, "market", self.remaining,
                               reason=f"market fallback after {self.config.give_up_after}")]
        if self.state == "canceling":
            self._finish("gave up" if self.filled == 0 else "gave up partially filled")
        else:
            self._finish(f"limit {event.state} by the venue")
        return []

    def _touch(self, quote: Quote) -> float:
        return quote.bid if self.side > 0 else quote.ask

    def _finish(self, outcome: str) -> None:
        self.state = "done"
        self.outcome = outcome
