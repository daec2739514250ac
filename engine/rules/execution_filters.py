"""Execution filters as risk rules: a spread guard and a cap on a single order's share of volume.

They read market facts the engine attaches to every entry (`engine.market_context`):
`spread_bps`, `spread_avg_bps`, `spread_samples` and `quote_volume_24h`. A missing or invalid
fact rejects the entry (fail closed), naming what was missing. Exits are never filtered (the
chain approves reduce-only intents before any rule).

- `spread_filter` (gate): no entry while the spread is over `max_multiple` (2) times its recent
  average, nor before that average is of `min_samples` quotes.
- `volume_cap` (limit): one order's notional stays within `max_fraction` (1%) of the quote
  volume of the last day; a risk-sized entry is cut to fit, a fixed one is rejected.

Stateless and picklable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from engine.rules.base import PortfolioSnapshot, Proposal, RiskRule, RuleOutcome, Stage
from engine.rules.profile import RiskProfile, RuleConfig, register_rule


@dataclass
class SpreadFilter(RiskRule):
    """Reject entries while the quoted spread is over `max_multiple` x its recent average."""

    name: ClassVar[str] = "spread_filter"
    stage: ClassVar[Stage] = "gate"
    max_multiple: float = 2.0
    min_samples: int = 20

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        spread = proposal.feature("spread_bps")
        average = proposal.feature("spread_avg_bps")
        samples = proposal.feature("spread_samples")
        if samples is None or samples < self.min_samples:
            seen = "no" if samples is None else f"{samples:g}"
            return self.reject(f"spread average warming up: {seen} of {self.min_samples} "
                               "quotes")
        if spread is None or spread < 0:
            return self.reject(f"feature spread_bps is missing or invalid ({spread}); no entry "
                               "without a quote")
        if average is None or not average > 0:
            return self.reject(f"feature spread_avg_bps is missing or not positive ({average}); "
                               "no entry before the spread has a history")
        limit = self.max_multiple * average
        if spread > limit:
            return self.reject(f"spread {spread:.2f} bps > {self.max_multiple:g}x its average "
                               f"{average:.2f} bps")
        return self.approve(proposal, f"spread {spread:.2f} bps within {limit:.2f} bps")


@register_rule
class SpreadFilterConfig(RuleConfig):
    rule: Literal["spread_filter"] = "spread_filter"
    max_multiple: float = Field(2.0, gt=1, description="reject above this x average spread")
    min_samples: int = Field(20, ge=1, description="quotes the average needs before judging")

    def build(self, profile: RiskProfile) -> RiskRule:
        return SpreadFilter(max_multiple=self.max_multiple, min_samples=self.min_samples)


@dataclass
class VolumeCap(RiskRule):
    """One order's notional within `max_fraction` of the last day's quote volume."""

    name: ClassVar[str] = "volume_cap"
    stage: ClassVar[Stage] = "limit"
    max_fraction: float = 0.01

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        volume = proposal.feature("quote_volume_24h")
        if volume is None or not volume > 0:
            return self.reject(f"feature quote_volume_24h is missing or not positive ({volume}); "
                               "no entry without traded volume")
        price = proposal.intent.reference_price
        return self.fit(proposal, self.max_fraction * volume / price,
                        f"{self.max_fraction:.2%} of 24h quote volume {volume:.6g}")


@register_rule
class VolumeCapConfig(RuleConfig):
    rule: Literal["volume_cap"] = "volume_cap"
    max_fraction: float = Field(0.01, gt=0, le=1, description="share of 24h quote volume")

    def build(self, profile: RiskProfile) -> RiskRule:
        return VolumeCap(max_fraction=self.max_fraction)
