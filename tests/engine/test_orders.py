"""Order state machine: legal and illegal moves, idempotent fills, overfill, client order ids."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine.orders import (
    CLIENT_ORDER_ID_PATTERN,
    LEGAL_TRANSITIONS,
    TERMINAL_STATES,
    IllegalTransition,
    ManagedOrder,
    OrderFill,
    OrderState,
    OverFill,
    client_order_id,
    is_run_client_order_id,
)

S = OrderState


def order(quantity: float = 1.0) -> ManagedOrder:
    return ManagedOrder(
        "cid-1", "BTCUSDT", 1, "limit", quantity, price=100.0, order_id="BTCUSDT:o1",
        intent_id="BTCUSDT:i1", ts_created=0,
    )


def fill(trade_id: str, quantity: float, price: float = 100.0, ts: int = 10) -> OrderFill:
    return OrderFill(trade_id, quantity, price, 0.01, ts, "maker")


# Paths that put an order into each state with a consistent filled quantity.
def order_in(state: OrderState) -> ManagedOrder:
    managed = order()
    if state is S.NEW:
        return managed
    managed.transition(S.SUBMITTED, 1)
    if state is S.SUBMITTED:
        return managed
    if state in (S.UNKNOWN, S.REJECTED):
        managed.transition(state, 2, "create timed out")
        return managed
    managed.transition(S.ACCEPTED, 2)
    if state is S.PARTIALLY_FILLED:
        managed.apply_fill(fill("t1", 0.4))
    elif state is S.FILLED:
        managed.apply_fill(fill("t1", 1.0))
    elif state is not S.ACCEPTED:
        managed.transition(state, 3)
    assert managed.state is state
    return managed


def prepare_for(managed: ManagedOrder, target: OrderState) -> None:
    """Give the order the filled quantity the target state needs."""
    if target is S.PARTIALLY_FILLED and managed.filled_quantity == 0:
        managed.fills["t-prep"] = fill("t-prep", 0.5)
        managed.filled_quantity = 0.5


@pytest.mark.parametrize(
    ("source", "target"),
    [(source, target) for source, targets in LEGAL_TRANSITIONS.items() for target in targets
     if target is not S.FILLED],
)
def test_every_legal_transition_is_accepted_and_recorded(
    source: OrderState, target: OrderState
) -> None:
    managed = order_in(source)
    prepare_for(managed, target)
    before = len(managed.history)
    managed.transition(target, 99, "why")
    assert managed.state is target
    record = managed.history[before]
    assert (record.from_state, record.to_state, record.ts_event, record.reason) == (
        source, target, 99, "why"
    )


@pytest.mark.parametrize("source", [s for s in OrderState if S.FILLED in LEGAL_TRANSITIONS[s]])
def test_filled_is_reached_by_the_completing_fill(source: OrderState) -> None:
    managed = order_in(source)
    with pytest.raises(IllegalTransition, match="FILLED is reached by fills"):
        managed.transition(S.FILLED, 5)
    assert managed.apply_fill(fill("t-last", managed.remaining))
    assert managed.state is S.FILLED and managed.remaining == 0


@pytest.mark.parametrize(
    ("source", "target"),
    [(source, target) for source in OrderState for target in OrderState
     if target not in LEGAL_TRANSITIONS[source]],
)
def test_every_illegal_transition_raises_and_changes_nothing(
    source: OrderState, target: OrderState
) -> None:
    managed = order_in(source)
    history = list(managed.history)
    with pytest.raises(IllegalTransition, match=f"order BTCUSDT:o1: illegal transition "
                       f"{source.value} -> {target.value}"):
        managed.transition(target, 5)
    assert managed.state is source and managed.history == history


# The table spelled out independently, so a change to LEGAL_TRANSITIONS has to be made twice.
EXPECTED_TABLE = {
    "new": "submitted canceled rejected",
    "submitted": "accepted partially_filled filled cancel_requested canceled rejected expired "
                 "unknown",
    "accepted": "partially_filled filled cancel_requested canceled expired",
    "partially_filled": "filled cancel_requested canceled expired",
    "cancel_requested": "canceled filled partially_filled accepted expired unknown",
    "unknown": "accepted partially_filled filled canceled rejected expired",
    "filled": "", "canceled": "", "rejected": "", "expired": "",
}


def test_the_transition_table_is_the_documented_one() -> None:
    actual = {state.value: {target.value for target in targets}
              for state, targets in LEGAL_TRANSITIONS.items()}
    assert actual == {state: set(targets.split()) for state, targets in EXPECTED_TABLE.items()}


def test_terminal_states_go_nowhere_and_unknown_never_resubmits() -> None:
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED} == TERMINAL_STATES
    assert S.SUBMITTED not in LEGAL_TRANSITIONS[S.UNKNOWN]
    for state in TERMINAL_STATES:
        assert order_in(state).is_terminal and not order_in(state).is_open


def test_state_must_agree_with_fills() -> None:
    managed = order_in(S.PARTIALLY_FILLED)
    managed.transition(S.CANCEL_REQUESTED, 5)
    with pytest.raises(IllegalTransition, match="already filled"):
        managed.transition(S.ACCEPTED, 6)  # the cancel was refused: it works partially filled
    managed.transition(S.PARTIALLY_FILLED, 6, "cancel refused")
    managed.transition(S.CANCELED, 7)
    assert managed.filled_quantity == pytest.approx(0.4)  # canceled carrying the partial fill
    unknown = order_in(S.UNKNOWN)
    unknown.apply_fill(fill("t9", 0.2))
    assert unknown.state is S.UNKNOWN  # a partial fill does not say whether the rest still works
    with pytest.raises(IllegalTransition, match="already filled"):
        unknown.transition(S.REJECTED, 8)
    unknown.transition(S.PARTIALLY_FILLED, 8, "query: working")


def test_duplicate_trade_id_never_adds_quantity() -> None:
    managed = order_in(S.ACCEPTED)
    assert managed.apply_fill(fill("t1", 0.3, 100.0))
    assert not managed.apply_fill(fill("t1", 0.3, 100.0, ts=50))
    assert managed.filled_quantity == pytest.approx(0.3)
    assert managed.state is S.PARTIALLY_FILLED
    assert managed.apply_fill(fill("t2", 0.7, 110.0))
    assert managed.state is S.FILLED and managed.filled_quantity == 1.0
    assert managed.average_fill_price == pytest.approx(107.0)
    assert not managed.apply_fill(fill("t2", 0.7, 110.0))  # re-delivery after completion
    with pytest.raises(ValueError, match="re-delivered with another quantity"):
        managed.apply_fill(fill("t1", 0.5, 100.0))


def test_overfill_raises_and_changes_nothing() -> None:
    managed = order_in(S.ACCEPTED)
    managed.apply_fill(fill("t1", 0.6))
    with pytest.raises(OverFill, match="would fill"):
        managed.apply_fill(fill("t2", 0.5))
    assert managed.filled_quantity == pytest.approx(0.6) and "t2" not in managed.fills
    tiny = order_in(S.ACCEPTED)
    for index, part in enumerate([0.1, 0.2, 0.3, 0.4]):  # float sums may exceed 1.0 by an ulp
        tiny.apply_fill(fill(f"p{index}", part))
    assert tiny.state is S.FILLED and tiny.filled_quantity == 1.0


@pytest.mark.parametrize("state", [S.NEW, S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED])
def test_fills_refused_where_the_order_cannot_execute(state: OrderState) -> None:
    managed = order_in(state)
    with pytest.raises(IllegalTransition, match="fill t-late"):
        managed.apply_fill(fill("t-late", 0.1))


def test_invalid_orders_and_fills_fail_closed() -> None:
    with pytest.raises(ValueError, match="quantity must be > 0"):
        ManagedOrder("c", "BTCUSDT", 1, "market", math.nan)
    with pytest.raises(ValueError, match="needs a price"):
        ManagedOrder("c", "BTCUSDT", 1, "limit", 1.0)
    with pytest.raises(ValueError, match="needs stop_price"):
        ManagedOrder("c", "BTCUSDT", -1, "stop_market", 1.0)
    with pytest.raises(ValueError, match="side"):
        ManagedOrder("c", "BTCUSDT", 0, "market", 1.0)
    with pytest.raises(ValueError, match="fill price"):
        order_in(S.ACCEPTED).apply_fill(fill("t", 0.1, price=math.nan))


def test_reprice_and_journal_rows() -> None:
    managed = order_in(S.ACCEPTED)
    managed.venue_order_id = "v-7"
    managed.reprice(101.0, 3, "reprice to best bid")
    managed.apply_fill(fill("t1", 1.0, 101.0, ts=4))
    rows = managed.journal_rows()
    assert [row["state"] for row in rows] == ["new", "submitted", "accepted", "accepted", "filled"]
    assert [row["key"] for row in rows] == [f"BTCUSDT:o1:{i}" for i in range(5)]
    assert rows[3]["price"] == 101.0 and rows[3]["reason"] == "reprice to best bid"
    assert rows[4]["filled_qty"] == 1.0 and rows[4]["price"] == 101.0
    assert rows[4]["reason"] == "fill t1" and rows[4]["venue_order_id"] == "v-7"
    assert managed.journal_rows(start=4) == rows[4:]
    with pytest.raises(IllegalTransition, match="reprice"):
        managed.reprice(102.0, 5)


# ---------------------------------------------------------------------- properties


class OrderMachine(RuleBasedStateMachine):
    """Random transitions and fills (with repeated trade ids) against one order."""

    def __init__(self) -> None:
        super().__init__()
        self.order = ManagedOrder("c", "BTCUSDT", 1, "limit", 1.0, price=100.0, ts_created=0)
        self.distinct: dict[str, float] = {}
        self.clock = 0

    @rule(state=st.sampled_from(list(OrderState)))
    def move(self, state: OrderState) -> None:
        self.clock += 1
        before = self.order.state
        try:
            self.order.transition(state, self.clock)
        except IllegalTransition:
            assert self.order.state is before
        else:
            assert state in LEGAL_TRANSITIONS[before]

    @rule(
        trade=st.integers(0, 12),
        quantity=st.sampled_from([0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 1.0]),
    )
    def execute(self, trade: int, quantity: float) -> None:
        self.clock += 1
        trade_id = f"t{trade}"
        quantity = self.distinct.get(trade_id, quantity)  # a re-delivery repeats the quantity
        try:
            applied = self.order.apply_fill(fill(trade_id, quantity, ts=self.clock))
        except (OverFill, IllegalTransition):
            assert trade_id not in self.order.fills
            return
        assert applied == (trade_id not in self.distinct)
        self.distinct[trade_id] = quantity

    @invariant()
    def consistent(self) -> None:
        managed = self.order
        assert 0 <= managed.filled_quantity <= managed.quantity
        assert managed.filled_quantity == pytest.approx(sum(self.distinct.values()))
        assert set(managed.fills) == set(self.distinct)
        for record in managed.history[1:]:
            assert record.from_state is not None
            if record.from_state is not record.to_state:
                assert record.to_state in LEGAL_TRANSITIONS[record.from_state]
            else:
                assert record.trade_id is not None  # only fills stay in the same state
        if managed.state is S.FILLED:
            assert managed.filled_quantity == managed.quantity


TestOrderMachine = OrderMachine.TestCase
TestOrderMachine.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, derandomize=True
)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    runs=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4, unique=True),
    symbols=st.lists(
        st.sampled_from(["BTCUSDT", "ETHUSDT", "BTC/USDT:USDT", "1000SHIBUSDT", "É/€"]),
        min_size=1, max_size=5, unique=True,
    ),
    sequences=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=10, unique=True),
    purposes=st.lists(st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True), min_size=1, max_size=4,
                      unique=True),
)
def test_client_order_ids_are_unique_deterministic_and_valid(
    runs: list[str], symbols: list[str], sequences: list[int], purposes: list[str]
) -> None:
    ids = {
        (run, symbol, sequence, purpose): client_order_id(run, symbol, sequence, purpose)
        for run in runs for symbol in symbols for sequence in sequences for purpose in purposes
    }
    assert len(set(ids.values())) == len(ids)
    for (run, symbol, sequence, purpose), value in ids.items():
        assert CLIENT_ORDER_ID_PATTERN.match(value) and len(value) <= 36
        assert value == client_order_id(run, symbol, sequence, purpose)
        assert is_run_client_order_id(value, run)
        assert run not in value or len(run) < 3  # the run id is hashed, not disclosed


def test_client_order_ids_unique_over_a_dense_grid_and_reject_bad_input() -> None:
    ids = {
        client_order_id(f"run-{run}", symbol, sequence, purpose)
        for run in range(5) for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
        for sequence in range(400) for purpose in ("e", "sl", "tp1", "tp2")
    }
    assert len(ids) == 5 * 3 * 400 * 4
    for bad in ({"purpose": "SL"}, {"purpose": "toolong"}, {"sequence": -1},
                {"sequence": 2**64}):
        arguments = {"run_id": "r", "symbol": "BTCUSDT", "sequence": 1, "purpose": "e"} | bad
        with pytest.raises(ValueError, match="client_order_id"):
            client_order_id(**arguments)  # type: ignore[arg-type]
    assert not is_run_client_order_id(client_order_id("a", "BTCUSDT", 1), "b")


def test_amend_of_stop_and_quantity_keeps_above_filled() -> None:
    stop = ManagedOrder("s", "BTCUSDT", -1, "stop_market", 2.0, stop_price=95.0, reduce_only=True)
    stop.transition(S.SUBMITTED, 1)
    stop.transition(S.ACCEPTED, 2)
    stop.amend(3, stop_price=97.0, quantity=1.5, reason="resize")
    assert (stop.stop_price, stop.quantity, stop.history[-1].reason) == (97.0, 1.5, "resize")
    stop.apply_fill(fill("t1", 1.0))
    with pytest.raises(ValueError, match="not above filled"):
        stop.amend(4, quantity=1.0)
    with pytest.raises(ValueError, match="has no price"):
        stop.amend(4, price=99.0)
    assert stop.quantity == 1.5 and len(stop.history) == 4
    stop.apply_fill(fill("t2", 0.5))
    with pytest.raises(IllegalTransition, match="not working"):
        stop.amend(5, stop_price=98.0)
