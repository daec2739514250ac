"""Portfolio risk: positions, equity, drawdown, loss limits and the decision on every intent.

`PortfolioRisk` is the state the PortfolioRiskActor wraps. Fills and marks from every symbol are
`submit`ted into a buffer and applied lazily: `decide(intent)` first applies, in
`(ts_event, symbol, sequence)` order, every buffered update whose key is below the intent's key,
then runs the rules of the run's risk profile (`engine.rules`; the flat `risk:` settings when the
config names no profile). Because application order depends only on keys,
never on arrival order, a multi-symbol replay decides the same way however its messages interleave
(DESIGN.md, Time and determinism). An update that arrives after a decision with a later key has
been taken is still applied (in key order among the buffered ones) and counted as late: a
coordinator bug, never silently hidden.

Accounting: per symbol a signed quantity and average price; realized P&L on reductions; fees
separately; funding payments (`FundingPayment`, amount > 0 paid) in `funding`;
equity = initial + realized - fees - funding + unrealized (at the last mark). The day's start
equity is the equity when the first event of a UTC day (by ts_event) is seen. Reserved exposure:
an approved intent's order counts in the projected position until its fills arrive (order ids
come from `engine.types.order_id_for`); an `OrderReleased` update (an order rejected, or its
remainder cancelled) frees what is left of it.

Rules observe the portfolio: after every applied update they see the fill or mark, the equity it
left, each round trip that went flat (`TradeClosed`, with its initial risk for R multiples), each
new UTC day and each venue API call (`observe_api_call`). What they ask for beyond refusing
entries (alert, halt, flatten) is journaled in `risk_events` and queued for the engine
(`drain_actions`); a "halt" halts here at once. `reset_halt` is the manual reset: it clears the
halt and every rule's suspension.

Fail closed: a non-finite mark is ignored (counted); a non-finite equity makes every entry fail
with "invalid_input", while reduce-only exits still pass.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from engine.config import RiskConfig
from engine.control.state import ControlState
from engine.rules.base import (
    ApiCallObserved,
    DayStarted,
    EquityObserved,
    FillObserved,
    MarkObserved,
    PortfolioSnapshot,
    PositionExposure,
    RiskAction,
    RiskEvent,
    TradeClosed,
)
from engine.rules.chain import evaluate
from engine.rules.control import ControlEffect, ManualControl, with_manual_control
from engine.rules.core import default_profile
from engine.timeframes import NS_PER_DAY
from engine.types import (
    POSITION_CHECK,
    EventKey,
    Fill,
    FundingPayment,
    Mark,
    OrderIntent,
    OrderReleased,
    PortfolioUpdate,
    RiskDecision,
    update_key,
)

_EPSILON = 1e-12


@dataclass
class _PendingOrder:
    side: int
    remaining: float
    reference_price: float
    stop_price: float | None
    reduce_only: bool


@dataclass
class _SymbolBook:
    quantity: float = 0.0
    avg_price: float = math.nan
    mark: float = math.nan
    stop: float | None = None
    realized: float = 0.0
    pending: dict[str, _PendingOrder] = field(default_factory=dict)
    # the open round trip: realized P&L and fees since it opened, and its initial risk
    trip_pnl: float = 0.0
    trip_fees: float = 0.0
    trip_risk: float = 0.0

    def projected(self) -> float:
        total = self.quantity + sum(order.side * order.remaining for order in self.pending.values())
        return 0.0 if abs(total) < _EPSILON else total

    def price(self) -> float:
        if math.isfinite(self.mark):
            return self.mark
        for order in self.pending.values():
            return order.reference_price
        return self.avg_price

    def unrealized(self) -> float:
        if self.quantity == 0 or not math.isfinite(self.mark):
            return 0.0
        return self.quantity * (self.mark - self.avg_price)

    def exposure(self, default_stop_pct: float) -> tuple[float, float]:
        """(heat, gross notional) of the projected position, in quote currency: the projected
        quantity at the widest stop on its side (`side_distance`)."""
        projected = self.projected()
        if projected == 0:
            return 0.0, 0.0
        price = self.price()
        distance = self.side_distance(1 if projected > 0 else -1, default_stop_pct)
        return abs(projected) * distance, abs(projected) * price

    def side_distance(self, side: int, default_stop_pct: float) -> float:
        """The widest stop distance among the filled position (when on `side`) and the pending
        entries on `side`, an unknown stop counting `default_stop_pct` away; 0 when there is
        none. A fill sets the whole position's stop, so an add-on with a wider stop may re-stop
        everything: heat must not read lower than it can become once the orders fill."""
        price = self.price()
        default_distance = price * default_stop_pct
        distances: list[float] = []
        if self.quantity * side > 0:
            distances.append(abs(price - self.stop) if self.stop is not None
                             else default_distance)
        for order in self.pending.values():
            if not order.reduce_only and order.side == side:
                distances.append(abs(price - order.stop_price) if order.stop_price is not None
                                 else default_distance)
        return max(distances, default=0.0)

    def reducible(self, exit_side: int) -> float:
        """How much a reduce-only order on `exit_side` can close: the filled position against it
        plus pending entries that would add to that position (pending exits are not netted, so
        a stale reservation never blocks an exit)."""
        filled = max(0.0, -exit_side * self.quantity)
        adding = sum(order.remaining for order in self.pending.values()
                     if not order.reduce_only and order.side == -exit_side)
        return filled + adding


class PortfolioRisk:
    """Positions and limits of the whole portfolio; decides every intent. Picklable."""

    def __init__(self, config: RiskConfig, initial_equity: float) -> None:
        if not (math.isfinite(initial_equity) and initial_equity > 0):
            raise ValueError(f"initial equity must be finite and > 0, got {initial_equity!r}")
        self.config = config
        self.profile = config.profile or default_profile(config)
        # the operator's manual_control runs in every profile (engine.rules.control)
        self.control = ManualControl()
        self.rules = with_manual_control(self.control, self.profile.build())
        self.initial_equity = float(initial_equity)
        self._books: dict[str, _SymbolBook] = {}
        self._buffer: list[tuple[EventKey, int, PortfolioUpdate]] = []
        self._arrivals = 0
        self._frontier: EventKey | None = None  # highest key applied or decided
        self.realized = 0.0
        self.fees = 0.0
        self.funding = 0.0  # funding paid (received is negative), quote currency
        self.equity = self.initial_equity
        self.peak_equity = self.initial_equity
        self.max_drawdown = 0.0
        self._day: int | None = None
        self.day_start_equity = self.initial_equity
        self._now = 0  # ts_event of the latest update or decision
        self.halted = False
        self.halt_reason = ""
        self.late_updates = 0
        self.invalid_updates = 0
        self.decisions: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.approved = 0
        self.rejected = 0
        self._pending_actions: list[RiskAction] = []
        self._flatten_due: dict[str, RiskAction] = {}  # symbol -> why risk wants it closed
        self._event_sequence = 0
        self._journal: dict[str, list[dict[str, Any]]] = {
            "risk_decisions": [],
            "equity": [],
            "positions": [],
            "risk_events": [],
        }

    # ------------------------------------------------------------------ manual overrides

    def halt(self, reason: str) -> None:
        """Kill switch: reject new entries until `reset_halt`; reduce-only exits still pass."""
        self.halted = True
        self.halt_reason = reason or "manual halt"

    def reset_halt(self) -> None:
        """The manual reset: clear the halt and every rule's suspension."""
        self.halted = False
        self.halt_reason = ""
        for rule in self.rules:
            rule.manual_reset()

    def resume(self) -> None:
        """Older name of `reset_halt`."""
        self.reset_halt()

    def apply_control(self, state: ControlState) -> ControlEffect:
        """The operator's state (engine.control) into the manual_control rule: its halt halts
        here, a new reset-halt resets here, exit requests become flatten actions. The effect
        reports risk's own halt (a rule's kill switch included), so the controller can persist
        it: only `ats control reset-halt` clears it, even across a restart."""
        positions = {symbol: book.quantity for symbol, book in self._books.items()}
        effect = self.control.update(state, positions, self._now or None)
        if effect.reset_halt:
            self.reset_halt()
        for action in effect.actions:
            self._record_action(action)
        if self.halted and not effect.halted:
            effect = replace(effect, halted=True, halt_reason=self.halt_reason)
        return effect

    # ------------------------------------------------------------------ updates

    def submit(self, updates: Sequence[PortfolioUpdate]) -> None:
        """Buffer fills and marks; they are applied in key order when a decision needs them."""
        for update in updates:
            key = update_key(update)
            if self._frontier is not None and key < self._frontier:
                self.late_updates += 1
            heapq.heappush(self._buffer, (key, self._arrivals, update))
            self._arrivals += 1

    def apply_all(self) -> None:
        """Apply every buffered update, in key order."""
        while self._buffer:
            self._apply(heapq.heappop(self._buffer)[2])

    def finish(self) -> None:
        """End of run: apply what is left."""
        self.apply_all()

    def observe_api_call(self, ts_event: int, ok: bool, what: str = "") -> None:
        """One venue call by live execution, succeeded or failed; rules watch the error rate."""
        self._emit(ApiCallObserved(ts_event, ok, what), None)

    def _apply_until(self, key: EventKey) -> None:
        while self._buffer and self._buffer[0][0] < key:
            self._apply(heapq.heappop(self._buffer)[2])

    def _advance_frontier(self, key: EventKey) -> None:
        if self._frontier is None or key > self._frontier:
            self._frontier = key

    def _apply(self, update: PortfolioUpdate) -> None:
        key = update_key(update)
        self._advance_frontier(key)
        self._roll_day(update.ts_event)
        book = self._books.setdefault(update.symbol, _SymbolBook())
        if isinstance(update, Fill):
            self._apply_fill(book, update)
        elif isinstance(update, FundingPayment):
            self.funding += update.amount
            self._refresh()
        elif isinstance(update, OrderReleased):
            released = book.pending.pop(update.order_id, None)
            if released is not None and update.successor is not None:
                book.pending[update.successor] = released
        else:
            self._apply_mark(book, update)
        self._emit(EquityObserved(update.ts_event), update.symbol)

    def _apply_fill(self, book: _SymbolBook, fill: Fill) -> None:
        signed = fill.side * fill.quantity
        stop_distance = (abs(fill.price - fill.stop_price) if fill.stop_price is not None
                         else math.nan)
        closed: TradeClosed | None = None
        if book.quantity == 0 or book.quantity * signed > 0:
            total = abs(book.quantity) + fill.quantity
            weighted = abs(book.quantity) * (book.avg_price if book.quantity else 0.0)
            book.avg_price = (weighted + fill.quantity * fill.price) / total
            book.quantity += signed
            book.trip_risk += fill.quantity * stop_distance
            book.trip_fees += fill.fee
        else:
            closing = min(fill.quantity, abs(book.quantity))
            direction = 1 if book.quantity > 0 else -1
            pnl = closing * (fill.price - book.avg_price) * direction
            book.realized += pnl
            self.realized += pnl
            book.quantity += signed
            closing_fee = fill.fee * closing / fill.quantity
            book.trip_pnl += pnl
            book.trip_fees += closing_fee
            if abs(book.quantity) < _EPSILON or book.quantity * direction < 0:
                closed = TradeClosed(fill.symbol, fill.ts_event, book.trip_pnl - book.trip_fees,
                                     book.trip_risk, book.trip_fees)
                book.trip_pnl = book.trip_fees = book.trip_risk = 0.0
            if abs(book.quantity) < _EPSILON:
                book.quantity = 0.0
                book.avg_price = math.nan
                self._flatten_due.pop(fill.symbol, None)
            elif book.quantity * direction < 0:  # flipped through zero: the rest opens here
                book.avg_price = fill.price
                book.trip_fees = fill.fee - closing_fee
                book.trip_risk = abs(book.quantity) * stop_distance
        self.fees += fill.fee
        book.mark = fill.price
        book.stop = fill.stop_price if book.quantity != 0 else None
        order = book.pending.get(fill.order_id)
        if order is not None:
            order.remaining -= fill.quantity
            if order.remaining <= _EPSILON:
                del book.pending[fill.order_id]
        self._refresh()
        self._journal["positions"].append(
            {
                "key": fill.fill_id,
                "ts_event": fill.ts_event,
                "symbol": fill.symbol,
                "quantity": book.quantity,
                "avg_price": book.avg_price,
                "mark_price": book.mark,
                "realized_pnl": book.realized,
                "unrealized_pnl": book.unrealized(),
                "stop_price": book.stop,
            }
        )
        self._emit(FillObserved(fill), fill.symbol)
        if closed is not None:
            self._emit(closed, fill.symbol)

    def _apply_mark(self, book: _SymbolBook, mark: Mark) -> None:
        if math.isfinite(mark.price) and mark.price > 0:
            book.mark = mark.price
        else:
            self.invalid_updates += 1
        book.stop = mark.stop_price if book.quantity != 0 else None
        self._refresh()
        heat, gross, open_positions = self._exposure()
        self._journal["equity"].append(
            {
                "key": f"{mark.ts_event}:{mark.symbol}:{mark.sequence}",
                "ts_event": mark.ts_event,
                "equity": self.equity,
                "realized_pnl": self.realized,
                "unrealized_pnl": self._unrealized(),
                "fees": self.fees,
                "funding": self.funding,
                "portfolio_heat": heat / self.equity if self.equity > 0 else math.inf,
                "gross_leverage": gross / self.equity if self.equity > 0 else math.inf,
                "open_positions": open_positions,
                "drawdown": self.drawdown,
            }
        )
        if math.isfinite(mark.price) and mark.price > 0:
            self._emit(MarkObserved(mark.symbol, mark.ts_event, mark.price), mark.symbol)

    # ------------------------------------------------------------------ rules observing

    def _emit(self, event: RiskEvent, symbol: str | None) -> None:
        """Show one event to every rule; journal and act on what they ask for."""
        self._now = max(self._now, event.fill.ts_event if isinstance(event, FillObserved)
                        else event.ts_event)
        snapshot = self._snapshot(self._now, symbol)
        for rule in self.rules:
            for action in rule.observe(event, snapshot):
                self._record_action(action)

    def _record_action(self, action: RiskAction) -> None:
        self.actions[f"{action.rule}:{action.kind}"] += 1
        if action.kind == "halt" and not self.halted:
            self.halt(f"{action.rule}: {action.reason}")
        self._pending_actions.append(action)
        if action.kind == "flatten_symbol" and action.symbol:
            self._flatten_due[action.symbol] = action
        elif action.kind == "flatten_all":
            for symbol, book in self._books.items():
                if book.quantity != 0 or book.projected() != 0:
                    self._flatten_due[symbol] = action
        self._journal["risk_events"].append(
            {
                "key": f"{self._now}:{self._event_sequence}",
                "ts_event": self._now,
                "symbol": action.symbol or "",
                "rule": action.rule,
                "kind": action.kind,
                "reason": action.reason,
            }
        )
        self._event_sequence += 1

    def drain_actions(self) -> list[RiskAction]:
        """What rules asked the engine to do (flatten, halt, alert) since the last drain."""
        actions, self._pending_actions = self._pending_actions, []
        return actions

    # ------------------------------------------------------------------ equity state

    @property
    def drawdown(self) -> float:
        if not (self.peak_equity > 0 and math.isfinite(self.equity)):
            return math.nan
        return max(0.0, 1.0 - self.equity / self.peak_equity)

    @property
    def daily_pnl(self) -> float:
        return self.equity - self.day_start_equity

    def _unrealized(self) -> float:
        return sum(book.unrealized() for book in self._books.values())

    def _refresh(self) -> None:
        self.equity = (
            self.initial_equity + self.realized - self.fees - self.funding + self._unrealized()
        )
        if self.equity > self.peak_equity:
            self.peak_equity = self.equity
        drawdown = self.drawdown
        if math.isfinite(drawdown):
            self.max_drawdown = max(self.max_drawdown, drawdown)

    def _roll_day(self, ts_event: int) -> None:
        day = ts_event // NS_PER_DAY
        if self._day is None or day > self._day:
            first = self._day is None
            previous_pnl = None if first else self.equity - self.day_start_equity
            previous_start = None if first else self.day_start_equity
            self._day = day
            self.day_start_equity = self.equity
            self._refresh()
            self._emit(DayStarted(ts_event, day, self.equity, previous_pnl, previous_start), None)

    def _positions(self) -> tuple[PositionExposure, ...]:
        """Every symbol's projected position, by symbol: what heat, leverage and the position
        count are summed from."""
        positions: list[PositionExposure] = []
        for name in sorted(self._books):
            book = self._books[name]
            projected = book.projected()
            if projected == 0:
                continue
            heat, notional = book.exposure(self.profile.default_stop_pct)
            positions.append(PositionExposure(name, projected, book.price(), heat, notional))
        return tuple(positions)

    def _exposure(self, positions: tuple[PositionExposure, ...] | None = None,
                  ) -> tuple[float, float, int]:
        """(heat, gross notional, open positions) of the projected positions."""
        if positions is None:
            positions = self._positions()
        return (sum(position.heat for position in positions),
                sum(position.notional for position in positions), len(positions))

    def _snapshot(self, ts_event: int, symbol: str | None) -> PortfolioSnapshot:
        positions = self._positions()
        heat, gross, open_positions = self._exposure(positions)
        symbol_book = self._books.get(symbol) if symbol is not None else None
        reducible = (symbol_book.reducible(1), symbol_book.reducible(-1)) if symbol_book \
            else (0.0, 0.0)
        stop_pct = self.profile.default_stop_pct
        distances = (symbol_book.side_distance(1, stop_pct),
                     symbol_book.side_distance(-1, stop_pct)) if symbol_book else (0.0, 0.0)
        return PortfolioSnapshot(
            ts_event=ts_event,
            equity=self.equity,
            peak_equity=self.peak_equity,
            day_start_equity=self.day_start_equity,
            daily_pnl=self.daily_pnl,
            halted=self.halted,
            halt_reason=self.halt_reason,
            open_positions=open_positions,
            heat=heat,
            gross_notional=gross,
            symbol_quantity=symbol_book.projected() if symbol_book is not None else 0.0,
            positions=positions,
            reducible_by_buy=reducible[0],
            reducible_by_sell=reducible[1],
            long_stop_distance=distances[0],
            short_stop_distance=distances[1],
        )

    # ------------------------------------------------------------------ decisions

    def decide(self, intent: OrderIntent) -> RiskDecision:
        """Apply buffered updates before the intent's key, then approve, size or reject it (or,
        for a position check, say whether a rule wants the symbol's position closed)."""
        self._apply_until(intent.key)
        self._advance_frontier(intent.key)
        self._roll_day(intent.ts_event)
        self._now = max(self._now, intent.ts_event)
        book = self._books.setdefault(intent.symbol, _SymbolBook())
        snapshot = self._snapshot(intent.ts_event, intent.symbol)
        if intent.intent_kind == POSITION_CHECK:
            return self._position_check(intent, book, snapshot)
        decided = evaluate(self.rules, intent, snapshot, self.profile.default_stop_pct)
        outcome = decided.outcome
        approved = outcome.verdict != "reject"
        quantity = float(outcome.quantity or 0.0) if approved else 0.0
        if approved:
            self.approved += 1
            book.pending[intent.order_id] = _PendingOrder(
                intent.side, quantity, intent.reference_price, intent.stop_price, intent.reduce_only
            )
        else:
            self.rejected += 1
        self.decisions[outcome.rule] += 1
        decision = RiskDecision(
            intent_id=intent.intent_id,
            symbol=intent.symbol,
            ts_event=intent.ts_event,
            approved=approved,
            quantity=quantity,
            rule=outcome.rule,
            reason=outcome.reason,
            equity=self.equity,
            portfolio_heat=snapshot.portfolio_heat,
            open_positions=snapshot.open_positions,
            gross_leverage=snapshot.gross_leverage,
            daily_pnl=snapshot.daily_pnl,
        )
        row = _decision_row(intent, decision)
        row["rules_applied"] = " | ".join(decided.notes)
        self._journal["risk_decisions"].append(row)
        return decision

    def _position_check(self, intent: OrderIntent, book: _SymbolBook,
                        snapshot: PortfolioSnapshot) -> RiskDecision:
        """Hand a symbol the flatten a rule asked for (once); not journaled as a decision: the
        exit it causes is, with the rule in its reason, and the action is in `risk_events`."""
        due = self._flatten_due.pop(intent.symbol, None)
        directive = f"{due.rule}: {due.reason}" if due is not None and book.quantity else ""
        return RiskDecision(
            intent_id=intent.intent_id, symbol=intent.symbol, ts_event=intent.ts_event,
            approved=False, quantity=0.0, rule=POSITION_CHECK, reason="position check",
            equity=self.equity, portfolio_heat=snapshot.portfolio_heat,
            open_positions=snapshot.open_positions, gross_leverage=snapshot.gross_leverage,
            daily_pnl=snapshot.daily_pnl, directive=directive,
        )

    # ------------------------------------------------------------------ journal and summary

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]:
        """Rows journaled since the last drain, per table (risk_decisions, equity, positions,
        risk_events)."""
        rows = self._journal
        self._journal = {name: [] for name in rows}
        return rows

    def position(self, symbol: str) -> tuple[float, float]:
        """(signed filled quantity, average price) of a symbol."""
        book = self._books.get(symbol)
        return (book.quantity, book.avg_price) if book else (0.0, math.nan)

    def summary(self) -> dict[str, Any]:
        heat, gross, open_positions = self._exposure()
        return {
            "profile": self.profile.name,
            "initial_equity": self.initial_equity,
            "equity": self.equity,
            "realized_pnl": self.realized,
            "unrealized_pnl": self._unrealized(),
            "fees": self.fees,
            "funding": self.funding,
            "peak_equity": self.peak_equity,
            "drawdown": self.drawdown,
            "max_drawdown": self.max_drawdown,
            "portfolio_heat": heat / self.equity if self.equity > 0 else math.inf,
            "gross_leverage": gross / self.equity if self.equity > 0 else math.inf,
            "open_positions": open_positions,
            "approved": self.approved,
            "rejected": self.rejected,
            "decisions_by_rule": dict(sorted(self.decisions.items())),
            "risk_actions": dict(sorted(self.actions.items())),
            "late_updates": self.late_updates,
            "invalid_updates": self.invalid_updates,
            "halted": self.halted,
        }


def _decision_row(intent: OrderIntent, decision: RiskDecision) -> dict[str, Any]:
    return {
        "key": intent.intent_id,
        "ts_event": intent.ts_event,
        "symbol": intent.symbol,
        "intent_id": intent.intent_id,
        "signal_id": intent.signal_id,
        "side": intent.side,
        "intent_kind": intent.intent_kind,
        "reduce_only": intent.reduce_only,
        "requested_qty": math.nan if intent.quantity is None else intent.quantity,
        "approved_qty": decision.quantity,
        "approved": decision.approved,
        "rule": decision.rule,
        "reason": decision.reason,
        "equity": decision.equity,
        "portfolio_heat": decision.portfolio_heat,
        "open_positions": decision.open_positions,
        "gross_leverage": decision.gross_leverage,
        "daily_pnl": decision.daily_pnl,
    }


class LocalGateway:
    """The `RiskGateway` of a single process: hands updates to a PortfolioRisk, then decides."""

    def __init__(self, risk: PortfolioRisk) -> None:
        self.risk = risk

    def decide(self, intent: OrderIntent, updates: Sequence[PortfolioUpdate]) -> RiskDecision:
        self.risk.submit(updates)
        return self.risk.decide(intent)
