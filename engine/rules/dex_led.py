"""The DEX-led plan's risk checks, as gates over the features a DEX-led entry carries.

- `profit_after_slippage`: refuse an entry whose predicted reward (`predicted_reward`, a fraction
  of price) minus the slippage estimated from the CEX book for its size (`estimated_slippage`, a
  fraction) is below `min_edge` (0).
- `volatility_regime_filter`: refuse altcoin entries while the majors' volatility
  (`major_volatility`, e.g. BTC's realised volatility per bar as a fraction) is above
  `max_volatility`. Symbols of the `exempt_sectors` (the majors themselves) pass.
- `latency_compensation`: the reward a signal must predict grows with the measured data latency
  (`data_latency_ms`): `base_threshold x (1 + max(0, latency - free_latency_ms) /
  latency_scale_ms)`. Stale information must promise more.
- `signal_cooldown`: no new entry on a pair within `cooldown_seconds` (15 minutes) of its last
  fill, entry or exit (event time): a pair that just traded waits before the next signal acts.

A missing or non-finite feature rejects the entry and names it (fail closed). Exits are never
gated (the chain approves reduce-only intents before any rule). Picklable, event time only.
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


def _missing(name: str) -> str:
    return f"feature {name} is missing or not finite; the DEX-led plan needs it"


@dataclass
class ProfitAfterSlippage(RiskRule):
    name: ClassVar[str] = "profit_after_slippage"
    min_edge: float = 0.0

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        predicted = proposal.feature("predicted_reward")
        slippage = proposal.feature("estimated_slippage")
        if predicted is None:
            return self.reject(_missing("predicted_reward"))
        if slippage is None or slippage < 0:
            return self.reject(_missing("estimated_slippage"))
        edge = predicted - slippage
        if edge < self.min_edge:
            return self.reject(f"predicted reward {predicted:.4%} minus slippage "
                               f"{slippage:.4%} = {edge:.4%} is below {self.min_edge:.4%}")
        return self.approve(proposal, f"edge {edge:.4%} after slippage {slippage:.4%}")


@register_rule
class ProfitAfterSlippageConfig(RuleConfig):
    rule: Literal["profit_after_slippage"] = "profit_after_slippage"
    min_edge: float = Field(0.0, description="predicted reward minus slippage must reach this")

    def build(self, profile: RiskProfile) -> RiskRule:
        return ProfitAfterSlippage(min_edge=self.min_edge)


@dataclass
class VolatilityRegimeFilter(RiskRule):
    name: ClassVar[str] = "volatility_regime_filter"
    max_volatility: float = 0.01
    exempt_sectors: tuple[str, ...] = ("store_of_value", "major")
    profile: RiskProfile | None = None

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        symbol = proposal.intent.symbol
        sector = self.profile.asset(symbol).sector if self.profile is not None else ""
        if sector in self.exempt_sectors:
            return self.approve(proposal, f"{symbol} is a major ({sector})")
        volatility = proposal.feature("major_volatility")
        if volatility is None or volatility < 0:
            return self.reject(_missing("major_volatility"))
        if volatility > self.max_volatility:
            return self.reject(f"majors' volatility {volatility:.4%} above "
                               f"{self.max_volatility:.4%}: no altcoin entries")
        return self.approve(proposal, f"majors' volatility {volatility:.4%} within "
                            f"{self.max_volatility:.4%}")


@register_rule
class VolatilityRegimeFilterConfig(RuleConfig):
    rule: Literal["volatility_regime_filter"] = "volatility_regime_filter"
    max_volatility: float = Field(0.01, gt=0)
    exempt_sectors: tuple[str, ...] = ("store_of_value", "major")

    def build(self, profile: RiskProfile) -> RiskRule:
        return VolatilityRegimeFilter(max_volatility=self.max_volatility,
                                      exempt_sectors=self.exempt_sectors, profile=profile)


@dataclass
class LatencyCompensation(RiskRule):
    name: ClassVar[str] = "latency_compensation"
    base_threshold: float = 0.005
    free_latency_ms: float = 200.0
    latency_scale_ms: float = 1_000.0

    def required(self, latency_ms: float) -> float:
        excess = max(0.0, latency_ms - self.free_latency_ms)
        return self.base_threshold * (1.0 + excess / self.latency_scale_ms)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        predicted = proposal.feature("predicted_reward")
        latency = proposal.feature("data_latency_ms")
        if predicted is None:
            return self.reject(_missing("predicted_reward"))
        if latency is None:
            return self.reject(_missing("data_latency_ms"))
        if latency < 0:
            return self.reject(f"data_latency_ms is {latency:.0f}: the local clock is behind "
                               "the venue's, so latency cannot be judged (synchronise it)")
        needed = self.required(latency)
        if predicted < needed:
            return self.reject(f"predicted reward {predicted:.4%} below {needed:.4%}, the "
                               f"threshold at {latency:.0f} ms of data latency")
        return self.approve(proposal, f"predicted {predicted:.4%} >= {needed:.4%} at "
                            f"{latency:.0f} ms")


@register_rule
class LatencyCompensationConfig(RuleConfig):
    rule: Literal["latency_compensation"] = "latency_compensation"
    base_threshold: float = Field(0.005, ge=0, description="candidate threshold at low latency")
    free_latency_ms: float = Field(200.0, ge=0)
    latency_scale_ms: float = Field(1_000.0, gt=0, description="latency that doubles it")

    def build(self, profile: RiskProfile) -> RiskRule:
        return LatencyCompensation(self.base_threshold, self.free_latency_ms,
                                   self.latency_scale_ms)


@dataclass
class SignalCooldown(RiskRule):
    name: ClassVar[str] = "signal_cooldown"
    cooldown_seconds: float = 900.0
    last_entry: dict[str, int] = field(default_factory=dict)  # symbol -> last fill's time

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, FillObserved):
            fill = event.fill
            self.last_entry[fill.symbol] = max(fill.ts_event,
                                               self.last_entry.get(fill.symbol, fill.ts_event))
        return ()

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        symbol = proposal.intent.symbol
        last = self.last_entry.get(symbol)
        if last is None:
            return self.approve(proposal, "no fill on the pair yet")
        elapsed = (proposal.intent.ts_event - last) / NS_PER_SECOND
        if elapsed < self.cooldown_seconds:
            return self.reject(f"{symbol} last traded {elapsed:.0f} s ago; cool-down "
                               f"{self.cooldown_seconds:.0f} s")
        return self.approve(proposal, f"last fill {elapsed:.0f} s ago")


@register_rule
class SignalCooldownConfig(RuleConfig):
    rule: Literal["signal_cooldown"] = "signal_cooldown"
    cooldown_seconds: float = Field(900.0, ge=0)

    def build(self, profile: RiskProfile) -> RiskRule:
        return SignalCooldown(cooldown_seconds=self.cooldown_seconds)
