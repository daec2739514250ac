"""The rules every profile builds on: halts, stale data, daily loss, flips, position count,
fixed-fractional sizing, portfolio heat, gross leverage and the drawdown kill switch.

`default_profile(risk_config)` assembles them from the flat `risk:` section of a run config, which
is what a run uses when it names no profile (and what runs used before profiles existed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

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
)
from engine.rules.profile import RiskProfile, RuleConfig, register_rule
from engine.timeframes import NS_PER_DAY

if TYPE_CHECKING:
    from engine.config import RiskConfig


# ------------------------------------------------------------------ gates


@dataclass
class KillSwitch(RiskRule):
    """No new entry while trading is halted (manual halt, kill switch, shutdown)."""

    name: ClassVar[str] = "kill_switch"

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if snapshot.halted:
            return self.reject(f"trading halted: {snapshot.halt_reason}")
        return self.approve(proposal, "not halted")


@register_rule
class KillSwitchConfig(RuleConfig):
    rule: Literal["kill_switch"] = "kill_switch"

    def build(self, profile: RiskProfile) -> RiskRule:
        return KillSwitch()


@dataclass
class StaleData(RiskRule):
    """No new entry on data the live feed reported stale (no update for its alarm time)."""

    name: ClassVar[str] = "stale_data"

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if proposal.intent.data_stale:
            return self.reject(f"{proposal.intent.symbol} market data is stale (feed alarm); "
                               "entries wait until it is fresh")
        return self.approve(proposal, "data fresh")


@register_rule
class StaleDataConfig(RuleConfig):
    rule: Literal["stale_data"] = "stale_data"

    def build(self, profile: RiskProfile) -> RiskRule:
        return StaleData()


@dataclass
class DailyLossLimit(RiskRule):
    """Once equity fell `limit_pct` below the day's start, no entries until 00:00 UTC."""

    name: ClassVar[str] = "daily_loss_limit"
    limit_pct: float = 0.03
    blocked_day: int | None = None

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, EquityObserved | DayStarted):
            return ()
        day = event.ts_event // NS_PER_DAY
        limit = snapshot.day_start_equity * (1.0 - self.limit_pct)
        if snapshot.equity <= limit and self.blocked_day != day:
            self.blocked_day = day
            reason = (f"daily loss {snapshot.daily_pnl:.2f} reached the {self.limit_pct:.2%} "
                      "limit; no entries until 00:00 UTC")
            return (RiskAction("block_entries", self.name, reason),)
        return ()

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.blocked_day == snapshot.ts_event // NS_PER_DAY:
            return self.reject(
                f"daily loss limit of {self.limit_pct:.2%} reached today "
                f"(daily P&L {snapshot.daily_pnl:.2f} from {snapshot.day_start_equity:.2f})")
        return self.approve(proposal, "within the daily loss limit")


@register_rule
class DailyLossLimitConfig(RuleConfig):
    rule: Literal["daily_loss_limit"] = "daily_loss_limit"
    limit_pct: float = Field(0.03, gt=0, le=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        return DailyLossLimit(limit_pct=self.limit_pct)


@dataclass
class NetFlip(RiskRule):
    """An entry against the symbol's position is refused: close it reduce-only first, then
    enter (that is how the engine sends a reverse)."""

    name: ClassVar[str] = "net_flip"

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if snapshot.symbol_quantity * proposal.intent.side < 0:
            return self.reject(
                f"intent side {proposal.intent.side:+d} opposes the projected position "
                f"{snapshot.symbol_quantity:g}; send a reduce-only close, then an entry")
        return self.approve(proposal, "no flip")


@register_rule
class NetFlipConfig(RuleConfig):
    rule: Literal["net_flip"] = "net_flip"

    def build(self, profile: RiskProfile) -> RiskRule:
        return NetFlip()


@dataclass
class MaxOpenPositions(RiskRule):
    """No new symbol once `limit` symbols hold a projected position."""

    name: ClassVar[str] = "max_open_positions"
    limit: int = 5

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if snapshot.symbol_quantity == 0 and snapshot.open_positions >= self.limit:
            return self.reject(f"{snapshot.open_positions} positions open, limit {self.limit}")
        return self.approve(proposal, "position count ok")


@register_rule
class MaxOpenPositionsConfig(RuleConfig):
    rule: Literal["max_open_positions"] = "max_open_positions"
    limit: int = Field(5, ge=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        return MaxOpenPositions(limit=self.limit)


# ------------------------------------------------------------------ sizing


@dataclass
class FixedFractional(RiskRule):
    """Risk `risk_pct` of equity over the stop distance, when the intent left sizing to risk.
    With `cap_given_quantity`, a quantity the strategy fixed must fit the same budget too, or
    the entry is rejected (a fixed size is never resized)."""

    name: ClassVar[str] = "fixed_fractional"
    stage: ClassVar[Stage] = "size"
    risk_pct: float = 0.01
    cap_given_quantity: bool = False

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        budget = self.risk_pct * snapshot.equity
        if proposal.quantity is not None:
            at_risk = proposal.quantity * proposal.stop_distance
            if self.cap_given_quantity and at_risk > budget * (1 + 1e-9):
                return self.reject(
                    f"fixed quantity {proposal.quantity:g} risks {at_risk:.2f} over stop "
                    f"distance {proposal.stop_distance:g}, above {self.risk_pct:.2%} of equity "
                    f"({budget:.2f})")
            return self.approve(proposal, "quantity given")
        quantity = budget / proposal.stop_distance
        return self.sized(quantity, f"{self.risk_pct:.2%} of equity {snapshot.equity:.2f} over "
                          f"stop distance {proposal.stop_distance:g}")


@register_rule
class FixedFractionalConfig(RuleConfig):
    rule: Literal["fixed_fractional"] = "fixed_fractional"
    risk_pct: float = Field(0.01, gt=0, le=1)
    cap_given_quantity: bool = Field(
        False, description="reject a strategy's fixed quantity that risks more than risk_pct")

    def build(self, profile: RiskProfile) -> RiskRule:
        return FixedFractional(risk_pct=self.risk_pct,
                               cap_given_quantity=self.cap_given_quantity)


# ------------------------------------------------------------------ limits


@dataclass
class PortfolioHeat(RiskRule):
    """Open risk (qty x |price - stop|) including the new position stays within `limit_pct` of
    equity. The symbol's projected position counts at the widest stop on its side, the new
    order's included, as risk's heat does (a fill re-stops the whole position)."""

    name: ClassVar[str] = "portfolio_heat"
    stage: ClassVar[Stage] = "limit"
    limit_pct: float = 0.05

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        side = proposal.intent.side
        room = self.limit_pct * snapshot.equity - snapshot.heat
        distance = max(snapshot.stop_distance_on(side), proposal.stop_distance)
        held = snapshot.position(proposal.intent.symbol)
        if held is not None and held.quantity * side > 0:
            # an add-on: the whole position may end up at the widest stop on its side
            max_quantity = (room + held.heat) / distance - abs(held.quantity)
        else:
            max_quantity = room / distance
        return self.fit(proposal, max_quantity, f"heat limit {self.limit_pct:.2%}")


@register_rule
class PortfolioHeatConfig(RuleConfig):
    rule: Literal["portfolio_heat"] = "portfolio_heat"
    limit_pct: float = Field(0.05, gt=0, le=1)

    def build(self, profile: RiskProfile) -> RiskRule:
        return PortfolioHeat(limit_pct=self.limit_pct)


@dataclass
class MaxLeverage(RiskRule):
    """Gross notional including the new position stays within `limit` x equity."""

    name: ClassVar[str] = "max_leverage"
    stage: ClassVar[Stage] = "limit"
    limit: float = 3.0

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        room = self.limit * snapshot.equity - snapshot.gross_notional
        return self.fit(proposal, room / proposal.intent.reference_price,
                        f"leverage limit {self.limit:g}x")


@register_rule
class MaxLeverageConfig(RuleConfig):
    rule: Literal["max_leverage"] = "max_leverage"
    limit: float = Field(3.0, gt=0)

    def build(self, profile: RiskProfile) -> RiskRule:
        return MaxLeverage(limit=self.limit)


# ------------------------------------------------------------------ drawdown


@dataclass
class DrawdownKillSwitch(RiskRule):
    """Once drawdown from the peak reaches `limit_pct`: flatten everything and halt until a
    manual reset (a kill switch; the intraday plan's "flatten and shut down" is the same rule
    under its own name). An unreported breach is refused too. A manual reset lifts a tripped
    switch and restarts the peak at the next equity; a reset of some other halt leaves the peak
    alone, so it never rebases the drawdown."""

    name: ClassVar[str] = "drawdown_kill_switch"
    label: ClassVar[str] = "kill switch"
    limit_pct: float = 0.05
    peak: float | None = None
    rebase_on_next_event: bool = False  # set by a manual reset of a tripped switch
    tripped: bool = False
    tripped_reason: str = ""

    def _drawdown(self, equity: float) -> float:
        if self.peak is None or not (self.peak > 0 and math.isfinite(equity)):
            return math.nan
        return max(0.0, 1.0 - equity / self.peak)

    def _breached(self, drawdown: float) -> bool:
        # relative float noise at the threshold counts as reaching it
        return math.isfinite(drawdown) and drawdown >= self.limit_pct * (1.0 - 1e-12)

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if not isinstance(event, EquityObserved | DayStarted):
            return ()
        equity = snapshot.equity
        if not math.isfinite(equity):
            return ()  # entries already fail closed on a non-finite equity
        if self.peak is None:
            self.peak = equity if self.rebase_on_next_event else max(snapshot.peak_equity, equity)
            self.rebase_on_next_event = False
        self.peak = max(self.peak, equity)
        drawdown = self._drawdown(equity)
        if self.tripped or not self._breached(drawdown):
            return ()
        self.tripped = True
        self.tripped_reason = (f"drawdown {drawdown:.2%} from peak {self.peak:.2f} (equity "
                               f"{equity:.2f}) reached the {self.limit_pct:.2%} {self.label}")
        return (RiskAction("flatten_all", self.name, f"{self.tripped_reason}; flatten all"),
                RiskAction("halt", self.name, f"{self.tripped_reason}; halted until a manual "
                           "reset (ats control reset-halt)"))

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if self.tripped:
            return self.reject(f"{self.label} tripped: {self.tripped_reason}; waiting for a "
                               "manual reset")
        drawdown = self._drawdown(snapshot.equity)
        if self._breached(drawdown):
            return self.reject(f"drawdown {drawdown:.2%} from peak {self.peak:.2f} is at the "
                               f"{self.limit_pct:.2%} {self.label}")
        return self.approve(proposal, f"drawdown below {self.limit_pct:.2%}")

    def manual_reset(self) -> None:
        if self.tripped:
            self.tripped = False
            self.tripped_reason = ""
            self.peak = None
            self.rebase_on_next_event = True


@register_rule
class DrawdownKillSwitchConfig(RuleConfig):
    rule: Literal["drawdown_kill_switch"] = "drawdown_kill_switch"
    limit_pct: float = Field(0.05, gt=0, lt=1, description="drawdown from peak that trips it")

    def build(self, profile: RiskProfile) -> RiskRule:
        return DrawdownKillSwitch(limit_pct=self.limit_pct)


def default_profile(config: RiskConfig) -> RiskProfile:
    """The rules of a run that names no profile, from its flat `risk:` settings."""
    return RiskProfile(
        name="default",
        description="the flat risk: section of the run config",
        default_stop_pct=config.default_stop_pct,
        rules=(
            KillSwitchConfig(),
            StaleDataConfig(),
            DailyLossLimitConfig(limit_pct=config.daily_loss_limit),
            NetFlipConfig(),
            MaxOpenPositionsConfig(limit=config.max_open_positions),
            FixedFractionalConfig(risk_pct=config.risk_per_trade),
            PortfolioHeatConfig(limit_pct=config.max_portfolio_heat),
            MaxLeverageConfig(limit=config.max_leverage),
        ),
    )
