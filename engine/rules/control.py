"""The operator's commands enforced inside risk: the `manual_control` rule.

`PortfolioRisk` always runs it, whatever the profile (`with_manual_control`), so no configuration
can bypass an operator: its gate comes before every other rule and its cap after every limit.

- gate: no entry while the operator paused or HALTED the engine, nor on a blacklisted asset;
- limit (`set-max-risk`): the quantity is capped so that quantity x stop distance stays within
  the override x equity; a fixed (strategy-chosen) quantity that exceeds it is rejected, never
  silently changed (`RiskRule.fit`);
- `update(state, positions, now)` takes a new `ControlState` (at start, from the persisted file;
  then after every command) and returns what the engine must do: a "halt" action when the state
  is HALTED, a "flatten_all" / "flatten_symbol" action per exit request not yet issued, a
  reset when the state counts a new reset-halt, and the exit requests whose targets are flat.

Exits (reduce-only intents) never reach a rule, so closing a position always works while paused,
halted or blacklisted. The rule reads no clock; it only holds what the operator decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from engine.control.state import ControlState
from engine.rules.base import PortfolioSnapshot, Proposal, RiskAction, RiskRule, RuleOutcome, Stage
from engine.rules.profile import RiskProfile, RuleConfig, register_rule


@dataclass(frozen=True)
class ControlEffect:
    """What one `update` asks of PortfolioRisk and tells the controller."""

    actions: tuple[RiskAction, ...] = ()
    settled: tuple[int, ...] = ()  # exit requests whose targets hold no position now
    reset_halt: bool = False  # a new reset-halt: clear every halt and suspension
    ts_event: int | None = None  # the engine's event time, for the control journal
    halted: bool = False
    halt_reason: str = ""
    positions: Mapping[str, float] = field(default_factory=dict)


@dataclass
class ManualControl(RiskRule):
    """The gate half of the operator's control (see module docs)."""

    name: ClassVar[str] = "manual_control"
    state: ControlState = field(default_factory=ControlState)
    issued: set[int] = field(default_factory=set)  # exit requests already turned into actions
    halt_announced: bool = False
    resets_seen: int | None = None
    limit: ManualRiskCap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.limit = ManualRiskCap(self)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        state = self.state
        if state.halted:
            return self.reject(f"HALTED by the operator ({state.halt_reason}); only "
                               "`ats control reset-halt` clears it")
        if state.paused:
            return self.reject("entries paused by the operator (`ats control resume`)")
        listed = state.blacklisted(proposal.intent.symbol)
        if listed is not None:
            return self.reject(f"{proposal.intent.symbol} is blacklisted by the operator "
                               f"({listed})")
        return self.approve(proposal, "no operator block")

    def update(self, state: ControlState, positions: Mapping[str, float],
               ts_event: int | None) -> ControlEffect:
        """Take the operator's new state; see module docs for what comes back."""
        reset = self.resets_seen is not None and state.resets > self.resets_seen
        self.resets_seen = state.resets
        self.state = state
        actions: list[RiskAction] = []
        if state.halted and not self.halt_announced:
            actions.append(RiskAction("halt", self.name, f"operator kill: {state.halt_reason}"))
        self.halt_announced = state.halted
        held = {symbol: quantity for symbol, quantity in positions.items() if quantity != 0}
        settled: list[int] = []
        for request in state.exits:
            targets = sorted(symbol for symbol in held if request.covers(symbol))
            if request.request_id not in self.issued:
                self.issued.add(request.request_id)
                if request.target == "*":
                    actions.append(RiskAction("flatten_all", self.name, request.reason))
                else:
                    actions.extend(RiskAction("flatten_symbol", self.name, request.reason, symbol)
                                   for symbol in targets)
            if not targets:
                settled.append(request.request_id)
        return ControlEffect(tuple(actions), tuple(settled), reset, ts_event, state.halted,
                             state.halt_reason, held)


@dataclass
class ManualRiskCap(RiskRule):
    """The limit half: `set-max-risk` caps quantity x stop distance at the override x equity."""

    name: ClassVar[str] = "manual_control"
    stage: ClassVar[Stage] = "limit"
    control: ManualControl | None = field(default=None, repr=False, compare=False)

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        fraction = self.control.state.max_risk_fraction if self.control is not None else None
        if fraction is None:
            return self.approve(proposal, "no operator risk cap")
        return self.fit(proposal, fraction * snapshot.equity / proposal.stop_distance,
                        f"operator max risk {fraction:.2%} per trade")


def with_manual_control(control: ManualControl, rules: Sequence[RiskRule]) -> list[RiskRule]:
    """`rules` (a built profile) with the control gate first and its cap last; a profile that
    names `manual_control` itself gets the same single pair, never two."""
    others = [rule for rule in rules if not isinstance(rule, ManualControl | ManualRiskCap)]
    return [control, *others, control.limit]


@register_rule
class ManualControlConfig(RuleConfig):
    """Naming it in a profile documents it; PortfolioRisk runs it in any case."""

    rule: Literal["manual_control"] = "manual_control"

    def build(self, profile: RiskProfile) -> RiskRule:
        return ManualControl()
