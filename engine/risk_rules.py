"""Portfolio risk rules: small functions, each answering approve, cap or reject with its name.

A rule sees the `Proposal` (the intent plus the quantity and stop settled so far) and a
`PortfolioSnapshot` taken just before the decision, and returns a `RuleOutcome`. `evaluate`
chains them:

1. `check_inputs`: non-finite or impossible numbers reject with "invalid_input" (fail closed);
2. reduce-only intents are approved as asked by "reduce_only": exits always get through;
3. gates for new exposure: "kill_switch", "daily_loss_limit", "net_flip", "max_open_positions";
4. sizing: "fixed_fractional" when the intent has no quantity (risk_per_trade x equity divided by
   the stop distance), else "fixed_quantity";
5. limits: "portfolio_heat" and "max_leverage" cap a risk-sized quantity to what fits, and reject a
   fixed quantity that does not fit (a fixed size is never silently changed), or anything when
   nothing fits.

Positions in the snapshot are projected: filled quantity plus approved orders not yet filled, so
two intents decided before either fills cannot both spend the same headroom.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from engine.config import RiskConfig
from engine.types import OrderIntent

Verdict = Literal["approve", "cap", "reject"]

# A cap below this fraction of the requested quantity counts as "nothing fits".
MIN_CAP_FRACTION = 1e-6


@dataclass(frozen=True)
class PortfolioSnapshot:
    """The portfolio as risk sees it just before deciding one intent."""

    equity: float
    day_start_equity: float
    daily_pnl: float
    daily_limit_hit: bool
    halted: bool
    halt_reason: str
    open_positions: int  # symbols with a projected (filled + pending) position
    heat: float  # sum of qty x |price - stop| over projected positions, in quote currency
    gross_notional: float  # sum of |qty| x price over projected positions
    symbol_quantity: float  # projected signed quantity of the intent's symbol

    @property
    def portfolio_heat(self) -> float:
        return self.heat / self.equity if self.equity > 0 else math.inf

    @property
    def gross_leverage(self) -> float:
        return self.gross_notional / self.equity if self.equity > 0 else math.inf


@dataclass(frozen=True)
class Proposal:
    """The intent under decision with the quantity and stop settled by the rules so far."""

    intent: OrderIntent
    quantity: float | None
    stop_price: float  # the intent's stop, or default_stop_pct away from the reference price
    sized: bool = False  # risk chose the quantity, so limits may cap it


@dataclass(frozen=True)
class RuleOutcome:
    verdict: Verdict
    rule: str
    reason: str
    quantity: float | None = None


Rule = Callable[[Proposal, PortfolioSnapshot, RiskConfig], RuleOutcome]


def _finite_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def effective_stop(intent: OrderIntent, config: RiskConfig) -> float:
    """The intent's stop, or one `default_stop_pct` away from its reference price."""
    if intent.stop_price is not None:
        return intent.stop_price
    return intent.reference_price * (1.0 - intent.side * config.default_stop_pct)


def check_inputs(
    proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig
) -> RuleOutcome:
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


def reduce_only(proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig) -> RuleOutcome:
    """Exits always pass, halted or not, past the daily loss limit or not."""
    return RuleOutcome(
        "approve", "reduce_only", "reduce-only intents are never blocked", proposal.quantity
    )


def kill_switch(proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig) -> RuleOutcome:
    if snapshot.halted:
        return RuleOutcome("reject", "kill_switch", f"trading halted: {snapshot.halt_reason}")
    return RuleOutcome("approve", "kill_switch", "not halted", proposal.quantity)


def stale_data(proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig) -> RuleOutcome:
    """No new entry on data the live feed reported stale (no update for its alarm time)."""
    if proposal.intent.data_stale:
        return RuleOutcome("reject", "stale_data", f"{proposal.intent.symbol} market data is "
                           "stale (feed alarm); entries wait until it is fresh")
    return RuleOutcome("approve", "stale_data", "data fresh", proposal.quantity)


def daily_loss_limit(
    proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig
) -> RuleOutcome:
    """Once equity fell `daily_loss_limit` below the day's start, no entries until 00:00 UTC."""
    if snapshot.daily_limit_hit:
        return RuleOutcome(
            "reject",
            "daily_loss_limit",
            f"daily loss limit of {config.daily_loss_limit:.2%} reached today "
            f"(daily P&L {snapshot.daily_pnl:.2f} from {snapshot.day_start_equity:.2f})",
        )
    return RuleOutcome(
        "approve", "daily_loss_limit", "within the daily loss limit", proposal.quantity
    )


def net_flip(proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig) -> RuleOutcome:
    """A non-reduce-only intent against the symbol's position is refused: close it reduce-only
    first, then enter (that is how the engine sends a reverse)."""
    if snapshot.symbol_quantity * proposal.intent.side < 0:
        return RuleOutcome(
            "reject",
            "net_flip",
            f"intent side {proposal.intent.side:+d} opposes the projected position "
            f"{snapshot.symbol_quantity:g}; send a reduce-only close, then an entry",
        )
    return RuleOutcome("approve", "net_flip", "no flip", proposal.quantity)


def max_open_positions(
    proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig
) -> RuleOutcome:
    if snapshot.symbol_quantity == 0 and snapshot.open_positions >= config.max_open_positions:
        return RuleOutcome(
            "reject",
            "max_open_positions",
            f"{snapshot.open_positions} positions open, limit {config.max_open_positions}",
        )
    return RuleOutcome("approve", "max_open_positions", "position count ok", proposal.quantity)


def position_size(
    proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig
) -> RuleOutcome:
    """Fixed-fractional sizing when the intent leaves the quantity to risk."""
    if proposal.quantity is not None:
        return RuleOutcome("approve", "fixed_quantity", "quantity as asked", proposal.quantity)
    distance = abs(proposal.intent.reference_price - proposal.stop_price)
    quantity = config.risk_per_trade * snapshot.equity / distance
    return RuleOutcome(
        "approve",
        "fixed_fractional",
        f"{config.risk_per_trade:.2%} of equity {snapshot.equity:.2f} over stop distance "
        f"{distance:g}",
        quantity,
    )


def _fit(proposal: Proposal, max_quantity: float, rule: str, what: str) -> RuleOutcome:
    """Approve when the quantity fits under `max_quantity`; cap a sized one; else reject."""
    quantity = proposal.quantity
    if quantity is None or not math.isfinite(quantity):
        return RuleOutcome("reject", "invalid_input", f"{rule}: no valid quantity to check")
    if quantity <= max_quantity * (1 + 1e-12):
        return RuleOutcome("approve", rule, f"{what} within limit", quantity)
    if proposal.sized and max_quantity > quantity * MIN_CAP_FRACTION:
        return RuleOutcome(
            "cap",
            rule,
            f"{what}: quantity capped from {quantity:g} to {max_quantity:g}",
            max_quantity,
        )
    if max_quantity <= quantity * MIN_CAP_FRACTION:
        return RuleOutcome("reject", rule, f"{what}: no room left (fits {max(max_quantity, 0):g})")
    return RuleOutcome(
        "reject", rule, f"{what}: fixed quantity {quantity:g} exceeds the room for {max_quantity:g}"
    )


def portfolio_heat(
    proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig
) -> RuleOutcome:
    """Sum of open risk (qty x |mark - stop|) including the new position, over equity."""
    per_unit = abs(proposal.intent.reference_price - proposal.stop_price)
    room = config.max_portfolio_heat * snapshot.equity - snapshot.heat
    return _fit(
        proposal, room / per_unit, "portfolio_heat", f"heat limit {config.max_portfolio_heat:.2%}"
    )


def max_leverage(
    proposal: Proposal, snapshot: PortfolioSnapshot, config: RiskConfig
) -> RuleOutcome:
    """Gross notional including the new position, over equity."""
    room = config.max_leverage * snapshot.equity - snapshot.gross_notional
    return _fit(
        proposal,
        room / proposal.intent.reference_price,
        "max_leverage",
        f"leverage limit {config.max_leverage:g}x",
    )


ENTRY_GATES: tuple[Rule, ...] = (
    kill_switch, stale_data, daily_loss_limit, net_flip, max_open_positions
)
ENTRY_LIMITS: tuple[Rule, ...] = (portfolio_heat, max_leverage)


def evaluate(intent: OrderIntent, snapshot: PortfolioSnapshot, config: RiskConfig) -> RuleOutcome:
    """Run the rule chain; the outcome names the rule that fixed the result and its quantity."""
    try:
        stop = effective_stop(intent, config)
    except (TypeError, ValueError):
        stop = math.nan
    proposal = Proposal(intent, intent.quantity, stop, sized=intent.quantity is None)
    checked = check_inputs(proposal, snapshot, config)
    if checked.verdict == "reject":
        return checked
    if intent.reduce_only:
        return reduce_only(proposal, snapshot, config)
    for gate in ENTRY_GATES:
        outcome = gate(proposal, snapshot, config)
        if outcome.verdict == "reject":
            return outcome
    final = position_size(proposal, snapshot, config)
    proposal = replace(proposal, quantity=final.quantity)
    for limit in ENTRY_LIMITS:
        outcome = limit(proposal, snapshot, config)
        if outcome.verdict == "reject":
            return outcome
        if outcome.verdict == "cap":
            final = outcome
            proposal = replace(proposal, quantity=outcome.quantity)
    return final
