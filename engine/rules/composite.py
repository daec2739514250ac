"""Autonomous composite profile, part 1: capital tiers, with promotion and demotion.

The plan trades a small account up a ladder of capital tiers (defaults: micro $500-2k, small
2k-5k, medium 5k-10k, large 10k+). Each tier has its own risk per trade, maximum open positions,
maximum single position (notional as a fraction of equity) and maximum gross leverage.

- `capital_tier` (size stage, the base sizer): an intent that left sizing to risk gets
  `risk_per_trade x equity / stop distance` of the *active* tier; a fixed quantity passes
  unchanged (the limits below still apply to it). Below the lowest tier's `min_equity` ($500)
  every entry is rejected, naming the equity and the floor.
- `capital_tier_limits` (limit stage): the active tier's position count (a new symbol beyond
  `max_positions` is rejected), single-position notional and gross leverage (a risk-sized
  quantity is capped to the tighter of the two, a fixed one that does not fit is rejected). It
  reads the tier table of the profile's `capital_tier` entry, so the profile lists it once.

Active tier versus equity tier. The equity tier is the highest bracket whose `min_equity` the
equity reaches; the active tier is the one the rules trade with. It starts at the equity tier of
the first equity seen. It is *promoted* one step at a time, only while the equity tier is higher
and the track record since entering the active tier qualifies: at least `promotion.min_trades`
closed round trips, win rate and profit factor at or above the minimums and the largest drawdown
since entering the tier (from the tier's own equity peak) at or below `promotion.max_drawdown`.
It is *demoted* one step when, after `demotion.min_trades` trades, the win rate or the profit
factor is below its floor, or at once when the tier drawdown reaches `demotion.max_drawdown`;
and straight to the equity tier when equity falls below the active tier's floor. Every change
resets the track record and is journaled as an "alert" RiskAction with the numbers in its reason.
A trade with zero P&L counts as a trade but neither as a win nor a loss; the profit factor of a
record without losing trades is infinite.

Features read: none. Both rules use the stop distance, the equity and the projected positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

# Ratios and drawdowns count as meeting a threshold within this much float noise (1 - 1800/2000
# is 0.09999999999999998).
THRESHOLD_TOLERANCE = 1e-12


class TierConfig(BaseModel):
    """One capital tier: from `min_equity` up to the next tier's floor."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    min_equity: float = Field(gt=0, description="equity at which the bracket starts")
    risk_per_trade: float = Field(gt=0, le=0.1, description="fraction of equity risked per trade")
    max_positions: int = Field(ge=1)
    max_position_pct: float = Field(gt=0, description="one symbol's notional / equity")
    max_leverage: float = Field(gt=0, description="gross notional / equity")


class PromotionConfig(BaseModel):
    """What the track record in the active tier needs before the next tier opens."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_trades: int = Field(20, ge=1)
    min_win_rate: float = Field(0.45, ge=0, le=1)
    min_profit_factor: float = Field(1.3, ge=0)
    max_drawdown: float = Field(0.10, gt=0, le=1)


class DemotionConfig(BaseModel):
    """Floors under which the active tier steps down one bracket."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_trades: int = Field(10, ge=1, description="the ratio floors apply from this many trades")
    win_rate_floor: float = Field(0.30, ge=0, le=1)
    profit_factor_floor: float = Field(0.8, ge=0)
    max_drawdown: float = Field(0.15, gt=0, le=1, description="applies at any trade count")


DEFAULT_TIERS = (
    TierConfig(name="micro", min_equity=500, risk_per_trade=0.02, max_positions=2,
               max_position_pct=0.75, max_leverage=1.5),
    TierConfig(name="small", min_equity=2_000, risk_per_trade=0.015, max_positions=3,
               max_position_pct=0.75, max_leverage=2.0),
    TierConfig(name="medium", min_equity=5_000, risk_per_trade=0.0125, max_positions=4,
               max_position_pct=0.6, max_leverage=2.5),
    TierConfig(name="large", min_equity=10_000, risk_per_trade=0.01, max_positions=5,
               max_position_pct=0.5, max_leverage=3.0),
)


@dataclass
class TierLadder:
    """The active tier and the track record since it was entered. Fed events in order by the
    rules that use it; `update` returns what changed, as journal reasons."""

    tiers: tuple[TierConfig, ...]
    promotion: PromotionConfig
    demotion: DemotionConfig
    started: bool = False
    active: int | None = None  # index into tiers; None: below the lowest tier
    trades: int = 0
    wins: int = 0
    gross_win: float = 0.0
    gross_loss: float = 0.0
    tier_peak: float = math.nan
    tier_max_drawdown: float = 0.0

    def equity_tier(self, equity: float) -> int | None:
        """The highest bracket `equity` reaches, or None below the lowest (or non-finite)."""
        if not math.isfinite(equity):
            return None
        found: int | None = None
        for index, tier in enumerate(self.tiers):
            if equity >= tier.min_equity:
                found = index
        return found

    def effective(self, equity: float) -> TierConfig | None:
        """The tier to trade with at `equity`: the active one, never above the equity tier."""
        by_equity = self.equity_tier(equity)
        if by_equity is None:
            return None
        if not self.started:  # what the first update will choose
            return self.tiers[by_equity]
        if self.active is None:  # fell below the lowest tier; the next update re-enters
            return None
        return self.tiers[min(self.active, by_equity)]

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else math.nan

    @property
    def profit_factor(self) -> float:
        if self.gross_loss > 0:
            return self.gross_win / self.gross_loss
        return math.inf if self.gross_win > 0 else (0.0 if self.trades else math.nan)

    def record(self, closed: TradeClosed) -> None:
        if not math.isfinite(closed.pnl):
            return
        self.trades += 1
        if closed.pnl > 0:
            self.wins += 1
            self.gross_win += closed.pnl
        elif closed.pnl < 0:
            self.gross_loss -= closed.pnl

    def _enter(self, index: int | None, equity: float) -> None:
        self.active = index
        self.trades = self.wins = 0
        self.gross_win = self.gross_loss = 0.0
        self.tier_peak = equity
        self.tier_max_drawdown = 0.0

    def _name(self, index: int | None) -> str:
        return "none (no entries)" if index is None else repr(self.tiers[index].name)

    def _record_text(self) -> str:
        return (f"{self.trades} trades, win rate {self.win_rate:.1%}, profit factor "
                f"{self.profit_factor:.2f}, tier drawdown {self.tier_max_drawdown:.1%}")

    def update(self, equity: float) -> list[str]:
        """Re-evaluate the active tier at `equity`; return a reason per change (at most one)."""
        if not math.isfinite(equity):
            return []
        by_equity = self.equity_tier(equity)
        if not self.started:
            self.started = True
            self._enter(by_equity, equity)
            return []
        self.tier_peak = max(self.tier_peak, equity)
        if self.tier_peak > 0:
            self.tier_max_drawdown = max(self.tier_max_drawdown, 1.0 - equity / self.tier_peak)
        old = self.active
        if old is not None and (by_equity is None or by_equity < old):
            floor = self.tiers[old].min_equity
            text = (f"demoted from {self._name(old)} to {self._name(by_equity)}: equity "
                    f"{equity:.2f} fell below the tier floor {floor:.2f}")
            self._enter(by_equity, equity)
            return [text]
        if old is None:
            if by_equity is None:
                return []
            self._enter(0, equity)
            return [f"equity {equity:.2f} is back above {self.tiers[0].min_equity:.2f}: "
                    f"entries resume in {self._name(0)}"]
        demote = self.demotion
        failing: list[str] = []
        if self.tier_max_drawdown >= demote.max_drawdown - THRESHOLD_TOLERANCE:
            failing.append(f"tier drawdown {self.tier_max_drawdown:.1%} >= "
                           f"{demote.max_drawdown:.1%}")
        if self.trades >= demote.min_trades:
            if self.win_rate < demote.win_rate_floor - THRESHOLD_TOLERANCE:
                failing.append(f"win rate {self.win_rate:.1%} < {demote.win_rate_floor:.1%}")
            if self.profit_factor < demote.profit_factor_floor - THRESHOLD_TOLERANCE:
                failing.append(f"profit factor {self.profit_factor:.2f} < "
                               f"{demote.profit_factor_floor:.2f}")
        if failing and old > 0:
            text = (f"demoted from {self._name(old)} to {self._name(old - 1)}: "
                    f"{'; '.join(failing)} ({self._record_text()})")
            self._enter(old - 1, equity)
            return [text]
        if by_equity is not None and by_equity > old and self._qualifies():
            promote = self.promotion
            text = (f"promoted from {self._name(old)} to {self._name(old + 1)}: "
                    f"{self._record_text()} (needs >= {promote.min_trades} trades, win rate >= "
                    f"{promote.min_win_rate:.1%}, profit factor >= "
                    f"{promote.min_profit_factor:.2f}, tier drawdown <= "
                    f"{promote.max_drawdown:.1%}); equity {equity:.2f} is in "
                    f"{self._name(by_equity)}")
            self._enter(old + 1, equity)
            return [text]
        return []

    def _qualifies(self) -> bool:
        promote = self.promotion
        return (self.trades >= promote.min_trades
                and self.win_rate >= promote.min_win_rate - THRESHOLD_TOLERANCE
                and self.profit_factor >= promote.min_profit_factor - THRESHOLD_TOLERANCE
                and self.tier_max_drawdown <= promote.max_drawdown + THRESHOLD_TOLERANCE)


def _ladder_observe(ladder: TierLadder, event: RiskEvent, snapshot: PortfolioSnapshot
                    ) -> list[str]:
    if isinstance(event, TradeClosed):
        ladder.record(event)
        return []
    if isinstance(event, EquityObserved | DayStarted):
        return ladder.update(snapshot.equity)
    return []


def _below_floor(ladder: TierLadder, equity: float) -> str:
    lowest = ladder.tiers[0]
    return (f"equity {equity:.2f} is below the lowest capital tier ({lowest.name!r} from "
            f"{lowest.min_equity:.2f}): no entries")


@dataclass
class CapitalTierSizer(RiskRule):
    """Base sizer: the active tier's risk per trade over the stop distance; no entries below
    the lowest tier. Journals promotions and demotions."""

    name: ClassVar[str] = "capital_tier"
    stage: ClassVar[Stage] = "size"
    ladder: TierLadder = field(
        default_factory=lambda: TierLadder(DEFAULT_TIERS, PromotionConfig(), DemotionConfig()))

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        return tuple(RiskAction("alert", self.name, text)
                     for text in _ladder_observe(self.ladder, event, snapshot))

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        tier = self.ladder.effective(snapshot.equity)
        if tier is None:
            return self.reject(_below_floor(self.ladder, snapshot.equity))
        if proposal.quantity is not None:
            return self.approve(proposal, f"quantity given (tier {tier.name!r})")
        quantity = tier.risk_per_trade * snapshot.equity / proposal.stop_distance
        return self.sized(quantity, f"tier {tier.name!r}: {tier.risk_per_trade:.2%} of equity "
                          f"{snapshot.equity:.2f} over stop distance {proposal.stop_distance:g}")


@dataclass
class CapitalTierLimits(RiskRule):
    """The active tier's position count, single-position notional and gross leverage."""

    name: ClassVar[str] = "capital_tier_limits"
    stage: ClassVar[Stage] = "limit"
    ladder: TierLadder = field(
        default_factory=lambda: TierLadder(DEFAULT_TIERS, PromotionConfig(), DemotionConfig()))

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        _ladder_observe(self.ladder, event, snapshot)  # capital_tier journals the changes
        return ()

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        tier = self.ladder.effective(snapshot.equity)
        if tier is None:
            return self.reject(_below_floor(self.ladder, snapshot.equity))
        if snapshot.symbol_quantity == 0 and snapshot.open_positions >= tier.max_positions:
            return self.reject(f"tier {tier.name!r}: {snapshot.open_positions} positions open, "
                               f"limit {tier.max_positions}")
        price = proposal.intent.reference_price
        held = snapshot.position(proposal.intent.symbol)
        held_notional = held.notional if held is not None else 0.0
        single_room = (tier.max_position_pct * snapshot.equity - held_notional) / price
        leverage_room = (tier.max_leverage * snapshot.equity - snapshot.gross_notional) / price
        if single_room <= leverage_room:
            return self.fit(proposal, single_room, f"tier {tier.name!r} single position "
                            f"{tier.max_position_pct:.0%} of equity")
        return self.fit(proposal, leverage_room,
                        f"tier {tier.name!r} leverage {tier.max_leverage:g}x")


@register_rule
class CapitalTierConfig(RuleConfig):
    rule: Literal["capital_tier"] = "capital_tier"
    tiers: tuple[TierConfig, ...] = DEFAULT_TIERS
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    demotion: DemotionConfig = Field(default_factory=DemotionConfig)

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: tuple[TierConfig, ...]) -> tuple[TierConfig, ...]:
        if not tiers:
            raise ValueError("needs at least one tier")
        floors = [tier.min_equity for tier in tiers]
        if any(later <= earlier for earlier, later in pairwise(floors)):
            raise ValueError(f"min_equity must increase from tier to tier, got {floors}")
        names = [tier.name for tier in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        return tiers

    def ladder(self) -> TierLadder:
        return TierLadder(self.tiers, self.promotion, self.demotion)

    def build(self, profile: RiskProfile) -> RiskRule:
        return CapitalTierSizer(ladder=self.ladder())


@register_rule
class CapitalTierLimitsConfig(RuleConfig):
    rule: Literal["capital_tier_limits"] = "capital_tier_limits"

    def build(self, profile: RiskProfile) -> RiskRule:
        for config in profile.rules:
            if isinstance(config, CapitalTierConfig):
                return CapitalTierLimits(ladder=config.ladder())
        raise ValueError(f"profile {profile.name!r}: capital_tier_limits needs a capital_tier "
                         "rule (its tier table) in the same profile")
