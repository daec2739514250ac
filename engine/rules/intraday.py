"""Intraday breakout plan: the rules that stop trading (loss streaks, weekly loss, API errors,
slippage, drawdown). Sizing and allocation rules are in `engine.rules.intraday_sizing`, the
correlation filter in `engine.rules.intraday_correlation`; the profile is
`configs/risk/intraday_breakout.yaml`.

None of these rules reads intent features. Thresholds on losses are *reached* (>=, like the core
`daily_loss_limit`: fail closed at the boundary); thresholds on rates and ratios must be
*exceeded* (">", the plan's "over 10%", "over 5x").

- `daily_loss_streak`: the core `daily_loss_limit` blocks entries until 00:00 UTC once equity is
  `limit_pct` below the day's start; this rule counts such days. A day counts when equity reaches
  the limit at any event of that UTC day; consecutive means calendar days (a UTC day without a
  hit, or without any event, breaks the streak). On the `days`-th day in a row it suspends
  entries and returns a "halt" action; only `manual_reset` (the operator's reset-halt) lifts the
  suspension and restarts the count (a reset while not suspended changes nothing). Every counted
  day before that is an "alert".
- `weekly_loss_halt`: rolling week of 7 UTC days. The reference is the start equity of the
  earliest UTC day kept (today and the 6 before). Equity at or below reference x (1 - limit_pct)
  blocks entries for `block_days` days of event time ("block_entries" action); the reference then
  restarts at the equity of that moment. A manual reset does not lift it: it is time-based.
- `api_error_rate`: venue calls seen in the last `window_s` seconds of event time, (now - window,
  now]. With at least `min_calls` of them, an error share above `max_error_rate` refuses entries
  ("block_entries" when it starts, "alert" when the rate is back at or below the limit). Fewer
  calls are not judged (entries allowed): a single failed call out of three is no outage. The block
  lifts by itself as failures age out of the window.
- `slippage_halt`: a fill whose `slippage_bps` exceeds `multiple` x the expected slippage halts
  trading ("halt" action, entries refused until `manual_reset`). Expected slippage is the
  configured `expected_slippage_bps`; with `rolling_fills` > 0 and that many earlier fills seen,
  it is the larger of the configured value and the mean slippage (negatives as 0) of the last
  `rolling_fills` fills, so a venue that is always a little worse does not halt every fill, while
  the configured value stays a floor. Fills with a non-finite slippage are not judged.
- `drawdown_shutdown`: equity `limit_pct` or more below its peak: "flatten_all" and "halt",
  entries refused until `manual_reset`. The peak is the portfolio's peak at first sight, then the
  highest equity this rule observes; a manual reset after a shutdown restarts the peak at the
  next equity seen, so the operator's restart is not shut down again at once by the old peak (a
  reset of another halt leaves the peak alone).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import Field

from engine.rules.base import (
    ApiCallObserved,
    DayStarted,
    EquityObserved,
    FillObserved,
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
)
from engine.rules.core import DrawdownKillSwitch
from engine.rules.profile import RiskProfile, RuleConfig, register_rule
from engine.timeframes import NS_PER_DAY, NS_PER_SECOND


def utc_text(ts_event: int) -> str:
    """An event time as readable UTC, for reasons in the journal."""
    return datetime.fromtimestamp(ts_event / NS_PER_SECOND, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def profile_rule_value(profile: RiskProfile, rule: str, key: str, wanted_by: str) -> float:
    """A numeric parameter of another rule of the profile (so two rules cannot disagree on one
    number); an error naming both rules when that rule is not in the profile."""
    for config in profile.rules:
        if config.rule == rule:
            return float(getattr(config, key))
    raise ValueError(f"profile {profile.name!r}: rule {wanted_by!r} takes {key} from rule "
                     f"{rule!r}, which the profile does not list; set {wanted_by}.{key}")


# ------------------------------------------------------------------ daily loss streak


@dataclass
class DailyLossStreak(RiskRule):
    """`days` UTC days in a row that reached the daily loss limit: suspended until a manual
    reset."""

    name: ClassVar[str] = "daily_loss_streak"
    limit_pct: float = 0.03
    days: int = 3
    streak: int = 0
    last_hit_day: int | None = None
    suspended: bool = False

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, EquityObserved | DayStarted):
            return ()
        day = event.ts_event // NS_PER_DAY
        if self.last_hit_day == day:
            return ()
        if not snapshot.equity <= snapshot.day_start_equity * (1.0 - self.limit_pct):
            return ()
        self.streak = self.streak + 1 if self.last_hit_day == day - 1 else 1
        self.last_hit_day = day
        loss = f"daily loss {snapshot.daily_pnl:.2f} reached {self.limit_pct:.2%}"
        if self.streak < self.days or self.suspended:
            return (RiskAction("alert", self.name,
                               f"{loss}: loss-limit day {self.streak} of {self.days} in a row"),)
        self.suspended = True
        return (RiskAction("halt", self.name,
                           f"{loss} on {self.days} UTC days in a row; entries suspended "
                           "until a manual reset"),)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.suspended:
            return self.reject(f"{self.days} UTC days in a row reached the {self.limit_pct:.2%} "
                               "daily loss limit; suspended until a manual reset")
        return self.approve(proposal, f"loss-limit streak {self.streak} of {self.days}")

    def manual_reset(self) -> None:
        """Lift this rule's suspension and restart the count; a reset of some other halt leaves
        a running streak alone."""
        if self.suspended:
            self.suspended = False
            self.streak = 0


@register_rule
class DailyLossStreakConfig(RuleConfig):
    rule: Literal["daily_loss_streak"] = "daily_loss_streak"
    limit_pct: float | None = Field(
        None, gt=0, le=1, description="None: the limit_pct of the profile's daily_loss_limit")
    days: int = Field(3, ge=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        limit = self.limit_pct
        if limit is None:
            limit = profile_rule_value(profile, "daily_loss_limit", "limit_pct", self.rule)
        return DailyLossStreak(limit_pct=limit, days=self.days)


# ------------------------------------------------------------------ weekly loss


@dataclass
class WeeklyLossHalt(RiskRule):
    """Equity `limit_pct` below the start of the rolling 7-day week: no entries for
    `block_days` days."""

    name: ClassVar[str] = "weekly_loss_halt"
    limit_pct: float = 0.08
    block_days: float = 7.0
    window_days: int = 7
    day_starts: list[tuple[int, float]] = field(default_factory=list)  # (UTC day, start equity)
    blocked_until: int | None = None

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, DayStarted):
            self.day_starts.append((event.day, event.day_start_equity))
            self.day_starts = [(day, equity) for day, equity in self.day_starts
                               if day > event.day - self.window_days]
        if not isinstance(event, EquityObserved | DayStarted) or not self.day_starts:
            return ()
        ts = event.ts_event
        if self.blocked_until is not None and ts < self.blocked_until:
            return ()
        reference = self.day_starts[0][1]
        if not snapshot.equity <= reference * (1.0 - self.limit_pct):
            return ()
        self.blocked_until = ts + int(self.block_days * NS_PER_DAY)
        self.day_starts = [(ts // NS_PER_DAY, snapshot.equity)]
        loss = snapshot.equity - reference
        return (RiskAction(
            "block_entries", self.name,
            f"weekly loss {loss:.2f} from {reference:.2f} reached {self.limit_pct:.2%}; no "
            f"entries until {utc_text(self.blocked_until)} UTC"),)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.blocked_until is not None and snapshot.ts_event < self.blocked_until:
            return self.reject(f"weekly loss limit {self.limit_pct:.2%} reached; no entries "
                               f"until {utc_text(self.blocked_until)} UTC")
        return self.approve(proposal, "within the weekly loss limit")


@register_rule
class WeeklyLossHaltConfig(RuleConfig):
    rule: Literal["weekly_loss_halt"] = "weekly_loss_halt"
    limit_pct: float = Field(0.08, gt=0, le=1)
    block_days: float = Field(7.0, gt=0)

    def build(self, profile: RiskProfile) -> RiskRule:
        return WeeklyLossHalt(limit_pct=self.limit_pct, block_days=self.block_days)


# ------------------------------------------------------------------ API error rate


@dataclass
class ApiErrorRate(RiskRule):
    """More than `max_error_rate` of the venue calls in the last `window_s` seconds failed
    (with at least `min_calls` calls): no entries."""

    name: ClassVar[str] = "api_error_rate"
    max_error_rate: float = 0.10
    window_s: float = 300.0
    min_calls: int = 10
    calls: deque[tuple[int, bool]] = field(default_factory=deque)  # (ts_event, ok)
    blocking: bool = False  # for the start/end actions only; `check` recomputes

    def _window(self, now: int) -> tuple[int, int]:
        """(calls, failures) in (now - window, now]."""
        start = now - int(self.window_s * NS_PER_SECOND)
        recent = [ok for ts, ok in self.calls if start < ts <= now]
        return len(recent), recent.count(False)

    def _over(self, calls: int, failures: int) -> bool:
        return calls >= self.min_calls and failures / calls > self.max_error_rate

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        now = snapshot.ts_event
        if isinstance(event, ApiCallObserved):
            self.calls.append((event.ts_event, event.ok))
        start = now - int(self.window_s * NS_PER_SECOND)
        while self.calls and self.calls[0][0] <= start:
            self.calls.popleft()
        calls, failures = self._window(now)
        over = self._over(calls, failures)
        if over == self.blocking:
            return ()
        self.blocking = over
        rate = f"{failures} of {calls} venue calls failed in {self.window_s:g} s"
        if over:
            return (RiskAction("block_entries", self.name,
                               f"{rate}, over {self.max_error_rate:.0%}; entries halted"),)
        return (RiskAction("alert", self.name, f"error rate back within "
                           f"{self.max_error_rate:.0%} ({rate}); entries resume"),)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        calls, failures = self._window(snapshot.ts_event)
        if self._over(calls, failures):
            return self.reject(f"{failures} of {calls} venue calls failed in the last "
                               f"{self.window_s:g} s, over {self.max_error_rate:.0%}")
        if calls < self.min_calls:
            return self.approve(proposal, f"{calls} venue calls in {self.window_s:g} s, fewer "
                                f"than {self.min_calls}: not judged")
        return self.approve(proposal, f"{failures} of {calls} venue calls failed")


@register_rule
class ApiErrorRateConfig(RuleConfig):
    rule: Literal["api_error_rate"] = "api_error_rate"
    max_error_rate: float = Field(0.10, ge=0, lt=1)
    window_s: float = Field(300.0, gt=0)
    min_calls: int = Field(10, ge=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        return ApiErrorRate(max_error_rate=self.max_error_rate, window_s=self.window_s,
                            min_calls=self.min_calls)


# ------------------------------------------------------------------ slippage


@dataclass
class SlippageHalt(RiskRule):
    """A fill slipped more than `multiple` x the expected slippage: halt until a manual reset."""

    name: ClassVar[str] = "slippage_halt"
    multiple: float = 5.0
    expected_slippage_bps: float = 2.0
    rolling_fills: int = 0
    recent: deque[float] = field(default_factory=deque)  # the last rolling_fills slippages
    halted: bool = False
    halt_detail: str = ""

    def expected(self) -> float:
        """The slippage a fill is measured against, in basis points."""
        if self.rolling_fills > 0 and len(self.recent) >= self.rolling_fills:
            mean = sum(max(0.0, value) for value in self.recent) / len(self.recent)
            return max(self.expected_slippage_bps, mean)
        return self.expected_slippage_bps

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, FillObserved) or not math.isfinite(event.fill.slippage_bps):
            return ()
        fill = event.fill
        expected = self.expected()
        if self.rolling_fills > 0:
            self.recent.append(fill.slippage_bps)
            while len(self.recent) > self.rolling_fills:
                self.recent.popleft()
        if self.halted or not fill.slippage_bps > self.multiple * expected:
            return ()
        self.halted = True
        self.halt_detail = (f"fill {fill.fill_id} slipped {fill.slippage_bps:.2f} bps, over "
                            f"{self.multiple:g}x the expected {expected:.2f} bps")
        return (RiskAction("halt", self.name, f"{self.halt_detail}; trading halted",
                           fill.symbol),)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.halted:
            return self.reject(f"{self.halt_detail}; halted until a manual reset")
        return self.approve(proposal, "slippage within limits")

    def manual_reset(self) -> None:
        self.halted = False
        self.halt_detail = ""


@register_rule
class SlippageHaltConfig(RuleConfig):
    rule: Literal["slippage_halt"] = "slippage_halt"
    multiple: float = Field(5.0, gt=1)
    expected_slippage_bps: float = Field(2.0, gt=0)
    rolling_fills: int = Field(0, ge=0, description="0: the configured expectation only")

    def build(self, profile: RiskProfile) -> RiskRule:
        return SlippageHalt(multiple=self.multiple,
                            expected_slippage_bps=self.expected_slippage_bps,
                            rolling_fills=self.rolling_fills)


# ------------------------------------------------------------------ drawdown


@dataclass
class DrawdownShutdown(DrawdownKillSwitch):
    """The plan's "drawdown over 15% from peak: flatten and shut down": the core drawdown kill
    switch under the plan's name and threshold."""

    name: ClassVar[str] = "drawdown_shutdown"
    label: ClassVar[str] = "shutdown"
    limit_pct: float = 0.15


@register_rule
class DrawdownShutdownConfig(RuleConfig):
    rule: Literal["drawdown_shutdown"] = "drawdown_shutdown"
    limit_pct: float = Field(0.15, gt=0, lt=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        return DrawdownShutdown(limit_pct=self.limit_pct)
