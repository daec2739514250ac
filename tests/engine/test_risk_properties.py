"""Property tests of PortfolioRisk: random price paths, intents, fills and funding payments.

A hypothesis state machine drives a `PortfolioRisk` over four symbols: marks with small moves,
jumps and crashes (and the odd NaN mark, which risk must ignore), entries of every shape (both
sides, with and without stops, fixed or risk-sized quantities), reduce-only exits, partial and
full fills of approved orders near the mark with fees, funding payments, halts and resets, and
time steps of seconds to hours so that several UTC days pass.

The test keeps its own book, written from the documented rules and not from PortfolioRisk's
numbers: average-cost positions, last prices, protective stops, the approved orders that have not
filled yet, fees, funding, the start-of-day equity and whether the daily loss limit was reached.
After every step it checks that none of these ever happens:

- an approved entry leaves more open positions, more portfolio heat or more gross notional than
  the limits allow, measured at decision time on projected positions (filled plus approved
  orders not yet filled), or a fixed quantity is changed, or a sized one exceeds what the risk
  per trade allows;
- an entry is approved while halted, or on a UTC day after equity fell to the daily loss limit;
- equity differs from initial + realised + unrealised at the last prices - fees - funding;
- a reduce-only exit is rejected or resized.

The same machine runs over the default profile (the flat `risk:` settings) and over a profile
given to `RiskConfig(profile=...)` with the core rules in another order and other limits.

Heat is measured the way risk defines it: a symbol's projected position at the widest stop among
the filled position's and its pending add-ons' (an unknown stop counts as `default_stop_pct`
away), because a fill re-stops the whole position. The main machines send an add-on with the
side's stop; `FreeAddOnStopsMachine` lets add-ons bring stops of their own (the case that once
let heat exceed the limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine.config import RiskConfig
from engine.risk import PortfolioRisk
from engine.rules.base import MIN_CAP_FRACTION
from engine.timeframes import NS_PER_DAY
from engine.types import (
    Fill,
    FundingPayment,
    Mark,
    OrderIntent,
    PortfolioUpdate,
    RiskDecision,
    intent_id_for,
    order_id_for,
)

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
INITIAL_EQUITY = 100_000.0
START = 20_000 * NS_PER_DAY  # a UTC midnight
NS_PER_SECOND = 1_000_000_000
RELATIVE_TOLERANCE = 1e-6  # on equity, relative to the initial equity
LIMIT_TOLERANCE = 1e-9  # relative slack on limits (float sums in another order)


@dataclass(frozen=True)
class Limits:
    """The limits a profile enforces, as the test checks them."""

    max_open_positions: int
    max_heat: float
    max_leverage: float
    daily_loss: float
    risk_per_trade: float
    default_stop_pct: float


@dataclass
class PendingOrder:
    """An approved order that has not (completely) filled; it keeps its reservation."""

    order_id: str
    symbol: str
    side: int
    remaining: float
    reference_price: float
    stop_price: float | None
    reduce_only: bool


@dataclass
class SymbolModel:
    quantity: float = 0.0
    average_price: float = math.nan
    last_price: float = 100.0
    stop: float | None = None


@dataclass
class PortfolioModel:
    """The test's own accounting, independent of PortfolioRisk."""

    limits: Limits
    symbols: dict[str, SymbolModel] = field(
        default_factory=lambda: {symbol: SymbolModel() for symbol in SYMBOLS})
    pending: dict[str, PendingOrder] = field(default_factory=dict)
    realized: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    day: int | None = None
    day_start_equity: float = INITIAL_EQUITY
    blocked_day: int | None = None
    halted: bool = False

    @property
    def equity(self) -> float:
        unrealized = sum(
            book.quantity * (book.last_price - book.average_price)
            for book in self.symbols.values() if book.quantity != 0)
        return INITIAL_EQUITY + self.realized + unrealized - self.fees - self.funding

    def roll_day(self, ts_event: int) -> None:
        """The first event of a UTC day fixes that day's start equity (before it applies)."""
        day = ts_event // NS_PER_DAY
        if self.day is None or day > self.day:
            self.day = day
            self.day_start_equity = self.equity

    def after_update(self, ts_event: int) -> None:
        if self.equity <= self.day_start_equity * (1.0 - self.limits.daily_loss):
            self.blocked_day = ts_event // NS_PER_DAY

    def projected(self, symbol: str, extra: PendingOrder | None = None) -> float:
        orders = [*self.pending.values(), *([extra] if extra else [])]
        total = self.symbols[symbol].quantity + sum(
            order.side * order.remaining for order in orders if order.symbol == symbol)
        return 0.0 if abs(total) < 1e-12 else total

    def exposure(self, extra: PendingOrder | None = None) -> tuple[float, float, int]:
        """(heat, gross notional, open positions) of projected positions, pricing each at its
        last price and its widest stop: the filled position's protective stop when it is on the
        projected side and every approved entry's on that side, an unknown one counting one
        default stop away."""
        heat = gross = 0.0
        count = 0
        for symbol, book in self.symbols.items():
            projected = self.projected(symbol, extra)
            if projected == 0:
                continue
            side = 1 if projected > 0 else -1
            default = book.last_price * self.limits.default_stop_pct
            distances = []
            if book.quantity * side > 0:
                distances.append(default if book.stop is None
                                 else abs(book.last_price - book.stop))
            for order in [*self.pending.values(), *([extra] if extra else [])]:
                if order.symbol == symbol and not order.reduce_only and order.side == side:
                    distances.append(default if order.stop_price is None
                                     else abs(book.last_price - order.stop_price))
            # no filled position and no entry on the projected side: the projection is only
            # pending reduce-only exits outgrowing the position, which can never fill into a
            # position of that side, so it carries no stop risk (as PortfolioRisk counts it)
            heat += abs(projected) * max(distances, default=0.0)
            gross += abs(projected) * book.last_price
            count += 1
        return heat, gross, count

    def side_stop(self, symbol: str, side: int,
                  extra: PendingOrder | None = None) -> tuple[bool, float | None]:
        """(exposed, stop) of a symbol's exposure on one side: exposed when the filled position
        or an approved entry is on that side; the stop is the position's protective stop when the
        filled position is on that side, else the latest approved entry's stop (None: the
        default stop applies)."""
        book = self.symbols[symbol]
        if book.quantity * side > 0 and book.stop is not None:
            return True, book.stop
        entries = [order for order in [*self.pending.values(), *([extra] if extra else [])]
                   if order.symbol == symbol and not order.reduce_only and order.side == side]
        stops = [order.stop_price for order in entries if order.stop_price is not None]
        return book.quantity * side > 0 or bool(entries), stops[-1] if stops else None

    def apply_fill(self, fill: Fill) -> None:
        book = self.symbols[fill.symbol]
        signed = fill.side * fill.quantity
        if book.quantity == 0 or book.quantity * signed > 0:
            held = abs(book.quantity)
            cost = held * (book.average_price if held else 0.0) + fill.quantity * fill.price
            book.quantity += signed
            book.average_price = cost / abs(book.quantity)
        else:
            closing = min(fill.quantity, abs(book.quantity))
            direction = 1 if book.quantity > 0 else -1
            self.realized += closing * (fill.price - book.average_price) * direction
            book.quantity += signed
            if abs(book.quantity) < 1e-12:
                book.quantity, book.average_price = 0.0, math.nan
            elif book.quantity * direction < 0:
                book.average_price = fill.price
        self.fees += fill.fee
        book.last_price = fill.price
        book.stop = fill.stop_price if book.quantity != 0 else None
        order = self.pending[fill.order_id]
        order.remaining -= fill.quantity
        if order.remaining <= 1e-12:
            del self.pending[fill.order_id]


class RiskMachine(RuleBasedStateMachine):
    """Random market, intents and fills against one PortfolioRisk, checked against the model."""

    config: ClassVar[RiskConfig] = RiskConfig(max_open_positions=3)
    free_addon_stops: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.risk = PortfolioRisk(self.config, INITIAL_EQUITY)
        self.model = PortfolioModel(limits_of(self.config))
        self.now = START
        self.sequence = dict.fromkeys(SYMBOLS, 0)

    # ---------------------------------------------------------------- helpers

    def tick(self, seconds: int) -> int:
        self.now += seconds * NS_PER_SECOND
        return self.now

    def next_sequence(self, symbol: str) -> int:
        self.sequence[symbol] += 1
        return self.sequence[symbol]

    def submit(self, updates: Sequence[PortfolioUpdate]) -> None:
        """Hand updates over in reverse arrival order; risk must apply them in key order."""
        self.risk.submit(list(reversed(updates)))
        self.risk.apply_all()

    # ---------------------------------------------------------------- market

    @initialize()
    def open_market(self) -> None:
        marks = [Mark(symbol, self.tick(1), self.next_sequence(symbol), 100.0)
                 for symbol in SYMBOLS]
        for mark in marks:
            self.model.roll_day(mark.ts_event)
            self.model.after_update(mark.ts_event)
        self.submit(marks)

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        move=st.one_of(
            st.floats(-0.02, 0.02),
            st.sampled_from([-0.5, -0.3, -0.15, -0.08, 0.08, 0.15, 0.3, 0.6]),
        ),
        seconds=st.integers(1, 6 * 3600),
        trail=st.sampled_from([None, 0.3, 1.0]),
        invalid=st.booleans(),
    )
    def mark(self, symbol: str, move: float, seconds: int, trail: float | None,
             invalid: bool) -> None:
        """A mark: a move, a jump or a crash; may trail the stop; now and then a NaN price."""
        book = self.model.symbols[symbol]
        price = book.last_price * (1.0 + move)
        stop = book.stop
        if trail is not None and stop is not None and book.quantity != 0:
            side = 1 if book.quantity > 0 else -1
            candidate = stop + trail * (price - stop)
            if side * (candidate - stop) > 0:  # stops only ever move toward the price
                stop = candidate
        ts = self.tick(seconds)
        sent_price = math.nan if invalid and move > 0.1 else price
        self.model.roll_day(ts)
        if math.isfinite(sent_price):
            book.last_price = sent_price
        book.stop = stop if book.quantity != 0 else None
        self.model.after_update(ts)
        self.submit([Mark(symbol, ts, self.next_sequence(symbol), sent_price, stop)])

    @rule(symbols=st.lists(st.sampled_from(SYMBOLS), min_size=2, max_size=4, unique=True),
          move=st.sampled_from([-0.4, -0.2, -0.1, 0.1, 0.25]))
    def market_wide_move(self, symbols: list[str], move: float) -> None:
        """Several symbols move at one instant; risk gets them in reverse order."""
        ts = self.tick(60)
        self.model.roll_day(ts)
        marks = []
        for symbol in sorted(symbols):  # risk applies one instant's marks in symbol order
            book = self.model.symbols[symbol]
            book.last_price *= 1.0 + move
            marks.append(Mark(symbol, ts, self.next_sequence(symbol), book.last_price,
                              book.stop))
            self.model.after_update(ts)
        self.submit(marks)

    @rule(symbol=st.sampled_from(SYMBOLS), rate=st.floats(-0.003, 0.003),
          seconds=st.integers(1, 8 * 3600))
    def funding(self, symbol: str, rate: float, seconds: int) -> None:
        book = self.model.symbols[symbol]
        amount = book.quantity * book.last_price * rate
        ts = self.tick(seconds)
        self.model.roll_day(ts)
        self.model.funding += amount
        self.model.after_update(ts)
        self.submit([FundingPayment(symbol, ts, self.next_sequence(symbol), amount, rate,
                                    book.last_price, book.quantity)])

    # ---------------------------------------------------------------- intents

    def decide(self, intent: OrderIntent) -> tuple[RiskDecision, PendingOrder | None]:
        model = self.model
        model.roll_day(intent.ts_event)
        heat, gross, count = model.exposure()
        equity = model.equity
        decision = self.risk.decide(intent)
        event(f"decided by {decision.rule}")  # shown by --hypothesis-show-statistics
        # the portfolio the decision journals is the one the model holds before it
        assert decision.open_positions == count, (decision, count)
        assert math.isclose(decision.daily_pnl, equity - model.day_start_equity, rel_tol=0,
                            abs_tol=RELATIVE_TOLERANCE * INITIAL_EQUITY), decision
        if equity > 0:
            assert math.isclose(decision.portfolio_heat, heat / equity, rel_tol=1e-9,
                                abs_tol=1e-12), (decision, heat / equity)
            assert math.isclose(decision.gross_leverage, gross / equity, rel_tol=1e-9,
                                abs_tol=1e-12), (decision, gross / equity)
        if not decision.approved:
            return decision, None
        order = PendingOrder(intent.order_id, intent.symbol, intent.side, decision.quantity,
                             intent.reference_price, intent.stop_price, intent.reduce_only)
        return decision, order

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        side=st.sampled_from([1, -1]),
        stop_pct=st.sampled_from([None, 0.003, 0.01, 0.02, 0.05, 0.12]),
        notional=st.one_of(st.none(), st.floats(0.02, 2.5)),
        seconds=st.integers(1, 3 * 3600),
    )
    def entry(self, symbol: str, side: int, stop_pct: float | None, notional: float | None,
              seconds: int) -> None:
        """An entry at the last price; quantity None asks risk to size it."""
        model = self.model
        price = model.symbols[symbol].last_price
        stop = None if stop_pct is None else price * (1.0 - side * stop_pct)
        exposed, side_stop = model.side_stop(symbol, side)
        if exposed and not self.free_addon_stops:
            stop = side_stop  # one protective stop per symbol and side (see module docs)
        equity_before = model.equity
        quantity = None if notional is None else notional * max(equity_before, 1.0) / price
        ts = self.tick(seconds)
        sequence = self.next_sequence(symbol)
        intent = OrderIntent(intent_id_for(symbol, sequence), symbol, ts, sequence, side,
                             "entry", False, quantity, price, stop, reason="property")
        model.roll_day(ts)
        equity = model.equity
        decision, order = self.decide(intent)
        if order is None:
            return
        limits = model.limits
        day = ts // NS_PER_DAY
        assert not model.halted, f"entry approved while halted: {decision}"
        assert model.blocked_day != day, (
            f"entry approved on day {day} after the daily loss limit was reached "
            f"(day start {model.day_start_equity}, equity {equity}): {decision}")
        assert equity > 0 and decision.quantity > 0, decision
        assert math.isclose(decision.equity, equity, rel_tol=0,
                            abs_tol=RELATIVE_TOLERANCE * INITIAL_EQUITY), (decision, equity)
        if quantity is not None:
            assert decision.quantity == quantity, f"fixed quantity changed: {decision}"
        else:
            effective_stop = (stop if stop is not None
                              else price * (1.0 - side * limits.default_stop_pct))
            budget = limits.risk_per_trade * equity / abs(price - effective_stop)
            assert decision.quantity <= budget * (1 + LIMIT_TOLERANCE), (decision, budget)
        assert model.projected(symbol) * side >= 0, f"entry against the position: {decision}"
        heat, gross, count = model.exposure(order)
        slack = 1 + LIMIT_TOLERANCE
        assert count <= limits.max_open_positions, f"{count} open positions after {decision}"
        assert heat <= limits.max_heat * equity * slack, (
            f"heat {heat} above {limits.max_heat:.2%} of equity {equity} after {decision}")
        assert gross <= limits.max_leverage * equity * slack, (
            f"gross {gross} above {limits.max_leverage}x equity {equity} after {decision}")
        model.pending[order.order_id] = order

    @precondition(lambda self: any(
        self.model.projected(symbol) != 0 for symbol in SYMBOLS))
    @rule(data=st.data(), fraction=st.sampled_from([0.25, 0.5, 1.0]),
          seconds=st.integers(1, 3600))
    def exit(self, data: st.DataObject, fraction: float, seconds: int) -> None:
        """A reduce-only exit of part or all of a projected position: approved whatever the
        limits, halts and losses, capped at what it can close (the filled position against it
        plus pending entries adding to that position; other pending exits are not netted), and
        refused only when there is nothing to close."""
        held = [symbol for symbol in SYMBOLS if self.model.projected(symbol) != 0]
        symbol = data.draw(st.sampled_from(held))
        projected = self.model.projected(symbol)
        side = -1 if projected > 0 else 1
        quantity = abs(projected) * fraction
        ts = self.tick(seconds)
        sequence = self.next_sequence(symbol)
        price = self.model.symbols[symbol].last_price
        intent = OrderIntent(intent_id_for(symbol, sequence), symbol, ts, sequence, side,
                             "exit", True, quantity, price, None, reason="property exit")
        decision, order = self.decide(intent)
        book = self.model.symbols[symbol]
        reducible = max(0.0, -side * book.quantity) + sum(
            order.remaining for order in self.model.pending.values()
            if order.symbol == symbol and not order.reduce_only and order.side == -side)
        assert decision.rule == "reduce_only", decision
        if reducible <= quantity * MIN_CAP_FRACTION:
            assert not decision.approved, decision
            return
        assert decision.approved, decision
        assert decision.quantity == pytest.approx(min(quantity, reducible), rel=1e-12), (
            decision, reducible)
        assert order is not None
        self.model.pending[order.order_id] = order

    # ---------------------------------------------------------------- fills

    def fillable(self, order: PendingOrder) -> float:
        """How much of an order may fill now: reduce-only orders only shrink the position."""
        if not order.reduce_only:
            return order.remaining
        held = self.model.symbols[order.symbol].quantity
        return min(order.remaining, abs(held)) if held * order.side < 0 else 0.0

    @precondition(lambda self: bool(self.model.pending))
    @rule(data=st.data(), portion=st.sampled_from([0.1, 0.5, 1.0]),
          slippage=st.floats(-0.005, 0.005), fee_bps=st.sampled_from([0.0, 2.0, 4.0, 10.0]),
          seconds=st.integers(1, 600))
    def fill(self, data: st.DataObject, portion: float, slippage: float, fee_bps: float,
             seconds: int) -> None:
        """A partial or full fill of an approved order near the last price, with its fee."""
        model = self.model
        order = model.pending[data.draw(st.sampled_from(sorted(model.pending)))]
        available = self.fillable(order)
        if available <= 0:
            return
        quantity = available if portion == 1.0 else available * portion
        book = model.symbols[order.symbol]
        price = book.last_price * (1.0 + slippage)
        fee = quantity * price * fee_bps / 1e4
        after = book.quantity + order.side * quantity
        if abs(after) < 1e-12:
            stop = None
        elif order.reduce_only:
            stop = book.stop
        else:
            stop = order.stop_price
        ts = self.tick(seconds)
        sequence = self.next_sequence(order.symbol)
        fill = Fill(f"{order.symbol}:f{sequence}", order.order_id, order.symbol, ts, sequence,
                    order.side, quantity, price, order.reference_price, fee, "taker", 0.0, 0.0,
                    stop)
        model.roll_day(ts)
        model.apply_fill(fill)
        model.after_update(ts)
        self.submit([fill])

    # ---------------------------------------------------------------- manual control

    @rule(seconds=st.integers(1, 3600))
    def halt(self, seconds: int) -> None:
        self.tick(seconds)
        self.risk.halt("property halt")
        self.model.halted = True

    @rule()
    def reset_halt(self) -> None:
        self.risk.reset_halt()
        self.model.halted = False

    # ---------------------------------------------------------------- invariants

    @invariant()
    def equity_is_cash_plus_marked_positions(self) -> None:
        model, risk = self.model, self.risk
        expected = model.equity
        assert math.isclose(risk.equity, expected, rel_tol=0,
                            abs_tol=RELATIVE_TOLERANCE * INITIAL_EQUITY), (risk.equity, expected)
        assert math.isclose(risk.fees, model.fees, abs_tol=1e-6)
        assert math.isclose(risk.funding, model.funding, abs_tol=1e-6)
        assert math.isclose(risk.realized, model.realized, abs_tol=1e-6 * INITIAL_EQUITY)
        for symbol, book in model.symbols.items():
            quantity, _average = risk.position(symbol)
            assert math.isclose(quantity, book.quantity, abs_tol=1e-9), symbol


def limits_of(config: RiskConfig) -> Limits:
    """The limits a config enforces: its profile's rule parameters, else the flat settings."""
    if config.profile is None:
        return Limits(config.max_open_positions, config.max_portfolio_heat, config.max_leverage,
                      config.daily_loss_limit, config.risk_per_trade, config.default_stop_pct)
    parameters: dict[str, Any] = {entry.rule: entry for entry in config.profile.rules}
    return Limits(
        max_open_positions=parameters["max_open_positions"].limit,
        max_heat=parameters["portfolio_heat"].limit_pct,
        max_leverage=parameters["max_leverage"].limit,
        daily_loss=parameters["daily_loss_limit"].limit_pct,
        risk_per_trade=parameters["fixed_fractional"].risk_pct,
        default_stop_pct=config.profile.default_stop_pct,
    )


# The core rules in another order (limits leverage-first, gates with the kill switch last) and
# other limits, given to RiskConfig the way a YAML profile under configs/risk/ would be.
REORDERED_PROFILE: dict[str, Any] = {
    "name": "reordered_core",
    "description": "property test: core rules, other order and limits",
    "default_stop_pct": 0.03,
    "rules": [
        {"rule": "max_leverage", "limit": 2.0},
        {"rule": "max_open_positions", "limit": 2},
        {"rule": "portfolio_heat", "limit_pct": 0.04},
        {"rule": "fixed_fractional", "risk_pct": 0.015},
        {"rule": "net_flip"},
        {"rule": "daily_loss_limit", "limit_pct": 0.02},
        {"rule": "stale_data"},
        {"rule": "kill_switch"},
    ],
}


class ReorderedProfileMachine(RiskMachine):
    config: ClassVar[RiskConfig] = RiskConfig(profile=REORDERED_PROFILE)


MACHINE_SETTINGS = settings(max_examples=300, stateful_step_count=60, deadline=None,
                            derandomize=True)
TestRiskProperties = pytest.mark.slow(RiskMachine.TestCase)
TestRiskProperties.settings = MACHINE_SETTINGS
TestReorderedProfileProperties = pytest.mark.slow(ReorderedProfileMachine.TestCase)
TestReorderedProfileProperties.settings = MACHINE_SETTINGS


class FreeAddOnStopsMachine(RiskMachine):
    """Add-on entries (a symbol already exposed on that side) with a stop of their own."""

    free_addon_stops: ClassVar[bool] = True


def test_add_ons_with_their_own_stops_keep_heat_within_the_limit() -> None:
    run_state_machine_as_test(FreeAddOnStopsMachine, settings=settings(
        MACHINE_SETTINGS, phases=[Phase.explicit, Phase.generate]))  # no shrinking: faster


def test_a_wider_stop_add_on_is_limited_by_the_whole_position_at_that_stop() -> None:
    """The case hypothesis once found: two risk-sized longs on one symbol, the second with a 12%
    stop, each sized to 1% risk. Filled, the position carries the 12% stop: 583 x 12 = 7% heat
    (limit 5%). The add-on is now refused, and heat stays within the limit after the fills."""
    risk = PortfolioRisk(RiskConfig(), INITIAL_EQUITY)
    risk.submit([Mark("AAA", START + 1, 1, 100.0)])
    first = OrderIntent(intent_id_for("AAA", 2), "AAA", START + 2, 2, 1, "entry", False, None,
                        100.0, None)
    assert risk.decide(first).quantity == pytest.approx(500.0)  # 1% over the default 2% stop
    add_on = OrderIntent(intent_id_for("AAA", 3), "AAA", START + 3, 3, 1, "entry", False, None,
                         100.0, 88.0)
    decision = risk.decide(add_on)
    # room: 5,000 of heat for the whole position at 12 a unit = 416.7 < the 500 held
    assert not decision.approved and decision.rule == "portfolio_heat", decision
    risk.submit([Fill("AAA:f4", first.order_id, "AAA", START + 4, 4, 1, 500.0, 100.0, 100.0, 0.0,
                      "taker", 0.0, 0.0, 98.0)])
    risk.apply_all()
    assert risk.summary()["portfolio_heat"] <= 0.05 * (1 + LIMIT_TOLERANCE)


def test_the_reordered_profile_is_loaded_in_its_order() -> None:
    profile = ReorderedProfileMachine.config.profile
    assert profile is not None
    assert profile.rule_names[:3] == ("max_leverage", "max_open_positions", "portfolio_heat")
    built = [rule.name for rule in profile.build()]  # stage order, profile order within
    assert built == ["max_open_positions", "net_flip", "daily_loss_limit", "stale_data",
                     "kill_switch", "fixed_fractional", "max_leverage", "portfolio_heat"]
    assert limits_of(ReorderedProfileMachine.config) == Limits(2, 0.04, 2.0, 0.02, 0.015, 0.03)


def test_the_model_catches_a_heat_breach() -> None:
    """The checks can fail: a model with one position above the heat limit says so."""
    model = PortfolioModel(limits_of(RiskConfig()))
    model.symbols["AAA"].quantity = 1_000.0
    model.symbols["AAA"].average_price = 100.0
    model.symbols["AAA"].stop = 90.0
    heat, gross, count = model.exposure()
    assert (heat, gross, count) == (pytest.approx(10_000.0), pytest.approx(100_000.0), 1)
    assert heat > model.limits.max_heat * model.equity


def test_a_reentry_while_the_exit_is_pending_is_counted_at_its_own_stop() -> None:
    """A path the engine takes (order_flow allows an entry once the projected position is
    flat): a long whose stop trailed to 99.9 is being closed and a new long with a 96 stop is
    approved. It must count at 96 (it once counted at 99.9, so a BBB entry could fill the room
    and heat read 5.8% once everything filled): BBB gets only what is left."""
    risk = PortfolioRisk(RiskConfig(), INITIAL_EQUITY)

    def intent(symbol: str, sequence: int, side: int, quantity: float | None,
               stop: float | None) -> OrderIntent:
        return OrderIntent(intent_id_for(symbol, sequence), symbol, START + sequence, sequence,
                           side, "entry" if stop else "exit", stop is None, quantity, 100.0, stop)

    def fill(symbol: str, sequence: int, order: int, side: int, quantity: float,
             stop: float | None) -> Fill:
        return Fill(f"{symbol}:f{sequence}", f"{symbol}:o{order}", symbol, START + sequence,
                    sequence, side, quantity, 100.0, 100.0, 0.0, "taker", 0.0, 0.0, stop)

    risk.submit([Mark("AAA", START + 1, 1, 100.0), Mark("BBB", START + 1, 1, 100.0)])
    assert risk.decide(intent("AAA", 2, 1, 1_000.0, 96.0)).approved
    risk.submit([fill("AAA", 3, 2, 1, 1_000.0, 96.0), Mark("AAA", START + 4, 4, 100.0, 99.9)])
    assert risk.decide(intent("AAA", 5, -1, 1_000.0, None)).approved  # the exit, pending
    assert risk.decide(intent("AAA", 6, 1, None, 96.0)).quantity == pytest.approx(250.0)
    fixed = risk.decide(intent("BBB", 7, 1, 1_200.0, 96.0))
    assert not fixed.approved and fixed.rule == "portfolio_heat", fixed
    fits = risk.decide(intent("BBB", 8, 1, 1_000.0, 96.0))  # (5,000 - 250 x 4) / 4 = 1,000
    assert fits.approved and fits.quantity == 1_000.0, fits
    risk.submit([fill("AAA", 9, 5, -1, 1_000.0, None), fill("AAA", 10, 6, 1, 250.0, 96.0),
                 fill("BBB", 11, 8, 1, 1_000.0, 96.0)])
    risk.apply_all()
    assert risk.equity == INITIAL_EQUITY  # nothing moved: only the heat measure changed
    assert risk.summary()["portfolio_heat"] <= 0.05 * (1 + LIMIT_TOLERANCE)


def test_a_reduce_only_intent_never_opens_a_position() -> None:
    """Exits always pass, but only as exits: one with no position to reduce must not leave a
    30x short in the projected book."""
    risk = PortfolioRisk(RiskConfig(), INITIAL_EQUITY)
    risk.submit([Mark("AAA", START + 1, 1, 100.0)])
    exit_intent = OrderIntent(intent_id_for("AAA", 2), "AAA", START + 2, 2, -1, "exit", True,
                              30_000.0, 100.0, None)
    decision = risk.decide(exit_intent)
    assert not decision.approved and decision.rule == "reduce_only", decision
    summary = risk.summary()
    assert summary["open_positions"] == 0 and summary["gross_leverage"] <= 3.0, summary
    entry = OrderIntent(intent_id_for("AAA", 3), "AAA", START + 3, 3, 1, "entry", False, 100.0,
                        100.0, 98.0)
    assert risk.decide(entry).approved
    too_big = OrderIntent(intent_id_for("AAA", 4), "AAA", START + 4, 4, -1, "exit", True,
                          300.0, 100.0, None)
    capped = risk.decide(too_big)  # closes what is there (the pending entry), never flips
    assert capped.approved and capped.quantity == pytest.approx(100.0), capped
    assert risk.summary()["open_positions"] == 0


def test_a_buy_exit_is_capped_at_the_filled_short_when_exits_outgrow_the_position() -> None:
    """The case the property search found: exits were approved for a long that had not filled,
    the long filled a tenth, a short entry filled. The projection is then short only because
    pending exits outgrow the position; a new buy exit is capped at the filled short."""
    risk = PortfolioRisk(RiskConfig(max_leverage=10.0, max_portfolio_heat=1.0), 100_000.0)
    second = 1_000_000_000
    clock = iter(range(1_728_000_000, 1_728_001_000))

    def at() -> int:
        return next(clock) * second

    risk.submit([Mark("CCC", at(), 0, 100.0)])
    risk.apply_all()

    def intent(sequence: int, side: int, kind: str, quantity: float) -> OrderIntent:
        return OrderIntent(intent_id_for("CCC", sequence), "CCC", at(), sequence, side, kind,
                           kind == "exit", quantity, 100.0, None, reason="case")

    assert risk.decide(intent(1, 1, "entry", 2_000.0)).approved
    for sequence, quantity in ((2, 500.0), (3, 375.0), (4, 1_125.0)):
        assert risk.decide(intent(sequence, -1, "exit", quantity)).quantity == quantity
    fill_entry = Fill("CCC:f5", order_id_for("CCC", 1), "CCC", at(), 5, 1, 200.0, 100.0,
                      100.0, 0.0, "taker", 0.0, 0.0, None)
    risk.submit([fill_entry])
    risk.apply_all()
    assert risk.decide(intent(6, -1, "entry", 250.0)).approved
    fill_short = Fill("CCC:f7", order_id_for("CCC", 6), "CCC", at(), 7, -1, 250.0, 100.0,
                      100.0, 0.0, "taker", 0.0, 0.0, None)
    risk.submit([fill_short])
    risk.apply_all()
    # filled: -50; pending: the long's 1,800 and 2,000 of sells. A buy exit of 62.5 can close
    # the 50 short and the entry still working adds to the long side, not the short.
    exit_decision = risk.decide(intent(8, 1, "exit", 62.5))
    assert exit_decision.approved and exit_decision.quantity == pytest.approx(50.0)
