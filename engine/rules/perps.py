"""The perpetuals HFT plan's gates: stops under 0.1% and 60-second time exits. Its CVaR sizing
is in `engine.rules.perps_sizing`; the profile
(`configs/risk/perps_hft.yaml`) adds the shared kill_switch, stale_data, net_flip,
portfolio_heat and max_leverage rules from `engine.rules.core`.

- `max_stop_distance` (gate) rejects an entry whose stop is `max_pct` (0.1%) of its reference
  price or farther; the boundary itself is rejected, and so is anything within float noise of it
  (fail closed). With `require_stop` (the default) an entry without a stop price is rejected too,
  rather than judged on the profile's `default_stop_pct`. Reads no features.
- `hold_time_exit` (gate) tracks each symbol's *filled* position from `FillObserved` and the
  event time of the fill that opened it (from flat, or flipping through zero; adding to a
  position keeps its clock). On the first event at or after `opened + max_hold_seconds` (60 s)
  it returns one `flatten_symbol` for that position, and while that position stays open it
  rejects further entries on the symbol (adding to a position past its time exit is never
  right). A new position gets a new clock and a new action. Reads no features.
- The 5% kill switch is the core `drawdown_kill_switch` (`engine.rules.core`), shared with the
  intraday plan's `drawdown_shutdown`.

Rules use event time only (fill and event timestamps) and are picklable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field

from engine.rules.base import (
    FillObserved,
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
)
from engine.rules.profile import RiskProfile, RuleConfig, register_rule
from engine.timeframes import NS_PER_SECOND

_FLAT = 1e-12  # a filled quantity below this is flat
_BOUNDARY = 1e-12  # relative float noise treated as "at the threshold" (so it rejects)


def event_time(event: RiskEvent) -> int:
    """The event-time stamp of any observed event."""
    return event.fill.ts_event if isinstance(event, FillObserved) else event.ts_event


# ------------------------------------------------------------------ stops under 0.1%


@dataclass
class MaxStopDistance(RiskRule):
    """Entries need a stop closer than `max_pct` of their reference price."""

    name: ClassVar[str] = "max_stop_distance"
    max_pct: float = 0.001
    require_stop: bool = True

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        intent = proposal.intent
        if self.require_stop and intent.stop_price is None:
            return self.reject(f"entry has no stop price; the plan needs a stop under "
                               f"{self.max_pct:.2%} of price")
        distance_pct = proposal.stop_distance / intent.reference_price
        if not distance_pct < self.max_pct * (1.0 - _BOUNDARY):
            return self.reject(f"stop distance {proposal.stop_distance:g} is {distance_pct:.4%} "
                               f"of price {intent.reference_price:g}, not under "
                               f"{self.max_pct:.2%}")
        return self.approve(proposal, f"stop {distance_pct:.4%} under {self.max_pct:.2%}")


@register_rule
class MaxStopDistanceConfig(RuleConfig):
    rule: Literal["max_stop_distance"] = "max_stop_distance"
    max_pct: float = Field(0.001, gt=0, lt=1, description="stops must be closer than this")
    require_stop: bool = True

    def build(self, profile: RiskProfile) -> RiskRule:
        return MaxStopDistance(max_pct=self.max_pct, require_stop=self.require_stop)


# ------------------------------------------------------------------ 60-second time exits


@dataclass
class HoldTimeExit(RiskRule):
    """Flatten a position `max_hold_seconds` after the fill that opened it, once."""

    name: ClassVar[str] = "hold_time_exit"
    max_hold_seconds: float = 60.0
    quantities: dict[str, float] = field(default_factory=dict)  # filled, signed
    opened_at: dict[str, int] = field(default_factory=dict)  # ts of the opening fill
    exits_sent: set[str] = field(default_factory=set)  # symbols whose open position got its exit

    @property
    def max_hold_ns(self) -> int:
        return round(self.max_hold_seconds * NS_PER_SECOND)

    def _apply_fill(self, event: FillObserved) -> None:
        fill = event.fill
        before = self.quantities.get(fill.symbol, 0.0)
        after = before + fill.side * fill.quantity
        if abs(after) < _FLAT:
            self.quantities.pop(fill.symbol, None)
            self.opened_at.pop(fill.symbol, None)
            self.exits_sent.discard(fill.symbol)
            return
        self.quantities[fill.symbol] = after
        if before == 0.0 or before * after < 0:  # opened from flat, or flipped through zero
            self.opened_at[fill.symbol] = fill.ts_event
            self.exits_sent.discard(fill.symbol)

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, FillObserved):
            self._apply_fill(event)
        now = event_time(event)
        actions: list[RiskAction] = []
        for symbol in sorted(self.opened_at):
            if symbol in self.exits_sent:
                continue
            age = now - self.opened_at[symbol]
            if age >= self.max_hold_ns:
                self.exits_sent.add(symbol)
                actions.append(RiskAction(
                    "flatten_symbol", self.name,
                    f"{symbol} position {self.quantities[symbol]:g} open "
                    f"{age / NS_PER_SECOND:.3f}s, time exit at {self.max_hold_seconds:g}s",
                    symbol))
        return actions

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        symbol = proposal.intent.symbol
        opened = self.opened_at.get(symbol)
        if opened is not None:
            age = proposal.intent.ts_event - opened
            if symbol in self.exits_sent or age >= self.max_hold_ns:
                return self.reject(
                    f"{symbol} position open {age / NS_PER_SECOND:.3f}s is past its "
                    f"{self.max_hold_seconds:g}s time exit; no entries until it is flat")
        return self.approve(proposal, "no position past its time exit")


@register_rule
class HoldTimeExitConfig(RuleConfig):
    rule: Literal["hold_time_exit"] = "hold_time_exit"
    max_hold_seconds: float = Field(60.0, gt=0, description="time exit after the opening fill")

    def build(self, profile: RiskProfile) -> RiskRule:
        return HoldTimeExit(max_hold_seconds=self.max_hold_seconds)


# ------------------------------------------------------------------ kill switch at 5% drawdown


