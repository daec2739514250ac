"""Commands and events that cross the boundary between a symbol's engine and portfolio risk.

A `SymbolEngine` turns strategy output into `OrderIntent`s; the `PortfolioRisk` answers each with
a `RiskDecision`; the paper matcher (or a venue) produces `Fill`s; at each primary bar close the
engine marks its position to market with a `Mark`. Fills and marks are the `PortfolioUpdate`s that
risk applies lazily in `(ts_event, symbol, sequence)` order (see `event_key`), which is what keeps
cross-symbol decisions deterministic whatever order messages arrive in (DESIGN.md, Time and
determinism).

`sequence` is a per-symbol counter shared by every intent, fill and mark a `SymbolEngine` emits, so
within one symbol the key order is the order the engine produced them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

EventKey = tuple[int, str, int]

# Intent kinds the engine emits. A strategy's "reverse" becomes two intents (see symbol_engine):
# a reduce-only "reverse_close" followed by a "reverse_open" that risk checks like an entry.
IntentKind = Literal["entry", "exit", "reverse_close", "reverse_open"]


def event_key(ts_event: int, symbol: str, sequence: int) -> EventKey:
    """Total order of risk events across symbols: time, then symbol, then per-symbol sequence."""
    return (ts_event, symbol, sequence)


def intent_id_for(symbol: str, sequence: int) -> str:
    """Stable intent id: the symbol and the per-symbol sequence number."""
    return f"{symbol}:i{sequence}"


def order_id_for(symbol: str, intent_sequence: int) -> str:
    """Stable order id of the (single) order sent for an approved intent.

    Risk derives the same id from the intent it approved, so it can match later fills to the
    exposure it already reserved for the order.
    """
    return f"{symbol}:o{intent_sequence}"


@dataclass(frozen=True)
class OrderIntent:
    """What the engine wants to do, before risk has approved or sized it.

    `side` is +1 buy, -1 sell. `quantity` None asks risk to size the order from `stop_price`
    (fixed-fractional). `reduce_only` intents only ever shrink a position and are never blocked.
    """

    intent_id: str
    symbol: str
    ts_event: int
    sequence: int
    side: int
    intent_kind: str
    reduce_only: bool
    quantity: float | None
    reference_price: float
    stop_price: float | None = None
    score: float | None = None
    reason: str = ""
    signal_id: str | None = None
    data_stale: bool = False  # the feed reported the symbol's data stale at ts_event
    # Numbers the strategy attached for risk rules (atr, atr_baseline, confidence, volatility,
    # funding_rate, spread_bps...): finite floats only, by name. Empty when it attached none.
    features: Mapping[str, float] = field(default_factory=dict)

    @property
    def key(self) -> EventKey:
        return event_key(self.ts_event, self.symbol, self.sequence)

    @property
    def order_id(self) -> str:
        return order_id_for(self.symbol, self.sequence)


@dataclass(frozen=True)
class RiskDecision:
    """Risk's answer to one intent, with a snapshot of the portfolio it was decided on.

    `quantity` is the approved quantity (0 when rejected). `rule` names the rule that fixed the
    outcome: the rejecting or capping rule, or "reduce_only", "fixed_fractional", "fixed_quantity".
    `directive` answers a position check (intent kind POSITION_CHECK): "" to hold, else why risk
    wants the symbol's position closed now ("<rule>: <reason>").
    """

    intent_id: str
    symbol: str
    ts_event: int
    approved: bool
    quantity: float
    rule: str
    reason: str
    equity: float
    portfolio_heat: float
    open_positions: int
    gross_leverage: float
    daily_pnl: float
    directive: str = ""


# The intent kind of a position check: a symbol holding a position asks risk, in event-time order
# like any intent, whether a rule wants it closed (engine.risk, engine.order_flow).
POSITION_CHECK = "position_check"


@dataclass(frozen=True)
class Fill:
    """One execution. `stop_price` is the position's protective stop after this fill (or None),
    so risk can measure heat without knowing the strategy."""

    fill_id: str
    order_id: str
    symbol: str
    ts_event: int
    sequence: int
    side: int
    quantity: float
    price: float
    reference_price: float
    fee: float
    liquidity: str
    slippage_bps: float
    latency_ms: float
    stop_price: float | None = None

    @property
    def key(self) -> EventKey:
        return event_key(self.ts_event, self.symbol, self.sequence)


@dataclass(frozen=True)
class Mark:
    """A symbol's price at a primary bar close (and its current protective stop, if any)."""

    symbol: str
    ts_event: int
    sequence: int
    price: float
    stop_price: float | None = None

    @property
    def key(self) -> EventKey:
        return event_key(self.ts_event, self.symbol, self.sequence)


@dataclass(frozen=True)
class FundingPayment:
    """A perpetual's funding settlement on the symbol's position (see `engine.funding`).

    `amount` is what the account paid, in quote currency: position quantity x `mark` x `rate`,
    so a long pays (amount > 0) and a short receives (amount < 0) when the rate is positive.
    `position` is the signed quantity held at the settlement time `ts_event`.
    """

    symbol: str
    ts_event: int
    sequence: int
    amount: float
    rate: float
    mark: float
    position: float = 0.0

    @property
    def key(self) -> EventKey:
        return event_key(self.ts_event, self.symbol, self.sequence)


@dataclass(frozen=True)
class OrderReleased:
    """An approved order that will fill no further (rejected, or its remainder cancelled): risk
    frees what it still reserved for it, so a dead order never holds heat, leverage or a
    position slot. With `successor`, the reservation moves to that order instead (a limit
    entry's market fallback for what the limit did not fill)."""

    symbol: str
    ts_event: int
    sequence: int
    order_id: str
    reason: str
    successor: str | None = None

    @property
    def key(self) -> EventKey:
        return event_key(self.ts_event, self.symbol, self.sequence)


PortfolioUpdate = Fill | Mark | FundingPayment | OrderReleased


def update_key(update: PortfolioUpdate) -> EventKey:
    """Ordering key of a fill, a mark, a funding payment or an order release."""
    return event_key(update.ts_event, update.symbol, update.sequence)
