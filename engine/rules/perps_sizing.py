"""CVaR(99%) sizing of the perpetuals HFT plan: the estimated worst day stays within 2% of equity.

`cvar_sizing` (stage "size") sizes an entry so that the conservative sum of the daily CVaR of
every projected position, the new one included, stays within `budget_pct` of equity:

    quantity = (budget_pct x equity - held CVaR) / (CVaR x reference price)

- **The entry's CVaR** is, in order of precedence:
  1. the feature `cvar_99` (name configurable) the strategy attached: a positive fraction of
     price lost on average over the worst `1 - confidence` of days, e.g. 0.08. It must be
     finite, > 0 and < 1, else the entry is rejected ("invalid ... feature"); it wins over the
     history when present;
  2. the historical estimate from the symbol's mark-to-mark returns (below), once the window
     holds `min_history` returns;
  3. otherwise the entry is rejected: "insufficient history" (fail closed).
  Either value is floored at `min_cvar_pct`, so a quiet window never implies an unbounded size.
- **The historical estimate**: every `MarkObserved` adds the log return since the symbol's
  previous mark to a bounded ring of `window` returns, scaled to the horizon (one day by default)
  by square-root of time: `log(p1 / p0) x sqrt(horizon / dt)`, with `dt` the time between the two
  marks, so irregular mark spacing is handled return by return. A mark at the same time as the
  previous one replaces its price and adds no return. The loss of a return for a position of side
  s is `-s x expm1(scaled return)` (a long loses on the left tail, a short on the right), and the
  CVaR at confidence c is the exact historical one: the mean of the worst `n x (1 - c)` losses,
  the last one weighted by its fraction. Square-root scaling assumes independent returns; fat
  tails and volatility clustering make it an approximation, which is why a strategy that knows
  better supplies `cvar_99`. Marks very close together magnify their return (the conservative
  direction: a larger CVaR, a smaller size); the engine marks at bar closes.
- **Held positions** (filled plus approved, unfilled orders, from the snapshot) count
  `notional x CVaR` each, with the CVaR the strategy last supplied for that symbol (the intent's
  own for its symbol), else the historical estimate for the position's side. The *sum* is an
  upper bound of the portfolio's CVaR because CVaR is subadditive (a coherent risk measure):
  whatever the correlation, the total stays within the budget. A held position with no estimate
  at all rejects the entry, naming the symbol (fail closed).
- A risk-sized intent (quantity None) gets the quantity that fills the remaining budget. A
  quantity fixed by the intent is approved if it fits and rejected if not (never resized); one
  already set by an earlier size rule is capped to what fits. No room left rejects.

State (return rings, last supplied CVaR per symbol) is picklable and changes only from events
and checks, never from the wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from engine.rules.base import (
    MarkObserved,
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
    Stage,
)
from engine.rules.profile import RiskProfile, RuleConfig, register_rule
from engine.timeframes import NS_PER_SECOND


@dataclass
class ReturnWindow:
    """A bounded ring of one symbol's mark-to-mark log returns, each scaled to the horizon."""

    values: np.ndarray
    count: int = 0
    head: int = 0  # where the next return is written
    last_price: float = math.nan
    last_ts: int | None = None

    @classmethod
    def empty(cls, capacity: int) -> ReturnWindow:
        return cls(values=np.zeros(capacity, dtype=np.float64))

    def add_mark(self, ts_event: int, price: float, horizon_ns: int) -> None:
        """Record one mark; adds the scaled return since the previous mark when time moved on."""
        if not (math.isfinite(price) and price > 0):
            return
        if self.last_ts is not None and ts_event < self.last_ts:
            return  # an older mark than one already seen carries no new return
        if self.last_ts is not None and ts_event > self.last_ts:
            scale = math.sqrt(horizon_ns / (ts_event - self.last_ts))
            self.values[self.head] = math.log(price / self.last_price) * scale
            self.head = (self.head + 1) % len(self.values)
            self.count = min(self.count + 1, len(self.values))
        self.last_price = price
        self.last_ts = ts_event

    def cvar(self, side: int, confidence: float) -> float:
        """Historical CVaR of a position of `side` (+1/-1) as a fraction of price (NaN when
        empty): the mean of the worst `n x (1 - confidence)` losses, the last one fractional."""
        if self.count == 0:
            return math.nan
        losses = -side * np.expm1(self.values[: self.count])
        tail_mass = self.count * (1.0 - confidence)
        whole = math.floor(tail_mass)
        taken = min(self.count, whole + 1)
        worst = -np.sort(-np.partition(losses, self.count - taken)[self.count - taken:])
        weights = np.ones(taken)
        if taken > whole:
            weights[-1] = tail_mass - whole
        return float(np.dot(weights, worst) / tail_mass)


@dataclass
class CvarSizing(RiskRule):
    """Size entries so the conservative sum of daily CVaR(99%) stays within the budget."""

    name: ClassVar[str] = "cvar_sizing"
    stage: ClassVar[Stage] = "size"
    budget_pct: float = 0.02
    confidence: float = 0.99
    horizon_seconds: float = 86_400.0
    window: int = 2_000
    min_history: int = 100
    min_cvar_pct: float = 0.005
    feature: str = "cvar_99"
    returns: dict[str, ReturnWindow] = field(default_factory=dict)
    supplied: dict[str, float] = field(default_factory=dict)  # last feature value per symbol

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, MarkObserved):
            ring = self.returns.get(event.symbol)
            if ring is None:
                ring = self.returns[event.symbol] = ReturnWindow.empty(self.window)
            ring.add_mark(event.ts_event, event.price,
                          round(self.horizon_seconds * NS_PER_SECOND))
        return ()

    def history(self, symbol: str) -> int:
        ring = self.returns.get(symbol)
        return ring.count if ring is not None else 0

    def estimate(self, symbol: str, side: int) -> float | None:
        """The floored historical CVaR of `symbol` for `side`, or None below `min_history`."""
        ring = self.returns.get(symbol)
        if ring is None or ring.count < self.min_history:
            return None
        return max(ring.cvar(side, self.confidence), self.min_cvar_pct)

    def _entry_cvar(self, proposal: Proposal) -> tuple[float | None, str]:
        """(CVaR, where it came from) or (None, why not)."""
        symbol = proposal.intent.symbol
        supplied = proposal.feature(self.feature)
        if supplied is not None:
            if not 0 < supplied < 1:
                return None, (f"invalid {self.feature} feature {supplied!r}: must be a fraction "
                              "of price in (0, 1)")
            self.supplied[symbol] = supplied
            return max(supplied, self.min_cvar_pct), f"the {self.feature} feature"
        estimate = self.estimate(symbol, proposal.intent.side)
        if estimate is None:
            return None, (f"insufficient history for {symbol}: {self.history(symbol)} of "
                          f"{self.min_history} returns and no {self.feature} feature")
        return estimate, f"{self.history(symbol)} returns of history"

    def _held_cvar(self, snapshot: PortfolioSnapshot, symbol: str,
                   entry_cvar: float) -> tuple[float, str]:
        """(sum of notional x CVaR over projected positions, problem or "")."""
        total = 0.0
        for position in snapshot.positions:
            side = 1 if position.quantity > 0 else -1
            if position.symbol == symbol:
                cvar: float | None = entry_cvar
            elif position.symbol in self.supplied:
                cvar = max(self.supplied[position.symbol], self.min_cvar_pct)
            else:
                cvar = self.estimate(position.symbol, side)
            if cvar is None:
                return math.nan, (f"held position {position.symbol} has no CVaR estimate "
                                  f"({self.history(position.symbol)} of {self.min_history} "
                                  "returns, no feature seen)")
            total += position.notional * cvar
        return total, ""

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        symbol = proposal.intent.symbol
        price = proposal.intent.reference_price
        cvar, source = self._entry_cvar(proposal)
        if cvar is None:
            return self.reject(source)
        held, problem = self._held_cvar(snapshot, symbol, cvar)
        if problem:
            return self.reject(problem)
        budget = self.budget_pct * snapshot.equity
        room = budget - held
        if room <= 0:
            return self.reject(f"CVaR budget used up: held positions' daily CVaR {held:.2f} of "
                               f"{budget:.2f} ({self.budget_pct:.2%} of equity)")
        max_quantity = room / (cvar * price)
        what = (f"daily CVaR({self.confidence:.0%}) {cvar:.4%} from {source}; room = budget "
                f"{budget:.2f} - held {held:.2f}")
        if proposal.quantity is None:
            return self.sized(max_quantity, f"{what}; quantity = room / ({cvar:.4%} x {price:g})")
        return self.fit(proposal, max_quantity, what)


@register_rule
class CvarSizingConfig(RuleConfig):
    rule: Literal["cvar_sizing"] = "cvar_sizing"
    budget_pct: float = Field(0.02, gt=0, le=1, description="worst-day CVaR budget, of equity")
    confidence: float = Field(0.99, gt=0.5, lt=1)
    horizon_seconds: float = Field(86_400.0, gt=0, description="CVaR horizon; a day")
    window: int = Field(2_000, ge=10, le=1_000_000, description="returns kept per symbol")
    min_history: int = Field(100, ge=1, description="returns needed before estimating")
    min_cvar_pct: float = Field(0.005, gt=0, lt=1, description="floor of any CVaR used")
    feature: str = Field("cvar_99", min_length=1)

    @model_validator(mode="after")
    def _history_fits(self) -> CvarSizingConfig:
        if self.min_history > self.window:
            raise ValueError(f"min_history ({self.min_history}) must not exceed window "
                             f"({self.window})")
        return self

    def build(self, profile: RiskProfile) -> RiskRule:
        return CvarSizing(budget_pct=self.budget_pct, confidence=self.confidence,
                          horizon_seconds=self.horizon_seconds, window=self.window,
                          min_history=self.min_history, min_cvar_pct=self.min_cvar_pct,
                          feature=self.feature)
