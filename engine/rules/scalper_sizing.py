"""The order-flow scalper's sizing rules: funding-rate bias, growth milestones and dynamic
leverage (profile `orderflow_scalper`; its protective rules are in `engine.rules.scalper`).

Intent features read (attached by the strategy in `OrderIntent.features`):

- `funding_rate` (funding_bias): perpetual funding per 8 h as a fraction (0.0001 = 0.01%).
  Missing or not finite: reject naming the feature (with `require_funding_rate: false`: 0, no
  bias, for venues without funding).
- `confidence` (dynamic_leverage): signal confidence in [0, 1]. Missing or outside [0, 1]:
  reject naming the feature.
- `volatility` (dynamic_leverage): realised volatility of 1-minute returns as a fraction.
  Missing or negative: reject naming the feature.

The rules:

- `funding_bias` (size): longs pay funding when the rate is positive, shorts when it is negative,
  so the rate this entry would pay is `side x funding_rate`. Above `reject_above` the entry is
  rejected; above `downsize_above` a risk-sized quantity is multiplied by `downsize_factor` and a
  fixed quantity is rejected (fixed sizes are never silently changed). Receiving funding never
  upsizes. Thresholds are strict ("above").
- `growth_milestones` (size): equity milestones relative to the start equity (the first equity
  the rule sees, or `start_equity`) unlock a size factor and a leverage cap; the first milestone
  must be at +0% (the base). A risk-sized quantity is multiplied by the milestone's size factor
  and capped so gross notional stays within its `max_leverage` x equity; a fixed quantity keeps
  its size (the factor scales the risk budget it did not use) but is rejected beyond the cap.
  With `sticky: true` a milestone once reached stays unlocked when equity falls back (the loss
  limits, the drawdown cap of `dynamic_leverage` and the margin rule guard the way down); with
  `sticky: false` the milestone follows equity and is relocked below its threshold. Each change
  journals an "alert".
- `dynamic_leverage` (limit): the allowed leverage is the minimum of the applicable candidates:
  the base leverage of the highest confidence level the signal reaches (below the lowest level:
  reject); base x `high_volatility_factor` when `volatility` is above `volatility_threshold`;
  base x `recent_loss_factor` when a round trip closed at a loss (P&L < 0 after fees) less than
  `recent_loss_minutes` ago; `drawdown_leverage` when the drawdown from peak equity is above
  `drawdown_pct`. Gross notional including the entry must stay within allowed x equity: a
  risk-sized quantity is capped, a fixed one that does not fit is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.rules.base import (
    MIN_CAP_FRACTION,
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
from engine.timeframes import NS_PER_MINUTE

# A drawdown of exactly `drawdown_pct` in decimal is not "over" it despite binary rounding.
_TOLERANCE = 1e-9

# ------------------------------------------------------------------ funding bias


@dataclass
class FundingBias(RiskRule):
    """Reject or downsize entries on the side that pays funding."""

    name: ClassVar[str] = "funding_bias"
    stage: ClassVar[Stage] = "size"
    downsize_above: float = 0.0003
    reject_above: float = 0.001
    downsize_factor: float = 0.5
    require_funding_rate: bool = True

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        rate = proposal.feature("funding_rate")
        if rate is None:
            if self.require_funding_rate:
                return self.reject("feature funding_rate is missing or not finite; entries need "
                                   "it to know which side pays funding")
            rate = 0.0
        paid = proposal.intent.side * rate
        if paid > self.reject_above:
            return self.reject(f"entry would pay funding {paid:.4%} per 8h, above "
                               f"{self.reject_above:.4%}")
        if not paid > self.downsize_above:
            return self.approve(proposal, f"funding paid {paid:.4%} per 8h within "
                                f"{self.downsize_above:.4%}")
        quantity = proposal.quantity
        if quantity is None:
            return self.reject("no quantity to downsize: list funding_bias after the sizer")
        if not proposal.sized:
            return self.reject(f"entry would pay funding {paid:.4%} per 8h, above "
                               f"{self.downsize_above:.4%}; a fixed quantity is not downsized")
        return self.sized(quantity * self.downsize_factor,
                          f"funding paid {paid:.4%} per 8h above {self.downsize_above:.4%}: "
                          f"size x{self.downsize_factor:g} ({quantity:g} -> "
                          f"{quantity * self.downsize_factor:g})")


@register_rule
class FundingBiasConfig(RuleConfig):
    rule: Literal["funding_bias"] = "funding_bias"
    downsize_above: float = Field(0.0003, ge=0, description="funding paid per 8h that halves")
    reject_above: float = Field(0.001, ge=0, description="funding paid per 8h that rejects")
    downsize_factor: float = Field(0.5, gt=0, lt=1)
    require_funding_rate: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> FundingBiasConfig:
        if not self.downsize_above < self.reject_above:
            raise ValueError(f"downsize_above ({self.downsize_above}) must be below "
                             f"reject_above ({self.reject_above})")
        return self

    def build(self, profile: RiskProfile) -> RiskRule:
        return FundingBias(downsize_above=self.downsize_above, reject_above=self.reject_above,
                           downsize_factor=self.downsize_factor,
                           require_funding_rate=self.require_funding_rate)


# ------------------------------------------------------------------ growth milestones


class Milestone(BaseModel):
    """Equity gain over the start that unlocks a size factor and a leverage cap."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    gain_pct: float = Field(ge=0, description="equity gain over the start, 0.25 = +25%")
    size_factor: float = Field(gt=0, le=1, description="multiplies the risk-sized quantity")
    max_leverage: float = Field(gt=0, description="gross notional cap, x equity")


@dataclass
class GrowthMilestones(RiskRule):
    """Size factor and leverage cap of the milestone equity has unlocked."""

    name: ClassVar[str] = "growth_milestones"
    stage: ClassVar[Stage] = "size"
    milestones: tuple[Milestone, ...] = (Milestone(gain_pct=0.0, size_factor=1.0,
                                                   max_leverage=3.0),)
    sticky: bool = True
    start_equity: float | None = None
    reached: int = 0  # index of the milestone in force after the last event

    def _level_of(self, equity: float, start: float) -> int:
        level = 0
        for index, milestone in enumerate(self.milestones):
            if equity >= start * (1.0 + milestone.gain_pct):
                level = index
        return level

    def _in_force(self, equity: float) -> int:
        if self.start_equity is None:
            self.start_equity = equity
        level = self._level_of(equity, self.start_equity)
        return max(level, self.reached) if self.sticky else level

    def _describe(self, level: int) -> str:
        milestone = self.milestones[level]
        return (f"milestone +{milestone.gain_pct:.0%}: size x{milestone.size_factor:g}, "
                f"max leverage {milestone.max_leverage:g}x")

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, EquityObserved | DayStarted) or not math.isfinite(
                snapshot.equity):
            return ()
        level = self._in_force(snapshot.equity)
        if level == self.reached:
            return ()
        verb = "unlocked" if level > self.reached else "relocked to"
        self.reached = level
        reason = (f"equity {snapshot.equity:.2f} vs start {self.start_equity:.2f}: {verb} "
                  f"{self._describe(level)}")
        return (RiskAction("alert", self.name, reason),)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        level = self._in_force(snapshot.equity)
        milestone = self.milestones[level]
        what = self._describe(level)
        room = ((milestone.max_leverage * snapshot.equity - snapshot.gross_notional)
                / proposal.intent.reference_price)
        quantity = proposal.quantity
        if quantity is None:
            return self.reject("no quantity to scale: list growth_milestones after the sizer")
        if not proposal.sized:
            return self.fit(proposal, room, what)
        target = quantity * milestone.size_factor
        if room <= target * MIN_CAP_FRACTION:
            return self.reject(f"{what}: no leverage room left (fits {max(room, 0.0):g})")
        sized = min(target, room)
        if sized == quantity:
            return self.approve(proposal, f"{what}: full size within the cap")
        capped = " (leverage cap)" if room < target else ""
        return self.sized(sized, f"{what}: quantity {quantity:g} -> {sized:g}{capped}")


@register_rule
class GrowthMilestonesConfig(RuleConfig):
    rule: Literal["growth_milestones"] = "growth_milestones"
    milestones: tuple[Milestone, ...] = Field(min_length=1)
    sticky: bool = True
    start_equity: float | None = Field(None, gt=0, description="default: the first equity seen")

    @model_validator(mode="after")
    def _ordered(self) -> GrowthMilestonesConfig:
        gains = [milestone.gain_pct for milestone in self.milestones]
        if gains[0] != 0:
            raise ValueError("milestones: the first milestone must have gain_pct 0 (the base)")
        if any(later <= earlier for earlier, later in pairwise(gains)):
            raise ValueError(f"milestones: gain_pct must increase strictly, got {gains}")
        return self

    def build(self, profile: RiskProfile) -> RiskRule:
        return GrowthMilestones(milestones=self.milestones, sticky=self.sticky,
                                start_equity=self.start_equity)


# ------------------------------------------------------------------ dynamic leverage


class ConfidenceLevel(BaseModel):
    """The base leverage a signal of at least `min_confidence` may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_confidence: float = Field(ge=0, le=1)
    leverage: float = Field(gt=0)


@dataclass
class DynamicLeverage(RiskRule):
    """Gross notional cap from confidence, volatility, a recent loss and the drawdown."""

    name: ClassVar[str] = "dynamic_leverage"
    stage: ClassVar[Stage] = "limit"
    confidence_levels: tuple[ConfidenceLevel, ...] = (
        ConfidenceLevel(min_confidence=0.0, leverage=3.0),)
    volatility_threshold: float = 0.002
    high_volatility_factor: float = 0.5
    recent_loss_ns: int = 15 * NS_PER_MINUTE
    recent_loss_factor: float = 0.5
    drawdown_pct: float = 0.05
    drawdown_leverage: float = 2.0
    last_loss_ts: int | None = None

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, TradeClosed) and event.pnl < 0:
            self.last_loss_ts = max(event.ts_event, self.last_loss_ts or event.ts_event)
        return ()

    def allowed(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> tuple[float, str]:
        """(allowed leverage, why) or (NaN, why not)."""
        confidence = proposal.feature("confidence")
        volatility = proposal.feature("volatility")
        if confidence is None or not 0 <= confidence <= 1:
            return math.nan, f"feature confidence is missing or outside [0, 1] ({confidence})"
        if volatility is None or volatility < 0:
            return math.nan, f"feature volatility is missing or negative ({volatility})"
        base = math.nan
        for level in self.confidence_levels:
            if confidence >= level.min_confidence:
                base = level.leverage
        if math.isnan(base):
            lowest = self.confidence_levels[0].min_confidence
            return math.nan, f"confidence {confidence:g} below the lowest level {lowest:g}"
        candidates = [(base, f"confidence {confidence:g}: base {base:g}x")]
        if volatility > self.volatility_threshold:
            candidates.append((base * self.high_volatility_factor,
                               f"volatility {volatility:g} > {self.volatility_threshold:g}: "
                               f"{base * self.high_volatility_factor:g}x"))
        since = (snapshot.ts_event - self.last_loss_ts if self.last_loss_ts is not None
                 else math.inf)
        if since < self.recent_loss_ns:
            candidates.append((base * self.recent_loss_factor,
                               f"loss {since / NS_PER_MINUTE:.1f} min ago: "
                               f"{base * self.recent_loss_factor:g}x"))
        drawdown = snapshot.drawdown
        if not math.isfinite(drawdown):
            return math.nan, "drawdown is not finite"
        if drawdown > self.drawdown_pct * (1.0 + _TOLERANCE):
            candidates.append((self.drawdown_leverage, f"drawdown {drawdown:.2%} > "
                               f"{self.drawdown_pct:.0%}: {self.drawdown_leverage:g}x"))
        leverage = min(value for value, _ in candidates)
        return leverage, "; ".join(why for _, why in candidates)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        leverage, why = self.allowed(proposal, snapshot)
        if math.isnan(leverage):
            return self.reject(why)
        room = leverage * snapshot.equity - snapshot.gross_notional
        return self.fit(proposal, room / proposal.intent.reference_price,
                        f"dynamic leverage {leverage:g}x ({why})")


@register_rule
class DynamicLeverageConfig(RuleConfig):
    rule: Literal["dynamic_leverage"] = "dynamic_leverage"
    confidence_levels: tuple[ConfidenceLevel, ...] = Field(min_length=1)
    volatility_threshold: float = Field(0.002, gt=0, description="1-min realised vol")
    high_volatility_factor: float = Field(0.5, gt=0, le=1)
    recent_loss_minutes: float = Field(15.0, ge=0)
    recent_loss_factor: float = Field(0.5, gt=0, le=1)
    drawdown_pct: float = Field(0.05, gt=0, lt=1)
    drawdown_leverage: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> DynamicLeverageConfig:
        levels = [level.min_confidence for level in self.confidence_levels]
        if any(later <= earlier for earlier, later in pairwise(levels)):
            raise ValueError(f"confidence_levels: min_confidence must increase strictly, "
                             f"got {levels}")
        return self

    def build(self, profile: RiskProfile) -> RiskRule:
        return DynamicLeverage(
            confidence_levels=self.confidence_levels,
            volatility_threshold=self.volatility_threshold,
            high_volatility_factor=self.high_volatility_factor,
            recent_loss_ns=round(self.recent_loss_minutes * NS_PER_MINUTE),
            recent_loss_factor=self.recent_loss_factor, drawdown_pct=self.drawdown_pct,
            drawdown_leverage=self.drawdown_leverage)
