"""The decision on one intent: input checks, then the profile's rules stage by stage.

1. `check_inputs`: non-finite or impossible numbers reject with "invalid_input" (fail closed);
2. reduce-only intents are approved by "reduce_only" (exits always get through), capped at what
   they can close (the filled position plus pending entries on its side) and rejected when there
   is nothing to close, so an "exit" can never open or flip a position;
3. gates, in profile order: the first rejection decides;
4. size rules: a base sizer sets the quantity the intent left to risk (else "fixed_quantity"
   keeps the asked one); modifiers scale it; each step is noted for the journal;
5. limits cap a risk-sized quantity to what fits, or reject.

The outcome names the rule that fixed the result (the rejecting one, the last to change the
quantity, or the sizer), and `notes` lists every rule that changed the quantity, in order, so the
journal explains each decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from engine.rules.base import (
    MIN_CAP_FRACTION,
    PortfolioSnapshot,
    Proposal,
    RiskRule,
    RuleOutcome,
)
from engine.types import OrderIntent


@dataclass(frozen=True)
class Decision:
    outcome: RuleOutcome
    notes: tuple[str, ...]


def _finite_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def effective_stop(intent: OrderIntent, default_stop_pct: float) -> float:
    """The intent's stop, or one `default_stop_pct` away from its reference price."""
    if intent.stop_price is not None:
        return intent.stop_price
    return intent.reference_price * (1.0 - intent.side * default_stop_pct)


def check_inputs(proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
    """Reject anything non-finite or impossible. Reduce-only intents need only a valid side and
    quantity: their prices are not used, and an exit must not be blocked by a bad quote."""
    intent = proposal.intent
    problem = ""
    if intent.side not in (1, -1):
        problem = f"side must be +1 or -1, got {intent.side!r}"
    elif intent.reduce_only:
        if not _finite_positive(intent.quantity):
            problem = f"reduce-only quantity must be finite and > 0, got {intent.quantity!r}"
    elif not _finite_positive(intent.reference_price):
        problem = f"reference price must be finite and > 0, got {intent.reference_price!r}"
    elif intent.quantity is not None and not _finite_positive(intent.quantity):
        problem = f"quantity must be finite and > 0, got {intent.quantity!r}"
    elif intent.stop_price is not None and not _finite_positive(intent.stop_price):
        problem = f"stop price must be finite and > 0, got {intent.stop_price!r}"
    elif intent.side * (intent.reference_price - proposal.stop_price) <= 0:
        problem = (
            f"stop {proposal.stop_price} is not on the protective side of "
            f"{intent.reference_price} for side {intent.side:+d}"
        )
    elif not _finite_positive(snapshot.equity):
        problem = f"equity must be finite and > 0, got {snapshot.equity!r}"
    elif not (math.isfinite(snapshot.heat) and math.isfinite(snapshot.gross_notional)):
        problem = "portfolio heat or gross notional is not finite"
    if problem:
        return RuleOutcome("reject", "invalid_input", problem)
    return RuleOutcome("approve", "invalid_input", "inputs are valid", proposal.quantity)


def _reduce_only(intent: OrderIntent, snapshot: PortfolioSnapshot) -> RuleOutcome:
    quantity = float(intent.quantity or 0.0)
    reducible = snapshot.reducible(intent.side)
    if reducible <= quantity * MIN_CAP_FRACTION:
        return RuleOutcome("reject", "reduce_only",
                           f"reduce-only side {intent.side:+d}: no position to reduce")
    if quantity > reducible * (1 + 1e-12):
        return RuleOutcome("cap", "reduce_only", f"reduce-only quantity capped from {quantity:g} "
                           f"to the {reducible:g} it can close", reducible)
    return RuleOutcome("approve", "reduce_only", "reduce-only intents are never blocked", quantity)


def evaluate(
    rules: Sequence[RiskRule], intent: OrderIntent, snapshot: PortfolioSnapshot,
    default_stop_pct: float,
) -> Decision:
    """Run the chain over `rules` (already in stage order) for one intent."""
    try:
        stop = effective_stop(intent, default_stop_pct)
    except (TypeError, ValueError):
        stop = math.nan
    proposal = Proposal(intent, intent.quantity, stop, sized=intent.quantity is None)
    checked = check_inputs(proposal, snapshot)
    if checked.verdict == "reject":
        return Decision(checked, ())
    if intent.reduce_only:
        return Decision(_reduce_only(intent, snapshot), ())
    notes: list[str] = []
    final = RuleOutcome("approve", "fixed_quantity", "quantity as asked", intent.quantity)
    for rule in rules:
        outcome = rule.check(proposal, snapshot)
        if outcome.verdict == "reject":
            return Decision(outcome, tuple(notes))
        if outcome.verdict == "approve":
            continue
        quantity = outcome.quantity
        if quantity is None or not math.isfinite(quantity) or quantity < 0:
            bad = RuleOutcome("reject", "invalid_input",
                              f"{rule.name} produced quantity {quantity!r}")
            return Decision(bad, tuple(notes))
        if quantity <= 0:
            return Decision(RuleOutcome("reject", outcome.rule, outcome.reason), tuple(notes))
        notes.append(f"{outcome.rule}: {outcome.reason}")
        final = outcome
        proposal = replace(proposal, quantity=quantity)
    if proposal.quantity is None:
        return Decision(RuleOutcome("reject", "invalid_input",
                                    "no size rule sized an intent that left sizing to risk"),
                        tuple(notes))
    return Decision(final, tuple(notes))
