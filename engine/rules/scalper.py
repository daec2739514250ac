"""The order-flow scalper's protective rules: loss limits in account currency, the flash-crash
exit and the margin deleverage (profile `orderflow_scalper`).

Its sizing rules (funding bias, growth milestones, dynamic leverage) are in
`engine.rules.scalper_sizing`. The profile also reuses the core kill switch, stale data, net flip,
max open positions and fixed-fractional rules, and the perpetuals plan's `hold_time_exit`
(`engine.rules.perps`) with 1,800 s for the 30-minute timeout.

- `daily_loss_amount` / `weekly_loss_amount` (gates): once equity fell `limit` (quote currency,
  e.g. 150 / 400 USDT) below its value at the start of the UTC day / ISO week (Monday 00:00 UTC),
  no entries until the next day / week. The period's start equity is the portfolio's day-start
  equity on the first event of the period. Reaching the limit exactly blocks; a manual reset does
  not lift the block (it is timed).
- `flash_crash_exit` (gate + action): a mark more than `move_pct` away from any mark of the same
  symbol at most `window_seconds` older (a crash or a spike) flattens the symbol (or, when nothing
  is held, journals a `block_entries`) and refuses entries on it for `cooldown_minutes`. The
  window restarts at the triggering mark, so one move triggers once; a move of exactly
  `move_pct` does not trigger. The cool-down is timed: a manual reset does not lift it.
- `margin_deleverage` (limit + action), two modes:
  - `cross`: margin ratio = equity / (gross notional / venue_leverage), the account's equity over
    the margin the venue holds for every projected position at the leverage set there. Under
    `min_margin_ratio` (20%): `flatten_all` (or `flatten_symbol` of the largest position).
  - `isolated`: per position, margin ratio = (margin posted + unrealized P&L) / margin posted,
    margin posted = |quantity| x entry price / venue_leverage (entry = average fill price, from
    fills), i.e. 1 + venue_leverage x the signed move since entry: 1 at entry, 0.2 after an
    adverse move of 0.8 / venue_leverage (8% at 10x, before the venue liquidates near 9.5%).
    Under the minimum: `flatten_symbol` of that position.
  Either way entries are then blocked until a manual reset (or, with `until_manual_reset:
  false`, until no ratio is under the minimum), and in both modes an entry that would take the
  cross ratio under the minimum (gross notional over 5 x venue_leverage x equity at 20%) is
  capped or rejected. The cross ratio falls under 20% only after most of the posted margin is
  lost: with the plan's leverage caps it is a last line before liquidation.

These rules read no intent features. Rules keep state by event time only and pickle.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from pydantic import Field

from engine.rules.base import (
    DayStarted,
    EquityObserved,
    FillObserved,
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
from engine.timeframes import NS_PER_DAY, NS_PER_MINUTE, NS_PER_SECOND

_EPSILON = 1e-12  # a filled quantity this close to zero is flat (as in PortfolioRisk)
# Thresholds compare with this relative slack so a value that is the threshold in decimal (a
# 150.00 loss, a 5% move, a 20% ratio) counts as "at" it despite binary rounding.
_TOLERANCE = 1e-9


def utc_day(ts_event: int) -> int:
    """Days since the epoch (UTC)."""
    return ts_event // NS_PER_DAY


def iso_week(ts_event: int) -> int:
    """ISO weeks since the epoch: a week starts Monday 00:00 UTC (1970-01-01 was a Thursday)."""
    return (ts_event // NS_PER_DAY + 3) // 7


# ------------------------------------------------------------------ loss limits in currency


@dataclass
class _LossAmountLimit(RiskRule):
    """No entries once equity fell `limit` below its value at the start of the period."""

    period_name: ClassVar[str] = "period"
    resumes: ClassVar[str] = "the next period"
    limit: float = 150.0
    period: int | None = None
    period_start_equity: float = math.nan
    blocked_period: int | None = None

    def _period_of(self, ts_event: int) -> int:
        raise NotImplementedError

    def _roll(self, snapshot: PortfolioSnapshot) -> int:
        period = self._period_of(snapshot.ts_event)
        if period != self.period:
            self.period = period
            self.period_start_equity = snapshot.day_start_equity
        return period

    def _loss(self, snapshot: PortfolioSnapshot) -> float:
        return self.period_start_equity - snapshot.equity

    def _reached(self, loss: float) -> bool:
        return loss >= self.limit * (1.0 - _TOLERANCE)

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, EquityObserved | DayStarted):
            return ()
        period = self._roll(snapshot)
        loss = self._loss(snapshot)
        if self._reached(loss) and self.blocked_period != period:
            self.blocked_period = period
            reason = (f"{self.period_name} loss {loss:.2f} reached the limit of {self.limit:.2f} "
                      f"(equity {snapshot.equity:.2f} from {self.period_start_equity:.2f}); no "
                      f"entries until {self.resumes}")
            return (RiskAction("block_entries", self.name, reason),)
        return ()

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        period = self._period_of(snapshot.ts_event)
        loss = self._loss(snapshot) if self.period == period else 0.0
        if self.blocked_period == period or self._reached(loss):
            return self.reject(
                f"{self.period_name} loss limit of {self.limit:.2f} reached (equity "
                f"{snapshot.equity:.2f} from {self.period_start_equity:.2f}); entries resume "
                f"{self.resumes}")
        return self.approve(proposal, f"within the {self.period_name} loss limit")


@dataclass
class DailyLossAmount(_LossAmountLimit):
    name: ClassVar[str] = "daily_loss_amount"
    period_name: ClassVar[str] = "daily"
    resumes: ClassVar[str] = "00:00 UTC"

    def _period_of(self, ts_event: int) -> int:
        return utc_day(ts_event)


@dataclass
class WeeklyLossAmount(_LossAmountLimit):
    name: ClassVar[str] = "weekly_loss_amount"
    period_name: ClassVar[str] = "weekly"
    resumes: ClassVar[str] = "Monday 00:00 UTC (next ISO week)"
    limit: float = 400.0

    def _period_of(self, ts_event: int) -> int:
        return iso_week(ts_event)


@register_rule
class DailyLossAmountConfig(RuleConfig):
    rule: Literal["daily_loss_amount"] = "daily_loss_amount"
    limit: float = Field(150.0, gt=0, description="loss in quote currency that blocks the day")

    def build(self, profile: RiskProfile) -> RiskRule:
        return DailyLossAmount(limit=self.limit)


@register_rule
class WeeklyLossAmountConfig(RuleConfig):
    rule: Literal["weekly_loss_amount"] = "weekly_loss_amount"
    limit: float = Field(400.0, gt=0, description="loss in quote currency that blocks the week")

    def build(self, profile: RiskProfile) -> RiskRule:
        return WeeklyLossAmount(limit=self.limit)


# ------------------------------------------------------------------ flash crash


@dataclass
class FlashCrashExit(RiskRule):
    """Flatten a symbol whose mark moved more than `move_pct` within `window_ns`, then refuse
    entries on it for `cooldown_ns`."""

    name: ClassVar[str] = "flash_crash_exit"
    move_pct: float = 0.05
    window_ns: int = NS_PER_MINUTE
    cooldown_ns: int = 15 * NS_PER_MINUTE
    prices: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)
    blocked_until: dict[str, int] = field(default_factory=dict)

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, MarkObserved):
            return ()
        window = self.prices.setdefault(event.symbol, deque())
        while window and event.ts_event - window[0][0] > self.window_ns:
            window.popleft()
        move, then = 0.0, event.price
        for _, price in window:
            change = abs(event.price / price - 1.0)
            if change > move:
                move, then = change, price
        window.append((event.ts_event, event.price))
        if not move > self.move_pct * (1.0 + _TOLERANCE):
            return ()
        window.clear()
        window.append((event.ts_event, event.price))
        self.blocked_until[event.symbol] = event.ts_event + self.cooldown_ns
        reason = (f"{event.symbol} moved {move:.2%} ({then:g} -> {event.price:g}) within "
                  f"{self.window_ns / NS_PER_SECOND:g} s, over {self.move_pct:.2%}; entries "
                  f"blocked {self.cooldown_ns / NS_PER_MINUTE:g} min")
        if snapshot.position(event.symbol) is not None:
            return (RiskAction("flatten_symbol", self.name, reason, event.symbol),)
        return (RiskAction("block_entries", self.name, reason, event.symbol),)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        until = self.blocked_until.get(proposal.intent.symbol)
        if until is not None and snapshot.ts_event < until:
            return self.reject(f"{proposal.intent.symbol} flash-crash cool-down for another "
                               f"{(until - snapshot.ts_event) / NS_PER_SECOND:g} s")
        return self.approve(proposal, "no flash-crash cool-down")


@register_rule
class FlashCrashExitConfig(RuleConfig):
    rule: Literal["flash_crash_exit"] = "flash_crash_exit"
    move_pct: float = Field(0.05, gt=0, lt=1, description="move that counts as a crash")
    window_seconds: float = Field(60.0, gt=0, description="how far back the move is measured")
    cooldown_minutes: float = Field(15.0, ge=0, description="entries blocked after a crash")

    def build(self, profile: RiskProfile) -> RiskRule:
        return FlashCrashExit(move_pct=self.move_pct,
                              window_ns=round(self.window_seconds * NS_PER_SECOND),
                              cooldown_ns=round(self.cooldown_minutes * NS_PER_MINUTE))


# ------------------------------------------------------------------ margin deleverage


@dataclass
class MarginDeleverage(RiskRule):
    """Deleverage when the margin ratio (cross: the account's; isolated: a position's) falls
    under the minimum; see the module docstring for the formulas."""

    name: ClassVar[str] = "margin_deleverage"
    stage: ClassVar[Stage] = "limit"
    min_margin_ratio: float = 0.20
    venue_leverage: float = 10.0
    mode: Literal["cross", "isolated"] = "cross"
    action: Literal["flatten_all", "flatten_largest"] = "flatten_all"
    until_manual_reset: bool = True
    tripped: bool = False
    # isolated mode: signed filled quantity and average entry price per symbol, from fills
    entries: dict[str, tuple[float, float]] = field(default_factory=dict)
    flattened: set[str] = field(default_factory=set)  # isolated: flattened, not yet flat

    def margin_ratio(self, equity: float, gross_notional: float) -> float:
        """Cross: equity over the margin the venue holds; infinite with nothing open."""
        if gross_notional <= 0:
            return math.inf
        return equity / (gross_notional / self.venue_leverage)

    def position_margin_ratio(self, symbol: str, price: float) -> float:
        """Isolated: (margin posted + unrealized P&L) / margin posted, margin posted = entry
        notional / venue leverage; 1 at entry, 0 after an adverse move of 1 / venue leverage."""
        quantity, entry = self.entries.get(symbol, (0.0, math.nan))
        if quantity == 0 or not (math.isfinite(price) and entry > 0):
            return math.inf
        side = 1.0 if quantity > 0 else -1.0
        return 1.0 + self.venue_leverage * side * (price / entry - 1.0)

    def _track(self, event: FillObserved) -> None:
        fill = event.fill
        quantity, entry = self.entries.get(fill.symbol, (0.0, math.nan))
        signed = fill.side * fill.quantity
        after = quantity + signed
        if abs(after) < _EPSILON:
            self.entries.pop(fill.symbol, None)
            self.flattened.discard(fill.symbol)
        elif quantity == 0 or quantity * after < 0:  # opened from flat, or flipped
            self.entries[fill.symbol] = (after, fill.price)
            self.flattened.discard(fill.symbol)
        elif quantity * signed > 0:  # added: average the entry
            weighted = abs(quantity) * entry + fill.quantity * fill.price
            self.entries[fill.symbol] = (after, weighted / abs(after))
        else:  # reduced: the entry price stays
            self.entries[fill.symbol] = (after, entry)

    def _breaches(self, snapshot: PortfolioSnapshot) -> list[RiskAction]:
        """One action per ratio under the minimum now (cross: at most one)."""
        if self.mode == "cross":
            ratio = self.margin_ratio(snapshot.equity, snapshot.gross_notional)
            if not ratio < self.min_margin_ratio * (1.0 - _TOLERANCE):
                return []
            reason = (f"margin ratio {ratio:.2%} (equity {snapshot.equity:.2f} over gross "
                      f"{snapshot.gross_notional:.2f} / {self.venue_leverage:g}x) under "
                      f"{self.min_margin_ratio:.0%}")
            if self.action == "flatten_largest" and snapshot.positions:
                largest = max(snapshot.positions, key=lambda position: position.notional)
                return [RiskAction("flatten_symbol", self.name, f"{reason}; flatten the largest "
                                   "position", largest.symbol)]
            return [RiskAction("flatten_all", self.name, reason)]
        actions: list[RiskAction] = []
        for position in snapshot.positions:
            ratio = self.position_margin_ratio(position.symbol, position.price)
            if ratio < self.min_margin_ratio * (1.0 - _TOLERANCE):
                entry = self.entries[position.symbol][1]
                reason = (f"{position.symbol} isolated margin ratio {ratio:.2%} (entry "
                          f"{entry:g}, mark {position.price:g}, {self.venue_leverage:g}x) under "
                          f"{self.min_margin_ratio:.0%}")
                actions.append(RiskAction("flatten_symbol", self.name, reason, position.symbol))
        return actions

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, FillObserved):
            self._track(event)
        if not isinstance(event, EquityObserved):
            return ()
        breaches = self._breaches(snapshot)
        if not breaches:
            if self.tripped and not self.until_manual_reset:
                self.tripped = False
            return ()
        # cross: once per episode; isolated: once per position until it is flat
        fresh = [action for action in breaches if not self.tripped] if self.mode == "cross" else [
            action for action in breaches if action.symbol not in self.flattened]
        self.tripped = True
        self.flattened.update(action.symbol for action in fresh if action.symbol is not None)
        until = "a manual reset" if self.until_manual_reset else "the margin ratio recovers"
        return tuple(replace(action, reason=f"{action.reason}; entries blocked until {until}")
                     for action in fresh)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.tripped:
            until = "a manual reset" if self.until_manual_reset else "the margin ratio recovers"
            return self.reject(f"deleveraged: {self.mode} margin ratio fell under "
                               f"{self.min_margin_ratio:.0%}; entries blocked until {until}")
        room = (snapshot.equity * self.venue_leverage / self.min_margin_ratio
                - snapshot.gross_notional)
        return self.fit(proposal, room / proposal.intent.reference_price,
                        f"margin ratio floor {self.min_margin_ratio:.0%} at "
                        f"{self.venue_leverage:g}x venue leverage")

    def manual_reset(self) -> None:
        self.tripped = False
        self.flattened.clear()


@register_rule
class MarginDeleverageConfig(RuleConfig):
    rule: Literal["margin_deleverage"] = "margin_deleverage"
    min_margin_ratio: float = Field(0.20, gt=0, lt=1, description="margin ratio floor")
    venue_leverage: float = Field(10.0, gt=0, description="leverage set at the venue")
    mode: Literal["cross", "isolated"] = "cross"
    action: Literal["flatten_all", "flatten_largest"] = Field(
        "flatten_all", description="cross mode: what to flatten")
    until_manual_reset: bool = True

    def build(self, profile: RiskProfile) -> RiskRule:
        return MarginDeleverage(min_margin_ratio=self.min_margin_ratio,
                                venue_leverage=self.venue_leverage, mode=self.mode,
                                action=self.action, until_manual_reset=self.until_manual_reset)
