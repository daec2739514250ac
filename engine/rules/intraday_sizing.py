"""Intraday breakout plan: sizing and allocation rules (ATR scaling, losing-streak half size,
positions and leverage per asset class, the single-position heat share).

The base size is the core `fixed_fractional` (list it before the modifiers). Modifiers scale only
a quantity risk chose (`proposal.sized`): a fixed quantity the strategy asked for is never
silently resized (docs/decisions.md) and passes them unchanged, still subject to every limit.

Features read (`OrderIntent.features`):
- `atr_volatility_scale` reads `atr` (the ATR now) and `atr_baseline` (its longer-run level, same
  unit). A risk-sized entry missing either, or with a value <= 0, is rejected naming the feature:
  there is no safe neutral scale when volatility is unknown.
- the other rules read no features.

Rules:
- `atr_volatility_scale` (size): quantity x min(max_scale, atr_baseline / atr). Calm markets
  (ATR under its baseline) size up to `max_scale`, wild ones size down without a floor.
- `losing_streak_half_size` (size): after `losses_in_row` losing round trips in a row
  (`TradeClosed.won` false, so a zero P&L counts as a loss) the next `reduced_trades` round trips
  that close are sized x `size_factor`; entries are still approved. Trades are counted when they
  close, because a rule does not learn whether an entry it passed was approved by the rules after
  it. Another full streak inside the reduced phase starts a new `reduced_trades` count. A manual
  reset does not shorten it. The phase start is journaled as an "alert".
- `max_positions_per_asset_class` (gate): a new symbol is refused when `limit` symbols of its
  asset class (from the profile's `assets` map, else `default_asset`) already hold a projected
  position. Adding to an open position is not a new position.
- `asset_class_leverage` (limit): the gross notional of the *entry's asset class* (projected
  positions of that class plus the entry) stays within the class's cap x equity: 3x crypto, 10x
  forex, 1x equity by default. Each class is capped on its own against the whole equity; a class
  without a configured cap is refused (fail closed). A portfolio-wide cap is the core
  `max_leverage`, which this plan does not list.
- `position_heat_share` (limit): one symbol's heat (its open heat plus quantity x stop distance of
  the entry) stays within `share` of the portfolio heat limit x equity, by default 30% of 5% =
  1.5% of equity. The heat limit is the profile's `portfolio_heat` limit unless set here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from engine.rules.base import (
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
    Stage,
    TradeClosed,
)
from engine.rules.intraday import profile_rule_value
from engine.rules.profile import RiskProfile, RuleConfig, register_rule


def asset_classes_of(profile: RiskProfile) -> tuple[dict[str, str], str]:
    """(symbol -> asset class, the class of unlisted symbols): plain data a rule can pickle."""
    return ({symbol: info.asset_class for symbol, info in profile.assets.items()},
            profile.default_asset.asset_class)


# ------------------------------------------------------------------ size modifiers


@dataclass
class AtrVolatilityScale(RiskRule):
    """Scale a risk-sized quantity by ATR baseline / ATR now, capped at `max_scale`."""

    name: ClassVar[str] = "atr_volatility_scale"
    stage: ClassVar[Stage] = "size"
    max_scale: float = 1.5

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if not proposal.sized:
            return self.approve(proposal, "fixed quantity: not scaled")
        if proposal.quantity is None:
            return self.reject("no base size to scale: list a base sizer (fixed_fractional) "
                               "before atr_volatility_scale")
        values: dict[str, float] = {}
        for feature in ("atr", "atr_baseline"):
            value = proposal.feature(feature)
            if value is None or value <= 0:
                return self.reject(f"feature {feature!r} missing or not > 0 "
                                   f"({proposal.intent.features.get(feature)!r}); the entry "
                                   "cannot be sized for volatility")
            values[feature] = value
        ratio = values["atr_baseline"] / values["atr"]
        scale = min(self.max_scale, ratio)
        if scale == 1.0:
            return self.approve(proposal, "ATR at its baseline: scale 1")
        return self.sized(proposal.quantity * scale,
                          f"ATR baseline {values['atr_baseline']:g} / ATR {values['atr']:g} = "
                          f"{ratio:.4g}, scale x{scale:.4g} (cap {self.max_scale:g}x)")


@register_rule
class AtrVolatilityScaleConfig(RuleConfig):
    rule: Literal["atr_volatility_scale"] = "atr_volatility_scale"
    max_scale: float = Field(1.5, gt=0)

    def build(self, profile: RiskProfile) -> RiskRule:
        return AtrVolatilityScale(max_scale=self.max_scale)


@dataclass
class LosingStreakHalfSize(RiskRule):
    """After `losses_in_row` losses in a row, size x `size_factor` for the next
    `reduced_trades` closed round trips."""

    name: ClassVar[str] = "losing_streak_half_size"
    stage: ClassVar[Stage] = "size"
    losses_in_row: int = 5
    size_factor: float = 0.5
    reduced_trades: int = 10
    consecutive_losses: int = 0
    reduced_left: int = 0

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, TradeClosed):
            return ()
        if self.reduced_left > 0:
            self.reduced_left -= 1
        self.consecutive_losses = 0 if event.won else self.consecutive_losses + 1
        if self.consecutive_losses < self.losses_in_row:
            return ()
        self.consecutive_losses = 0
        self.reduced_left = self.reduced_trades
        return (RiskAction("alert", self.name,
                           f"{self.losses_in_row} losing trades in a row (last {event.symbol} "
                           f"{event.pnl:.2f}); size x{self.size_factor:g} for the next "
                           f"{self.reduced_trades} trades"),)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.reduced_left <= 0:
            return self.approve(proposal, f"{self.consecutive_losses} losses in a row")
        if not proposal.sized or proposal.quantity is None:
            return self.approve(proposal, "fixed quantity: not scaled")
        return self.sized(proposal.quantity * self.size_factor,
                          f"losing streak: size x{self.size_factor:g}, {self.reduced_left} of "
                          f"{self.reduced_trades} reduced trades left")


@register_rule
class LosingStreakHalfSizeConfig(RuleConfig):
    rule: Literal["losing_streak_half_size"] = "losing_streak_half_size"
    losses_in_row: int = Field(5, ge=1)
    size_factor: float = Field(0.5, gt=0, le=1)
    reduced_trades: int = Field(10, ge=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        return LosingStreakHalfSize(losses_in_row=self.losses_in_row,
                                    size_factor=self.size_factor,
                                    reduced_trades=self.reduced_trades)


# ------------------------------------------------------------------ asset classes


@dataclass
class MaxPositionsPerAssetClass(RiskRule):
    """No new symbol once `limit` symbols of its asset class hold a projected position."""

    name: ClassVar[str] = "max_positions_per_asset_class"
    limit: int = 2
    classes: dict[str, str] = field(default_factory=dict)
    default_class: str = "crypto"

    def asset_class(self, symbol: str) -> str:
        return self.classes.get(symbol, self.default_class)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if snapshot.symbol_quantity != 0:
            return self.approve(proposal, "adds to an open position")
        asset_class = self.asset_class(proposal.intent.symbol)
        same = [position.symbol for position in snapshot.positions
                if self.asset_class(position.symbol) == asset_class]
        if len(same) >= self.limit:
            return self.reject(f"{len(same)} {asset_class} positions open "
                               f"({', '.join(same)}), limit {self.limit} per asset class")
        return self.approve(proposal, f"{len(same)} {asset_class} positions open")


@register_rule
class MaxPositionsPerAssetClassConfig(RuleConfig):
    rule: Literal["max_positions_per_asset_class"] = "max_positions_per_asset_class"
    needs_assets: ClassVar[bool] = True
    limit: int = Field(2, ge=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        classes, default_class = asset_classes_of(profile)
        return MaxPositionsPerAssetClass(limit=self.limit, classes=classes,
                                         default_class=default_class)


@dataclass
class AssetClassLeverage(RiskRule):
    """The gross notional of the entry's asset class stays within its cap x equity."""

    name: ClassVar[str] = "asset_class_leverage"
    stage: ClassVar[Stage] = "limit"
    limits: dict[str, float] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    default_class: str = "crypto"

    def asset_class(self, symbol: str) -> str:
        return self.classes.get(symbol, self.default_class)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        asset_class = self.asset_class(proposal.intent.symbol)
        cap = self.limits.get(asset_class)
        if cap is None:
            return self.reject(f"no leverage cap configured for asset class {asset_class!r} "
                               f"(configured: {', '.join(sorted(self.limits))})")
        class_gross = sum(position.notional for position in snapshot.positions
                          if self.asset_class(position.symbol) == asset_class)
        room = cap * snapshot.equity - class_gross
        return self.fit(proposal, room / proposal.intent.reference_price,
                        f"{asset_class} leverage limit {cap:g}x (class notional "
                        f"{class_gross:.2f} of equity {snapshot.equity:.2f})")


@register_rule
class AssetClassLeverageConfig(RuleConfig):
    rule: Literal["asset_class_leverage"] = "asset_class_leverage"
    needs_assets: ClassVar[bool] = True
    limits: dict[str, float] = Field(
        default_factory=lambda: {"crypto": 3.0, "forex": 10.0, "equity": 1.0},
        description="asset class -> max gross notional / equity")

    @field_validator("limits")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("needs at least one asset class")
        for asset_class, cap in value.items():
            if not cap > 0:
                raise ValueError(f"{asset_class}: cap must be > 0, got {cap!r}")
        return value

    def build(self, profile: RiskProfile) -> RiskRule:
        classes, default_class = asset_classes_of(profile)
        return AssetClassLeverage(limits=dict(self.limits), classes=classes,
                                  default_class=default_class)


# ------------------------------------------------------------------ heat share


@dataclass
class PositionHeatShare(RiskRule):
    """One symbol's heat stays within `share` x the portfolio heat limit x equity."""

    name: ClassVar[str] = "position_heat_share"
    stage: ClassVar[Stage] = "limit"
    share: float = 0.30
    heat_limit_pct: float = 0.05

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        held = snapshot.position(proposal.intent.symbol)
        held_heat = held.heat if held is not None else 0.0
        room = self.share * self.heat_limit_pct * snapshot.equity - held_heat
        return self.fit(proposal, room / proposal.stop_distance,
                        f"single-position heat {self.share:.0%} of the "
                        f"{self.heat_limit_pct:.2%} heat limit")


@register_rule
class PositionHeatShareConfig(RuleConfig):
    rule: Literal["position_heat_share"] = "position_heat_share"
    share: float = Field(0.30, gt=0, le=1)
    heat_limit_pct: float | None = Field(
        None, gt=0, le=1, description="None: the limit_pct of the profile's portfolio_heat")

    def build(self, profile: RiskProfile) -> RiskRule:
        limit = self.heat_limit_pct
        if limit is None:
            limit = profile_rule_value(profile, "portfolio_heat", "limit_pct", self.rule)
        return PositionHeatShare(share=self.share, heat_limit_pct=limit)
