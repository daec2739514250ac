"""Property tests of the order lifecycle: random operations on a `ManagedOrder`.

A hypothesis state machine creates one order (market, limit or stop) and throws random operations
at it: moves to any state, fills whose trade ids repeat (re-deliveries, and re-deliveries with a
different quantity), amends of price, stop and quantity (valid and invalid), and cancels that
the venue confirms or refuses. Whatever the sequence:

- the state only moves along `LEGAL_TRANSITIONS`; an illegal move or a refused operation raises
  and leaves the order exactly as it was;
- the filled quantity never exceeds the order quantity, and it is the sum of the distinct trade
  ids' quantities: a duplicate fill never adds quantity;
- FILLED is reached exactly when the whole quantity filled;
- the journal rows, drained after every operation like live execution does, replay to the
  order's final state, quantity, filled quantity and price, and the states they list are a legal
  path. A long history (reprices, partial fills, re-deliveries, refused cancels) also goes
  through a DuckDB journal and is replayed from what it stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.orders import (
    LEGAL_TRANSITIONS,
    QUANTITY_TOLERANCE,
    IllegalTransition,
    ManagedOrder,
    OrderFill,
    OrderState,
    OverFill,
)
from storage.journal import JournalWriter, read_table
from storage.schemas import JOURNAL_TABLES

QUANTITIES = [0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 1.0, 1.5]
PRICES = [99.0, 100.0, 100.5, 101.0]


@dataclass(frozen=True)
class Replayed:
    """What the journal rows of one order say about it."""

    state: OrderState
    quantity: float
    filled: float
    price: float


def row_index(row: dict[str, Any]) -> int:
    """The history index in an orders row key "{order_id}:{index}" (keys sort as text, so "10"
    comes before "2": replay by the index, not by the key)."""
    return int(str(row["key"]).rsplit(":", 1)[1])


def replay(rows: list[dict[str, Any]]) -> Replayed:
    """Replay the orders rows of one order; asserts that the states form a legal path."""
    ordered = sorted(rows, key=row_index)
    assert [row_index(row) for row in ordered] == list(range(len(ordered))), "rows missing"
    previous: OrderState | None = None
    filled = 0.0
    for row in ordered:
        state = OrderState(row["state"])
        if previous is not None and state is not previous:
            assert state in LEGAL_TRANSITIONS[previous], f"journal shows {previous} -> {state}"
        assert row["filled_qty"] >= filled, "filled quantity went down in the journal"
        filled = row["filled_qty"]
        previous = state
    last = ordered[-1]
    assert previous is not None
    return Replayed(previous, last["quantity"], last["filled_qty"], last["price"])


def fills_forbid(order: ManagedOrder, target: OrderState) -> bool:
    """The documented rule: ACCEPTED and REJECTED need nothing filled, PARTIALLY_FILLED a
    partial fill, FILLED the whole quantity."""
    filled = order.filled_quantity
    if target in (OrderState.ACCEPTED, OrderState.REJECTED):
        return filled > 0
    if target is OrderState.PARTIALLY_FILLED:
        return not 0 < filled < order.quantity
    if target is OrderState.FILLED:
        return filled < order.quantity
    return False


def snapshot(order: ManagedOrder) -> tuple[Any, ...]:
    """Everything an operation may change."""
    return (order.state, order.filled_quantity, order.quantity, order.price, order.stop_price,
            order.fees, order.average_fill_price, len(order.history), dict(order.fills))


def same(before: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
    """Snapshots equal, NaN equal to NaN (the average price before any fill)."""
    pairs = zip(before, after, strict=True)
    return all(a == b or (isinstance(a, float) and isinstance(b, float)
                          and math.isnan(a) and math.isnan(b)) for a, b in pairs)


class OrderLifecycleMachine(RuleBasedStateMachine):
    """Random operations against one order, with the test's own tally of fills."""

    def __init__(self) -> None:
        super().__init__()
        self.order = ManagedOrder("cid", "BTCUSDT", 1, "market", 1.0)
        self.distinct: dict[str, OrderFill] = {}
        self.rows: list[dict[str, Any]] = []
        self.journaled = 0
        self.clock = 0

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def drain(self) -> None:
        """Journal new history records, as live execution's drain_journal does."""
        self.rows.extend(self.order.journal_rows(self.journaled))
        self.journaled = len(self.order.history)

    @initialize(order_type=st.sampled_from(["market", "limit", "stop_market"]),
                side=st.sampled_from([1, -1]), quantity=st.sampled_from([0.5, 1.0, 2.0]))
    def create(self, order_type: str, side: int, quantity: float) -> None:
        price = 100.0 if order_type == "limit" else None
        stop = 95.0 if order_type == "stop_market" else None
        self.order = ManagedOrder("cid-1", "BTCUSDT", side, order_type, quantity, price, stop,
                                  reduce_only=stop is not None, order_id="BTCUSDT:o1",
                                  intent_id="BTCUSDT:i1", ts_created=self.tick())
        self.drain()

    @rule(target_state=st.sampled_from(list(OrderState)))
    def move(self, target_state: OrderState) -> None:
        target = target_state
        order = self.order
        before = snapshot(order)
        source = order.state
        try:
            order.transition(target, self.tick(), "random move")
        except IllegalTransition as refused:
            assert same(before, snapshot(order)), "a refused move changed the order"
            assert refused.from_state is source and refused.to_state is target
            if target in LEGAL_TRANSITIONS[source]:  # in the table: the fills must disagree
                assert fills_forbid(order, target), refused
        else:
            assert target in LEGAL_TRANSITIONS[source], f"{source} -> {target} accepted"
        self.drain()

    @rule(trade=st.integers(0, 8), quantity=st.sampled_from(QUANTITIES),
          price=st.sampled_from(PRICES), conflicting=st.booleans())
    def fill(self, trade: int, quantity: float, price: float, conflicting: bool) -> None:
        """A fill; a known trade id is re-delivered as it was, or with another quantity."""
        order = self.order
        trade_id = f"t{trade}"
        known = self.distinct.get(trade_id)
        if known is not None and not conflicting:
            quantity, price = known.quantity, known.price
        fill = OrderFill(trade_id, quantity, price, quantity * price * 4e-4, self.tick(), "taker")
        before = snapshot(order)
        try:
            applied = order.apply_fill(fill)
        except (OverFill, IllegalTransition, ValueError):
            assert same(before, snapshot(order)), "a refused fill changed the order"
            return
        if known is not None:
            assert not applied and same(before, snapshot(order)), "a duplicate fill applied"
            assert (quantity, price) == (known.quantity, known.price)
        else:
            assert applied
            self.distinct[trade_id] = fill
        self.drain()

    @rule(price=st.sampled_from([None, 98.0, 102.5, 0.0, math.nan]),
          stop=st.sampled_from([None, 94.0, 96.0, -1.0]),
          quantity=st.sampled_from([None, 0.05, 0.4, 1.2, 3.0, math.inf]))
    def amend(self, price: float | None, stop: float | None, quantity: float | None) -> None:
        order = self.order
        before = snapshot(order)
        try:
            order.amend(self.tick(), price=price, stop_price=stop, quantity=quantity)
        except (IllegalTransition, ValueError):
            assert same(before, snapshot(order)), "a refused amend changed the order"
            return
        assert before[0] in (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED)
        assert order.state is before[0] and order.filled_quantity == before[1]
        if quantity is not None:
            assert order.quantity == quantity > order.filled_quantity
        self.drain()

    @rule(confirmed=st.booleans())
    def cancel(self, confirmed: bool) -> None:
        """Request a cancel; the venue confirms it or refuses it (the order still works)."""
        order = self.order
        if not order.is_open or order.state is OrderState.UNKNOWN:
            return
        order.transition(OrderState.CANCEL_REQUESTED, self.tick(), "cancel sent")
        if confirmed:
            order.transition(OrderState.CANCELED, self.tick(), "cancel confirmed")
        else:
            working = (OrderState.PARTIALLY_FILLED if order.filled_quantity > 0
                       else OrderState.ACCEPTED)
            order.transition(working, self.tick(), "cancel refused")
        self.drain()

    @invariant()
    def consistent(self) -> None:
        order = self.order
        tolerance = QUANTITY_TOLERANCE * order.quantity
        assert 0 <= order.filled_quantity <= order.quantity + tolerance
        assert set(order.fills) == set(self.distinct)
        total = sum(fill.quantity for fill in self.distinct.values())
        assert order.filled_quantity == pytest.approx(total, rel=1e-9, abs=1e-12)
        assert (order.state is OrderState.FILLED) == (
            order.filled_quantity >= order.quantity - tolerance), order.state
        if self.distinct:
            value = sum(fill.quantity * fill.price for fill in self.distinct.values())
            assert order.average_fill_price == pytest.approx(value / total)
        previous = None
        for record in order.history:
            if previous is not None:
                assert record.from_state is previous.to_state
                if record.from_state is not record.to_state:
                    assert record.to_state in LEGAL_TRANSITIONS[record.from_state]
                else:  # only fills and amends keep the state
                    assert record.trade_id is not None or record.reason == "amend", record
            previous = record
        replayed = replay(self.rows)
        assert replayed.state is order.state
        assert replayed.quantity == order.quantity
        assert replayed.filled == order.filled_quantity
        expected_price = (order.average_fill_price if order.filled_quantity > 0
                          else order.price if order.price is not None else order.stop_price)
        if expected_price is None:
            assert math.isnan(replayed.price)
        else:
            assert replayed.price == pytest.approx(expected_price)


TestOrderLifecycle = pytest.mark.slow(OrderLifecycleMachine.TestCase)
TestOrderLifecycle.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                       derandomize=True)


def test_journal_in_duckdb_replays_to_the_final_state(tmp_path: Path) -> None:
    """Rows written to a DuckDB journal and read back replay to the order's final state, with
    more than ten history records (whose keys do not sort by index)."""
    order = ManagedOrder("cid-2", "ETHUSDT", -1, "limit", 1.0, price=3_000.0,
                         order_id="ETHUSDT:o2", ts_created=0)
    order.transition(OrderState.SUBMITTED, 1)
    order.transition(OrderState.ACCEPTED, 2)
    for step in range(4):  # reprice, a partial fill and its re-delivery, a refused cancel
        ts = 10 * (step + 1)
        order.reprice(3_000.0 - step, ts)
        fill = OrderFill(f"t{step}", 0.2, 3_000.0 - step, 0.1, ts + 1, "maker")
        assert order.apply_fill(fill) and not order.apply_fill(fill)
        order.transition(OrderState.CANCEL_REQUESTED, ts + 2)
        order.transition(OrderState.PARTIALLY_FILLED, ts + 3, "cancel refused")
    order.transition(OrderState.CANCEL_REQUESTED, 50)
    order.transition(OrderState.CANCELED, 51)
    assert len(order.history) > 10
    path = tmp_path / "journal.duckdb"
    with JournalWriter(path, "property-run") as journal:
        journal.append("orders", order.journal_rows())
    names = JOURNAL_TABLES["orders"].names
    stored = [dict(zip(names, row, strict=True)) for row in read_table(path, "orders")]
    assert len(stored) == len(order.history)
    assert [row_index(row) for row in stored] != sorted(row_index(row) for row in stored)
    replayed = replay(stored)
    assert (replayed.state, replayed.quantity, replayed.filled) == (
        OrderState.CANCELED, 1.0, pytest.approx(0.8))
    assert replayed.price == pytest.approx(order.average_fill_price)
