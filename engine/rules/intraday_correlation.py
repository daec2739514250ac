"""Intraday breakout plan: between two correlated signals, take only the higher-scored one.

`correlated_signals` (gate) reads `OrderIntent.score` (no features).

Returns: every symbol's marks (`MarkObserved`) are sampled into closes on a fixed grid of
`sample_interval_s` seconds of event time (default hourly, aligned to the epoch): a bucket's close
is its last mark, known when the first mark of a later bucket arrives. A return is the log change
from the previous known close to that close (a bucket without marks is skipped, so a return may
span several buckets), filed under the bucket it ends in. Two symbols' correlation is Pearson's
over the returns of the buckets both have, within the last `lookback_days` (default 30), and is
judged only on at least `min_samples` such pairs (default 24, one day of hourly returns). With
fewer, or when either series is flat, the pair is not judged and does not block: an unknown
correlation is treated as none, and the heat, position and leverage limits still apply.

Decision on an entry that opens a new symbol (adding to an open position is not judged): for
every *other* symbol with a projected (filled or pending) position whose correlation with it is
above `max_correlation`:
- the entry needs a score; without one it is rejected (it cannot be ranked);
- held positions are ranked by the highest score of the entries on them this rule let through
  since the symbol was last flat. A held symbol with no known score (opened before this rule saw
  it, or by an unscored entry) counts as unbeatable, which errs toward refusing;
- an entry whose score is not strictly above every correlated held score is rejected: the
  higher-scored signal already held wins (a tie keeps the held one);
- an entry that outscores them all is approved, and the lower-scored correlated positions are
  displaced: at the next event after which the new symbol shows a projected position (so the
  entry really was approved by the rest of the chain), the rule returns a "flatten_symbol" action
  for each of them. If the entry was refused further down the chain, nothing is flattened.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field

from engine.rules.base import (
    MarkObserved,
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
)
from engine.rules.profile import RiskProfile, RuleConfig, register_rule
from engine.timeframes import NS_PER_DAY, NS_PER_SECOND


def pearson(first: Sequence[float], second: Sequence[float]) -> float:
    """Pearson correlation of two equally long series; NaN when either is flat or too short."""
    count = len(first)
    if count < 2 or count != len(second):
        return math.nan
    mean_first = sum(first) / count
    mean_second = sum(second) / count
    covariance = sum((a - mean_first) * (b - mean_second)
                     for a, b in zip(first, second, strict=True))
    spread_first = sum((a - mean_first) ** 2 for a in first)
    spread_second = sum((b - mean_second) ** 2 for b in second)
    if spread_first <= 0 or spread_second <= 0:
        return math.nan
    return max(-1.0, min(1.0, covariance / math.sqrt(spread_first * spread_second)))


@dataclass
class ReturnSampler:
    """Per-symbol log returns of closes on a fixed event-time grid, for the last `window`
    buckets."""

    interval_ns: int
    window: int  # buckets kept
    open_bucket: dict[str, tuple[int, float]] = field(default_factory=dict)  # bucket, last mark
    last_close: dict[str, float] = field(default_factory=dict)
    returns: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)

    def add(self, symbol: str, ts_event: int, price: float) -> None:
        bucket = ts_event // self.interval_ns
        current = self.open_bucket.get(symbol)
        if current is not None and bucket > current[0]:
            closed_bucket, close = current
            previous = self.last_close.get(symbol)
            if previous is not None:
                series = self.returns.setdefault(symbol, deque())
                series.append((closed_bucket, math.log(close / previous)))
                while series and series[0][0] <= closed_bucket - self.window:
                    series.popleft()
            self.last_close[symbol] = close
        if current is None or bucket >= current[0]:
            self.open_bucket[symbol] = (bucket, price)

    def correlation(self, first: str, second: str, now: int) -> tuple[float, int]:
        """(correlation, pairs used) of two symbols' returns within the window ending at `now`."""
        oldest = now // self.interval_ns - self.window
        other = {bucket: value for bucket, value in self.returns.get(second, ())
                 if bucket > oldest}
        pairs = [(value, other[bucket]) for bucket, value in self.returns.get(first, ())
                 if bucket > oldest and bucket in other]
        if not pairs:
            return math.nan, 0
        return pearson([a for a, _ in pairs], [b for _, b in pairs]), len(pairs)


@dataclass
class CorrelatedSignals(RiskRule):
    """An entry correlated above `max_correlation` with an open position must outscore it."""

    name: ClassVar[str] = "correlated_signals"
    max_correlation: float = 0.75
    min_samples: int = 24
    sampler: ReturnSampler = field(
        default_factory=lambda: ReturnSampler(3600 * NS_PER_SECOND, 30 * 24))
    scores: dict[str, float] = field(default_factory=dict)  # held symbol -> entry score
    displacing: dict[str, tuple[float, tuple[str, ...]]] = field(default_factory=dict)

    def _forget_flat(self, snapshot: PortfolioSnapshot) -> None:
        held = {position.symbol for position in snapshot.positions}
        self.scores = {symbol: score for symbol, score in self.scores.items() if symbol in held}

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        if isinstance(event, MarkObserved):
            self.sampler.add(event.symbol, event.ts_event, event.price)
        actions: list[RiskAction] = []
        for symbol, (score, displaced) in sorted(self.displacing.items()):
            if snapshot.position(symbol) is not None:
                for other in displaced:
                    if snapshot.position(other) is not None:
                        actions.append(RiskAction(
                            "flatten_symbol", self.name,
                            f"{other} is correlated above {self.max_correlation:g} with the "
                            f"higher-scored {symbol} entry (score {score:g}); only the "
                            "higher-scored signal is kept", other))
        self.displacing.clear()
        self._forget_flat(snapshot)
        return tuple(actions)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        if snapshot.symbol_quantity != 0:
            return self.approve(proposal, "adds to an open position")
        self._forget_flat(snapshot)
        symbol = proposal.intent.symbol
        score = proposal.intent.score
        correlated: list[tuple[str, float, float]] = []  # (symbol, correlation, held score)
        unjudged: list[str] = []
        for position in snapshot.positions:
            if position.symbol == symbol:
                continue
            rho, pairs = self.sampler.correlation(symbol, position.symbol, snapshot.ts_event)
            if pairs < self.min_samples or math.isnan(rho):
                unjudged.append(f"{position.symbol} ({pairs} returns)")
            elif rho > self.max_correlation:
                correlated.append((position.symbol, rho,
                                   self.scores.get(position.symbol, math.inf)))
        if not correlated:
            if score is not None and math.isfinite(score):
                self.scores[symbol] = score
            note = f"; not judged: {', '.join(unjudged)}" if unjudged else ""
            return self.approve(proposal, f"no open position correlated above "
                                f"{self.max_correlation:g}{note}")
        listing = ", ".join(f"{other} (correlation {rho:.3f}, score {held:g})"
                            for other, rho, held in correlated)
        if score is None or not math.isfinite(score):
            return self.reject(f"entry has no score to rank against correlated {listing}")
        best = max(held for _, _, held in correlated)
        if not score > best:
            return self.reject(f"score {score:g} does not beat correlated {listing}; the "
                               "higher-scored signal already held wins")
        self.scores[symbol] = score
        self.displacing[symbol] = (score, tuple(other for other, _, _ in correlated))
        return self.approve(proposal, f"score {score:g} beats correlated {listing}; "
                            "those are to be flattened")


@register_rule
class CorrelatedSignalsConfig(RuleConfig):
    rule: Literal["correlated_signals"] = "correlated_signals"
    max_correlation: float = Field(0.75, gt=-1, lt=1)
    lookback_days: float = Field(30.0, gt=0)
    sample_interval_s: int = Field(3600, ge=1)
    min_samples: int = Field(24, ge=3)

    def build(self, profile: RiskProfile) -> RiskRule:
        interval_ns = self.sample_interval_s * NS_PER_SECOND
        window = max(1, int(self.lookback_days * NS_PER_DAY // interval_ns))
        return CorrelatedSignals(max_correlation=self.max_correlation,
                                 min_samples=self.min_samples,
                                 sampler=ReturnSampler(interval_ns, window))
