"""The DEX-led plan's risk checks, as gates over the features a DEX-led entry carries.

- `profit_after_slippage`: refuse an entry whose predicted reward (`predicted_reward`, a fraction
  of price) minus the slippage estimated from the CEX book for its size (`estimated_slippage`, a
  fraction) is below `min_edge` (0).
- `volatility_regime_filter`: refuse altcoin entries while the majors' volatility is above
  `max_volatility`. The rule measures it itself from the marks of the `majors` (BTCUSDT,
  ETHUSDT) it observes: the standard deviation of their log returns over `sample_interval_s`
  (1-minute) buckets of event time, in the last `window` buckets, the higher of the majors'. An
  intent may carry its own `major_volatility` feature instead, which wins. With neither (fewer
  than `min_samples` returns of any major), the entry is refused. Symbols of the
  `exempt_sectors` (the majors themselves) pass.
- `latency_compensation`: the reward a signal must predict grows with the measured data latency
  (`data_latency_ms`): `base_threshold x (1 + max(0, latency - free_latency_ms) /
  latency_scale_ms)`. Stale information must promise more.
- `signal_cooldown`: no new entry on a pair within `cooldown_seconds` (15 minutes) of its last
  fill, entry or exit (event time): a pair that just traded waits before the next signal acts.

A missing or non-finite feature rejects the entry and names it (fail closed). Exits are never
gated (the chain approves reduce-only intents before any rule). Picklable, event time only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field

from engine.rules.base import (
    FillObserved,
    MarkObserved,
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
)
from engine.rules.intraday_correlation import ReturnSampler
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
    majors: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    min_samples: int = 10
    sampler: ReturnSampler = field(
        default_factory=lambda: ReturnSampler(60 * NS_PER_SECOND, 60))

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, MarkObserved) and event.symbol in self.majors:
            self.sampler.add(event.symbol, event.ts_event, event.price)
        return ()

    def measured(self, now: int) -> float | None:
        """The majors' volatility as of `now` (module docs), None while unknown."""
        oldest = now // self.sampler.interval_ns - self.sampler.window
        known = []
        for major in self.majors:
            returns = [value for bucket, value in self.sampler.returns.get(major, ())
                       if bucket > oldest]
            if len(returns) >= self.min_samples:
                mean = sum(returns) / len(returns)
                known.append(math.sqrt(sum((value - mean) ** 2 for value in returns)
                                       / (len(returns) - 1)))
        return max(known) if known else None

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        symbol = proposal.intent.symbol
        sector = self.profile.asset(symbol).sector if self.profile is not None else ""
        if sector in self.exempt_sectors:
            return self.approve(proposal, f"{symbol} is a major ({sector})")
        volatility = proposal.feature("major_volatility")
        if volatility is None:
            volatility = self.measured(proposal.intent.ts_event)
        if volatility is None or volatility < 0:
            return self.reject(f"the majors' volatility is not known yet: fewer than "
                               f"{self.min_samples} returns of {', '.join(self.majors)} in "
                               "the window, and the entry carries no major_volatility")
        if volatility > self.max_volatility:
            return self.reject(f"majors' volatility {volatility:.4%} above "
                               f"{self.max_volatility:.4%}: no altcoin entries")
        return self.approve(proposal, f"majors' volatility {volatility:.4%} within "
                            f"{self.max_volatility:.4%}")


@register_rule
class VolatilityRegimeFilterConfig(RuleConfig):
    rule: Literal["volatility_regime_filter"] = "volatility_regime_filter"
    max_volatility: float = Field(0.01, gt=0, description="per bucket, as a fraction")
    exempt_sectors: tuple[str, ...] = ("store_of_value", "major")
    majors: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    sample_interval_s: int = Field(60, ge=1, description="return bucket")
    window: int = Field(60, ge=2, description="buckets the volatility is measured over")
    min_samples: int = Field(10, ge=2)

    def build(self, profile: RiskProfile) -> RiskRule:
        return VolatilityRegimeFilter(
            max_volatility=self.max_volatility, exempt_sectors=self.exempt_sectors,
            profile=profile, majors=self.majors, min_samples=self.min_samples,
            sampler=ReturnSampler(self.sample_interval_s * NS_PER_SECOND, self.window))


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
