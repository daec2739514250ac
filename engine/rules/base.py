"""The contract every portfolio risk rule keeps, and the types rules see and produce.

A rule is a small object built from its own frozen config (one entry of a risk profile, see
`engine.rules.profile`). It takes part in decisions through `check` and learns what happens in
the portfolio through `observe`:

- `check(proposal, snapshot)` answers one entry intent at one *stage*:
  - "gate": approve or reject (kill switch, loss limits, position counts, filters);
  - "size": set the quantity (a base sizer when the intent left it to risk: fixed-fractional,
    CVaR, capital tier) or scale it (ATR scaling, losing streaks, drawdown cuts);
  - "limit": cap a risk-sized quantity to what fits, or reject (heat, leverage, concentration).
- `observe(event, snapshot)` sees every fill, mark, closed round trip, equity change, API call
  result and day start, in `(ts_event, symbol, sequence)` order, and may return `RiskAction`s:
  flatten a symbol, flatten everything, halt. Actions are journaled (`risk_events`) and handed to
  the engine; entry gates enforce the matching blocks themselves, so a block holds even where an
  action is not acted on.

Rules keep their own state (streaks, suspensions, return windows) and must be picklable: the
PortfolioRiskActor's checkpoint pickles them. Rules read event time only, never the wall clock,
so replays decide identically. Exits (reduce-only intents) never reach a rule: they always pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from engine.types import Fill, OrderIntent

Stage = Literal["gate", "size", "limit"]
Verdict = Literal["approve", "cap", "reject"]
# "alert": worth a look, nothing changes; "block_entries": the rule now refuses entries (it
# enforces that itself in `check`); "halt": portfolio halted until a manual reset (kill switch);
# "flatten_symbol" / "flatten_all": close positions at market.
ActionKind = Literal["alert", "block_entries", "halt", "flatten_symbol", "flatten_all"]

# A cap below this fraction of the requested quantity counts as "nothing fits".
MIN_CAP_FRACTION = 1e-6


@dataclass(frozen=True)
class PositionExposure:
    """One symbol's projected position (filled plus approved, unfilled orders)."""

    symbol: str
    quantity: float  # signed
    price: float  # last mark, else a pending order's reference, else the entry price
    heat: float  # |quantity| x |price - stop|, in quote currency
    notional: float  # |quantity| x price


@dataclass(frozen=True)
class PortfolioSnapshot:
    """The portfolio as risk sees it just before deciding one intent (or after one event)."""

    ts_event: int
    equity: float
    peak_equity: float
    day_start_equity: float
    daily_pnl: float
    halted: bool
    halt_reason: str
    open_positions: int  # symbols with a projected (filled + pending) position
    heat: float  # sum of position heat, in quote currency
    gross_notional: float  # sum of |qty| x price over projected positions
    symbol_quantity: float  # projected signed quantity of the intent's symbol (0 for events)
    positions: tuple[PositionExposure, ...] = ()
    # what a reduce-only buy / sell of the intent's symbol may close (filled + pending entries)
    reducible_by_buy: float = 0.0
    reducible_by_sell: float = 0.0
    # the widest stop distance already on each side of the intent's symbol (0: nothing there)
    long_stop_distance: float = 0.0
    short_stop_distance: float = 0.0

    @property
    def portfolio_heat(self) -> float:
        return self.heat / self.equity if self.equity > 0 else math.inf

    @property
    def gross_leverage(self) -> float:
        return self.gross_notional / self.equity if self.equity > 0 else math.inf

    @property
    def drawdown(self) -> float:
        if not (self.peak_equity > 0 and math.isfinite(self.equity)):
            return math.nan
        return max(0.0, 1.0 - self.equity / self.peak_equity)

    def stop_distance_on(self, side: int) -> float:
        return self.long_stop_distance if side > 0 else self.short_stop_distance

    def reducible(self, exit_side: int) -> float:
        return self.reducible_by_buy if exit_side > 0 else self.reducible_by_sell

    def position(self, symbol: str) -> PositionExposure | None:
        for exposure in self.positions:
            if exposure.symbol == symbol:
                return exposure
        return None


@dataclass(frozen=True)
class Proposal:
    """The entry under decision with the quantity and stop settled by the rules so far."""

    intent: OrderIntent
    quantity: float | None
    stop_price: float  # the intent's stop, or default_stop_pct away from the reference price
    sized: bool = False  # risk chose the quantity, so limits may cap it
    notes: tuple[str, ...] = ()  # what each size rule did, in order, for the journal

    @property
    def stop_distance(self) -> float:
        return abs(self.intent.reference_price - self.stop_price)

    def feature(self, name: str) -> float | None:
        """A finite number the strategy attached to the intent (ATR, confidence...), or None."""
        value = self.intent.features.get(name) if self.intent.features else None
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class RuleOutcome:
    verdict: Verdict
    rule: str
    reason: str
    quantity: float | None = None


# ------------------------------------------------------------------ events rules observe


@dataclass(frozen=True)
class FillObserved:
    fill: Fill


@dataclass(frozen=True)
class MarkObserved:
    symbol: str
    ts_event: int
    price: float


@dataclass(frozen=True)
class TradeClosed:
    """A round trip went flat. `initial_risk` is entry quantity x stop distance at entry (NaN
    when the entry had no stop); R multiples divide by it."""

    symbol: str
    ts_event: int
    pnl: float  # realized, after the round trip's fees
    initial_risk: float
    fees: float

    @property
    def r_multiple(self) -> float:
        if not (math.isfinite(self.initial_risk) and self.initial_risk > 0):
            return math.nan
        return self.pnl / self.initial_risk

    @property
    def won(self) -> bool:
        return self.pnl > 0


@dataclass(frozen=True)
class DayStarted:
    """The first event of a new UTC day; `previous_day_pnl` is None for the first day seen."""

    ts_event: int
    day: int  # days since the epoch
    day_start_equity: float
    previous_day_pnl: float | None
    previous_day_start_equity: float | None


@dataclass(frozen=True)
class EquityObserved:
    """Equity after a fill or mark was applied."""

    ts_event: int


@dataclass(frozen=True)
class ApiCallObserved:
    """One call to a venue: succeeded or failed (network, 5xx, rate limit, rejected)."""

    ts_event: int
    ok: bool
    what: str = ""


RiskEvent = (
    FillObserved | MarkObserved | TradeClosed | DayStarted | EquityObserved | ApiCallObserved
)


@dataclass(frozen=True)
class RiskAction:
    """Something a rule wants done beyond refusing entries; journaled in `risk_events`."""

    kind: ActionKind
    rule: str
    reason: str
    symbol: str | None = None


# ------------------------------------------------------------------ the rule contract


@dataclass
class RiskRule:
    """Base class of every rule: approve everything, observe nothing. Subclasses set `name` and
    `stage` and override what they need."""

    name: ClassVar[str] = "rule"
    stage: ClassVar[Stage] = "gate"

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        return self.approve(proposal, "no objection")

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        return ()

    def manual_reset(self) -> None:
        """An operator's `reset-halt`: clear suspensions that only a human may lift."""

    # helpers for subclasses

    def approve(self, proposal: Proposal, reason: str) -> RuleOutcome:
        return RuleOutcome("approve", self.name, reason, proposal.quantity)

    def reject(self, reason: str) -> RuleOutcome:
        return RuleOutcome("reject", self.name, reason)

    def sized(self, quantity: float, reason: str) -> RuleOutcome:
        """A size-stage answer: the quantity from here on."""
        return RuleOutcome("cap", self.name, reason, quantity)

    def fit(self, proposal: Proposal, max_quantity: float, what: str) -> RuleOutcome:
        """Approve when the quantity fits under `max_quantity`; cap a risk-sized one; reject a
        fixed one that does not fit (a fixed size is never silently changed), or anything when
        nothing fits."""
        quantity = proposal.quantity
        if quantity is None or not math.isfinite(quantity) or math.isnan(max_quantity):
            return RuleOutcome("reject", "invalid_input", f"{self.name}: no valid quantity")
        if quantity <= max_quantity * (1 + 1e-12):
            return self.approve(proposal, f"{what} within limit")
        if max_quantity <= quantity * MIN_CAP_FRACTION:
            return self.reject(f"{what}: no room left (fits {max(max_quantity, 0):g})")
        if proposal.sized:
            return RuleOutcome(
                "cap", self.name, f"{what}: quantity capped from {quantity:g} to "
                f"{max_quantity:g}", max_quantity)
        return self.reject(f"{what}: fixed quantity {quantity:g} exceeds the room for "
                           f"{max_quantity:g}")
