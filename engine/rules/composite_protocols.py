"""Autonomous composite profile, part 2: drawdown protocol, losing-streak phases, allocation caps.

- `drawdown_protocol` (size stage), on the drawdown from peak equity (`PortfolioSnapshot.drawdown`):
  - `alert_at` (5%): an "alert" RiskAction, nothing else changes;
  - `cut_at` (10%): entry size x `cut_multiplier` (0.7, a 30% cut);
  - `defensive_at` (15%): size x `defensive_multiplier` (0.5) and no entries in symbols whose
    asset tags (the profile's `assets` map) include one of `banned_tags` ("meme");
  - `preservation_at` (20%): capital preservation. A "block_entries" action (plus "flatten_all"
    when `flatten_on_preservation`) and no entries for `preservation_hours` (48) of event time;
    then entries resume by themselves (journaled as an "alert" at the first event after the end)
    at the size the drawdown then calls for. It is not a portfolio "halt", because a halt needs a
    manual reset, and an operator's reset-halt does not shorten it. It fires again only when the
    drawdown reaches the one that set it off plus `rearm_step` (5 points).
  The level alerts fire once per drawdown episode; an episode ends (journaled) when the drawdown is
  back under `alert_at`, which also re-arms preservation at `preservation_at`. A non-finite
  drawdown rejects entries (fail closed).
- `losing_streak_phases` (size stage), on consecutive losing round trips (`TradeClosed.pnl < 0`;
  a win resets the streak, a zero-P&L trade leaves it unchanged):
  - from `reduce_at` (5) losses: size x `reduce_multiplier` (0.5);
  - from `selective_at` (8): size x `selective_multiplier` (0.25) and only intents with
    `OrderIntent.score >= min_score` (5, the top of momentum_breakout's 0-5 scale); an intent
    without a score is rejected, naming the missing score;
  - at `pause_at` (10) and every further loss: no entries for `pause_hours` (24) of event time,
    or until a manual reset when `pause_hours` is null. After a timed pause the selective phase
    applies until a win.
  Reaching each phase, the pause, its end and a win ending a streak of `reduce_at` or more are
  journaled.
- `allocation_caps` (limit stage): the gross notional of all projected positions in the intent's
  asset class (and, separately, sector) plus the new one stays within the class's (sector's) cap
  times equity. Classes and sectors come from the profile's `assets` map (`default_asset` for
  unlisted symbols); a class or sector without a cap uses the default cap, none when that is null.
  A risk-sized quantity is capped to the tighter room, a fixed one that does not fit is rejected.

Size multipliers apply only to quantities risk sized. A fixed quantity (the intent set it) is
never resized, so while a cut is in force such an entry is rejected with the cut's reason; a
modifier that runs before any base sizer rejects (profile order error), so no cut is ever lost.
Features read: none; `losing_streak_phases` reads `OrderIntent.score` in its selective phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from engine.rules.base import (
    DayStarted,
    EquityObserved,
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
    Stage,
    TradeClosed,
)
from engine.rules.profile import RiskProfile, RuleConfig, register_rule

_NS_PER_HOUR = 3_600_000_000_000
# Drawdown thresholds count as reached within this much float noise: 1 - 900/1000 is
# 0.09999999999999998, which a plan's "10%" means to include.
THRESHOLD_TOLERANCE = 1e-12


def reached(value: float, level: float) -> bool:
    return value >= level - THRESHOLD_TOLERANCE


def _at(ts_event: int) -> str:
    """Event time as UTC ISO text, for reasons."""
    return datetime.fromtimestamp(ts_event / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scale_size(rule: RiskRule, proposal: Proposal, factor: float, why: str) -> RuleOutcome:
    """Scale a risk-sized quantity by `factor`; refuse what cannot be scaled (fail closed)."""
    if proposal.quantity is None:
        return rule.reject(f"{why}, but no base sizer ran before {rule.name} (profile order)")
    if not proposal.sized:
        return rule.reject(f"{why}; the fixed quantity {proposal.quantity:g} is never resized")
    return rule.sized(proposal.quantity * factor, why)


# ------------------------------------------------------------------ drawdown protocol


@dataclass
class DrawdownProtocol(RiskRule):
    """Alert, cut, defend, then preserve capital as the drawdown from peak deepens."""

    name: ClassVar[str] = "drawdown_protocol"
    stage: ClassVar[Stage] = "size"
    alert_at: float = 0.05
    cut_at: float = 0.10
    cut_multiplier: float = 0.7
    defensive_at: float = 0.15
    defensive_multiplier: float = 0.5
    banned_tags: tuple[str, ...] = ("meme",)
    preservation_at: float = 0.20
    preservation_hours: float = 48.0
    flatten_on_preservation: bool = True
    rearm_step: float = 0.05
    symbol_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_tags: tuple[str, ...] = ()
    # state
    announced: int = 0  # highest level journaled this episode: 0 none, 1 alert, 2 cut, 3 defensive
    preservation_until: int | None = None
    preservation_trigger: float | None = None  # None: preservation_at

    def _level(self, drawdown: float) -> int:
        return sum(reached(drawdown, level)
                   for level in (self.alert_at, self.cut_at, self.defensive_at))

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        actions: list[RiskAction] = []
        now = snapshot.ts_event
        drawdown = snapshot.drawdown
        if self.preservation_until is not None and now >= self.preservation_until:
            actions.append(RiskAction("alert", self.name, (
                f"capital preservation ended at {_at(self.preservation_until)} "
                f"(drawdown now {drawdown:.2%}); entries resume")))
            self.preservation_until = None
        if not isinstance(event, EquityObserved | DayStarted) or not math.isfinite(drawdown):
            return actions
        if not reached(drawdown, self.alert_at):
            if self.announced:
                actions.append(RiskAction("alert", self.name, (
                    f"drawdown {drawdown:.2%} is back under {self.alert_at:.0%}: protocol "
                    "re-armed")))
            self.announced = 0
            self.preservation_trigger = None
            return actions
        level = self._level(drawdown)
        if level > self.announced:
            self.announced = level
            text = {1: "alert only",
                    2: f"entry size x{self.cut_multiplier:g}",
                    3: f"entry size x{self.defensive_multiplier:g}, no "
                       f"{'/'.join(self.banned_tags) or 'banned'} coins"}[level]
            actions.append(RiskAction("alert", self.name, (
                f"drawdown {drawdown:.2%} from peak {snapshot.peak_equity:.2f}: {text}")))
        trigger = (self.preservation_at if self.preservation_trigger is None
                   else self.preservation_trigger)
        if reached(drawdown, trigger) and self.preservation_until is None:
            self.preservation_until = now + int(self.preservation_hours * _NS_PER_HOUR)
            self.preservation_trigger = drawdown + self.rearm_step
            reason = (f"drawdown {drawdown:.2%} from peak {snapshot.peak_equity:.2f} reached "
                      f"{trigger:.2%}: capital preservation, no entries for "
                      f"{self.preservation_hours:g} h until {_at(self.preservation_until)}")
            actions.append(RiskAction("block_entries", self.name, reason))
            if self.flatten_on_preservation:
                actions.append(RiskAction("flatten_all", self.name, reason))
        return actions

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.preservation_until is not None and snapshot.ts_event < self.preservation_until:
            return self.reject(f"capital preservation until {_at(self.preservation_until)} "
                               f"(drawdown {snapshot.drawdown:.2%})")
        drawdown = snapshot.drawdown
        if not math.isfinite(drawdown):
            return self.reject(f"drawdown unknown (equity {snapshot.equity!r}, peak "
                               f"{snapshot.peak_equity!r})")
        where = f"drawdown {drawdown:.2%} from peak {snapshot.peak_equity:.2f}"
        if reached(drawdown, self.defensive_at):
            symbol = proposal.intent.symbol
            tags = self.symbol_tags.get(symbol, self.default_tags)
            banned = sorted(set(tags) & set(self.banned_tags))
            if banned:
                return self.reject(f"{where} >= {self.defensive_at:.0%}: no {banned[0]} coins "
                                   f"({symbol})")
            return scale_size(self, proposal, self.defensive_multiplier,
                              f"{where} >= {self.defensive_at:.0%}: size "
                              f"x{self.defensive_multiplier:g}")
        if reached(drawdown, self.cut_at):
            return scale_size(self, proposal, self.cut_multiplier,
                              f"{where} >= {self.cut_at:.0%}: size x{self.cut_multiplier:g}")
        return self.approve(proposal, f"{where} under the {self.cut_at:.0%} size cut")


@register_rule
class DrawdownProtocolConfig(RuleConfig):
    rule: Literal["drawdown_protocol"] = "drawdown_protocol"
    needs_assets: ClassVar[bool] = True
    alert_at: float = Field(0.05, gt=0, lt=1)
    cut_at: float = Field(0.10, gt=0, lt=1)
    cut_multiplier: float = Field(0.7, gt=0, le=1)
    defensive_at: float = Field(0.15, gt=0, lt=1)
    defensive_multiplier: float = Field(0.5, gt=0, le=1)
    banned_tags: tuple[str, ...] = ("meme",)
    preservation_at: float = Field(0.20, gt=0, lt=1)
    preservation_hours: float = Field(48.0, gt=0, le=24 * 30)
    flatten_on_preservation: bool = True
    rearm_step: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> DrawdownProtocolConfig:
        levels = [self.alert_at, self.cut_at, self.defensive_at, self.preservation_at]
        if any(later <= earlier for earlier, later in pairwise(levels)):
            raise ValueError("alert_at < cut_at < defensive_at < preservation_at must hold, got "
                             f"{levels}")
        return self

    def build(self, profile: RiskProfile) -> RiskRule:
        return DrawdownProtocol(
            alert_at=self.alert_at, cut_at=self.cut_at, cut_multiplier=self.cut_multiplier,
            defensive_at=self.defensive_at, defensive_multiplier=self.defensive_multiplier,
            banned_tags=self.banned_tags, preservation_at=self.preservation_at,
            preservation_hours=self.preservation_hours,
            flatten_on_preservation=self.flatten_on_preservation, rearm_step=self.rearm_step,
            symbol_tags={symbol: info.tags for symbol, info in profile.assets.items()},
            default_tags=profile.default_asset.tags)


# ------------------------------------------------------------------ losing streak


@dataclass
class LosingStreakPhases(RiskRule):
    """Smaller and more selective entries as losses run on, then a pause; a win resets."""

    name: ClassVar[str] = "losing_streak_phases"
    stage: ClassVar[Stage] = "size"
    reduce_at: int = 5
    reduce_multiplier: float = 0.5
    selective_at: int = 8
    selective_multiplier: float = 0.25
    min_score: float = 5.0
    pause_at: int = 10
    pause_hours: float | None = 24.0  # None: until a manual reset
    # state
    losses: int = 0
    paused_until: int | None = None
    paused_until_reset: bool = False

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        actions: list[RiskAction] = []
        now = snapshot.ts_event
        if self.paused_until is not None and now >= self.paused_until:
            actions.append(RiskAction("alert", self.name, (
                f"losing-streak pause ended at {_at(self.paused_until)}; entries resume at size "
                f"x{self.selective_multiplier:g}, score >= {self.min_score:g} only")))
            self.paused_until = None
        if not isinstance(event, TradeClosed) or not math.isfinite(event.pnl):
            return actions
        if event.pnl > 0:
            if self.losses >= self.reduce_at:
                actions.append(RiskAction("alert", self.name, (
                    f"{event.symbol} won {event.pnl:.2f}, ending a streak of {self.losses} "
                    "losses: streak sizing lifted")))
            self.losses = 0
            return actions
        if event.pnl == 0:
            return actions
        self.losses += 1
        streak = f"{self.losses} consecutive losses (last {event.symbol} {event.pnl:.2f})"
        if self.losses >= self.pause_at:
            if self.pause_hours is None:
                self.paused_until_reset = True
                text = f"{streak}: entries paused until a manual reset"
            else:
                self.paused_until = now + int(self.pause_hours * _NS_PER_HOUR)
                text = (f"{streak}: entries paused for {self.pause_hours:g} h until "
                        f"{_at(self.paused_until)}")
            actions.append(RiskAction("block_entries", self.name, text))
        elif self.losses == self.selective_at:
            actions.append(RiskAction("alert", self.name, (
                f"{streak}: size x{self.selective_multiplier:g}, only signals scored >= "
                f"{self.min_score:g}")))
        elif self.losses == self.reduce_at:
            actions.append(RiskAction("alert", self.name,
                                      f"{streak}: size x{self.reduce_multiplier:g}"))
        return actions

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.paused_until_reset:
            return self.reject(f"{self.losses} consecutive losses: entries paused until a "
                               "manual reset")
        if self.paused_until is not None and snapshot.ts_event < self.paused_until:
            return self.reject(f"{self.losses} consecutive losses: entries paused until "
                               f"{_at(self.paused_until)}")
        if self.losses >= self.selective_at:
            score = proposal.intent.score
            if score is None or not math.isfinite(score):
                return self.reject(f"{self.losses} consecutive losses: only signals scored >= "
                                   f"{self.min_score:g} trade, and the intent has no score")
            if score < self.min_score:
                return self.reject(f"{self.losses} consecutive losses: only signals scored >= "
                                   f"{self.min_score:g} trade, this one scored {score:g}")
            return scale_size(self, proposal, self.selective_multiplier,
                              f"{self.losses} consecutive losses: size "
                              f"x{self.selective_multiplier:g} (score {score:g})")
        if self.losses >= self.reduce_at:
            return scale_size(self, proposal, self.reduce_multiplier,
                              f"{self.losses} consecutive losses: size x{self.reduce_multiplier:g}")
        return self.approve(proposal, f"{self.losses} consecutive losses, under {self.reduce_at}")

    def manual_reset(self) -> None:
        self.paused_until_reset = False


@register_rule
class LosingStreakPhasesConfig(RuleConfig):
    rule: Literal["losing_streak_phases"] = "losing_streak_phases"
    reduce_at: int = Field(5, ge=1)
    reduce_multiplier: float = Field(0.5, gt=0, le=1)
    selective_at: int = Field(8, ge=1)
    selective_multiplier: float = Field(0.25, gt=0, le=1)
    min_score: float = 5.0
    pause_at: int = Field(10, ge=1)
    pause_hours: float | None = Field(24.0, gt=0, le=24 * 30,
                                      description="null: paused until a manual reset")

    @model_validator(mode="after")
    def _ordered(self) -> LosingStreakPhasesConfig:
        if not self.reduce_at < self.selective_at < self.pause_at:
            raise ValueError("reduce_at < selective_at < pause_at must hold, got "
                             f"{self.reduce_at}, {self.selective_at}, {self.pause_at}")
        return self

    def build(self, profile: RiskProfile) -> RiskRule:
        return LosingStreakPhases(
            reduce_at=self.reduce_at, reduce_multiplier=self.reduce_multiplier,
            selective_at=self.selective_at, selective_multiplier=self.selective_multiplier,
            min_score=self.min_score, pause_at=self.pause_at, pause_hours=self.pause_hours)


# ------------------------------------------------------------------ allocation caps


@dataclass
class AllocationCaps(RiskRule):
    """Gross notional per asset class and per sector within a fraction of equity."""

    name: ClassVar[str] = "allocation_caps"
    stage: ClassVar[Stage] = "limit"
    asset_class_caps: dict[str, float] = field(default_factory=dict)
    sector_caps: dict[str, float] = field(default_factory=dict)
    default_asset_class_cap: float | None = None
    default_sector_cap: float | None = None
    classes: dict[str, tuple[str, str]] = field(default_factory=dict)  # symbol: (class, sector)
    default_class: tuple[str, str] = ("crypto", "other")

    def classify(self, symbol: str) -> tuple[str, str]:
        return self.classes.get(symbol, self.default_class)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        intent = proposal.intent
        asset_class, sector = self.classify(intent.symbol)
        rooms: list[tuple[float, str]] = []
        for index, (kind, group, caps, default) in enumerate((
                ("asset class", asset_class, self.asset_class_caps, self.default_asset_class_cap),
                ("sector", sector, self.sector_caps, self.default_sector_cap))):
            cap = caps.get(group, default)
            if cap is None:
                continue
            used = sum(position.notional for position in snapshot.positions
                       if self.classify(position.symbol)[index] == group)
            room = (cap * snapshot.equity - used) / intent.reference_price
            rooms.append((room, f"{kind} {group!r} cap {cap:.0%} of equity (in use "
                          f"{used:.2f} of {cap * snapshot.equity:.2f})"))
        if not rooms:
            return self.approve(proposal, f"no cap for {asset_class!r} or {sector!r}")
        room, what = min(rooms)
        return self.fit(proposal, room, what)


@register_rule
class AllocationCapsConfig(RuleConfig):
    rule: Literal["allocation_caps"] = "allocation_caps"
    needs_assets: ClassVar[bool] = True
    asset_class_caps: dict[str, float] = Field(default_factory=dict)
    sector_caps: dict[str, float] = Field(default_factory=dict)
    default_asset_class_cap: float | None = Field(None, gt=0)
    default_sector_cap: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _caps(self) -> AllocationCapsConfig:
        for key, caps in (("asset_class_caps", self.asset_class_caps),
                          ("sector_caps", self.sector_caps)):
            for group, cap in caps.items():
                if not (math.isfinite(cap) and cap > 0):
                    raise ValueError(f"{key}.{group} must be finite and > 0, got {cap!r}")
        if not (self.asset_class_caps or self.sector_caps or self.default_asset_class_cap
                or self.default_sector_cap):
            raise ValueError("set at least one cap (asset_class_caps, sector_caps or a default)")
        return self

    def build(self, profile: RiskProfile) -> RiskRule:
        return AllocationCaps(
            asset_class_caps=dict(self.asset_class_caps), sector_caps=dict(self.sector_caps),
            default_asset_class_cap=self.default_asset_class_cap,
            default_sector_cap=self.default_sector_cap,
            classes={symbol: (info.asset_class, info.sector)
                     for symbol, info in profile.assets.items()},
            default_class=(profile.default_asset.asset_class, profile.default_asset.sector))
