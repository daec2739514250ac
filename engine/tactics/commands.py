"""Events a tactic consumes and commands it emits: plain frozen dataclasses, venue-neutral."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Quote:
    """Best bid and ask at `ts_event` (ns)."""

    ts_event: int
    bid: float
    ask: float

    @property
    def valid(self) -> bool:
        return math.isfinite(self.bid) and math.isfinite(self.ask) and 0 < self.bid <= self.ask

    @property
    def spread_bps(self) -> float:
        """Quoted spread relative to the mid, in bps (NaN for an invalid quote)."""
        if not self.valid:
            return math.nan
        return (self.ask - self.bid) / ((self.ask + self.bid) / 2) * 1e4


@dataclass(frozen=True)
class Bar:
    """A closed bar: its close time, close price and the ATR known at that close."""

    ts_event: int
    close: float
    atr: float


@dataclass(frozen=True)
class TacticFill:
    """An execution of the tactic's order `purpose`."""

    purpose: str
    quantity: float
    price: float
    ts_event: int


@dataclass(frozen=True)
class OrderClosed:
    """The order `purpose` ended without filling completely: "canceled", "rejected", "expired"."""

    purpose: str
    state: str
    ts_event: int


@dataclass(frozen=True)
class PlaceOrder:
    """Send a new order. `order_type` "market" is the market command."""

    purpose: str
    side: int
    order_type: str  # "limit", "market", "stop_market"
    quantity: float
    price: float | None = None
    stop_price: float | None = None
    reduce_only: bool = False
    reason: str = ""


@dataclass(frozen=True)
class AmendOrder:
    """Change a working order: its limit price (reprice), stop price or quantity (None: keep).

    A venue without amend for that order type does cancel-replace; the tactic does not care."""

    purpose: str
    price: float | None = None
    stop_price: float | None = None
    quantity: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class CancelOrder:
    purpose: str
    reason: str = ""


Command = PlaceOrder | AmendOrder | CancelOrder
