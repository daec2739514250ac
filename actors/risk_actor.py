"""PortfolioRiskActor: the one place every intent is approved, sized or rejected.

A thin Ray shell around `engine.risk.PortfolioRisk`. Updates (fills, marks) may arrive from
several symbols in any order; PortfolioRisk applies them lazily in (ts_event, symbol, sequence)
order, so decisions are the same whatever the message order (DESIGN.md, time and determinism).

`decide` is idempotent: an intent already decided gets the same decision back, and the updates
sent with it, already applied then, are not applied again. A symbol actor restored from its
checkpoint replays its steps through here (`actors.supervisor`) without deciding anything
twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import ray

from engine.config import RiskConfig
from engine.control.state import ControlState
from engine.risk import PortfolioRisk
from engine.rules.control import ControlEffect
from engine.types import OrderIntent, PortfolioUpdate, RiskDecision

_JOURNAL_FLUSH_ROWS = 2_000
_DECISIONS_KEPT = 10_000  # far more than a restart replays


@ray.remote(max_restarts=0)
class PortfolioRiskActor:
    def __init__(self, config: RiskConfig, initial_equity: float, journal: Any) -> None:
        self._risk = PortfolioRisk(config, initial_equity)
        self._journal = journal
        self._pending_rows = 0
        self._last_append: Any = None
        self._decided: OrderedDict[str, RiskDecision] = OrderedDict()
        self.repeated_decisions = 0

    def submit(self, updates: Sequence[PortfolioUpdate]) -> None:
        self._risk.submit(updates)

    def decide(self, intent: OrderIntent, updates: Sequence[PortfolioUpdate]) -> RiskDecision:
        known = self._decided.get(intent.intent_id)
        if known is not None:  # a restored actor replaying a step: nothing is applied twice
            self.repeated_decisions += 1
            return known
        self._risk.submit(updates)
        decision = self._risk.decide(intent)
        self._decided[intent.intent_id] = decision
        if len(self._decided) > _DECISIONS_KEPT:
            self._decided.popitem(last=False)
        self._pending_rows += 1
        if self._pending_rows >= _JOURNAL_FLUSH_ROWS:
            self._flush_journal()
        return decision

    def halt(self, reason: str) -> None:
        """Kill switch: no new entries until `resume`; exits still pass."""
        self._risk.halt(reason)

    def resume(self) -> None:
        self._risk.resume()

    def apply_control(self, state: ControlState) -> ControlEffect:
        """The operator's control state (engine.control), applied between two decisions; the
        flatten and halt rows it makes are journaled at once."""
        effect = self._risk.apply_control(state)
        self._flush_journal()
        return effect

    def _flush_journal(self) -> None:
        rows = self._risk.drain_journal()
        if any(rows.values()):
            self._last_append = self._journal.append_many.remote(rows)
        self._pending_rows = 0

    def finish(self) -> dict[str, Any]:
        """Apply every buffered update, journal what is left and return the portfolio summary."""
        self._risk.finish()
        self._flush_journal()
        if self._last_append is not None:
            ray.get(self._last_append)  # the journal closes next; our rows must be in first
        return self._risk.summary()

