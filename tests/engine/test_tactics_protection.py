"""Protective orders: OCO on the entry fill, resizing by partial fills, layered take-profits,
breakeven, ATR trailing, time exit and max hold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.tactics import (
    AmendOrder,
    Bar,
    CancelOrder,
    Command,
    OrderClosed,
    PlaceOrder,
    TacticFill,
)
from engine.tactics.protection import ProtectionConfig, ProtectiveOrders

S = 1_000_000_000
T0 = 1_700_000_000 * S


class Book:
    """The venue's resting orders as the tactic's commands leave them."""

    def __init__(self) -> None:
        self.orders: dict[str, PlaceOrder] = {}
        self.canceled: list[str] = []
        self.markets: list[PlaceOrder] = []

    def apply(self, commands: list[Command]) -> list[Command]:
        for command in commands:
            if isinstance(command, PlaceOrder):
                if command.order_type == "market":
                    self.markets.append(command)
                else:
                    assert command.purpose not in self.orders
                    self.orders[command.purpose] = command
            elif isinstance(command, AmendOrder):
                order = self.orders[command.purpose]
                names = ("price", "stop_price", "quantity")
                changes = {name: getattr(command, name) for name in names
                           if getattr(command, name) is not None}
                self.orders[command.purpose] = PlaceOrder(**{**order.__dict__, **changes})
            elif isinstance(command, CancelOrder):
                self.orders.pop(command.purpose)
                self.canceled.append(command.purpose)
        return commands

    def execute(self, tactic: ProtectiveOrders, purpose: str, quantity: float, price: float,
                ts: int) -> list[Command]:
        """The venue fills `quantity` of a resting order, then the tactic hears of it."""
        order = self.orders.get(purpose)
        if order is not None:
            left = order.quantity - quantity
            if left > 1e-12:
                self.orders[purpose] = PlaceOrder(**{**order.__dict__, "quantity": left})
            else:
                del self.orders[purpose]
        return self.apply(tactic.on_fill(TacticFill(purpose, quantity, price, ts)))

    def quantity(self, purpose: str) -> float:
        order = self.orders.get(purpose)
        return 0.0 if order is None else order.quantity

    def take_profit_quantity(self) -> float:
        return sum(order.quantity for name, order in self.orders.items() if name.startswith("tp"))


def entry(quantity: float, price: float = 100.0, ts: int = T0) -> TacticFill:
    return TacticFill("e", quantity, price, ts)


def test_entry_fill_places_stop_and_take_profits_as_oco() -> None:
    tactic = ProtectiveOrders(ProtectionConfig(stop_atr=1.5, plan="50/50"), side=1, atr=2.0)
    book = Book()
    commands = book.apply(tactic.on_entry_fill(entry(1.0)))
    assert commands[0] == PlaceOrder("sl", -1, "stop_market", 1.0, stop_price=97.0,
                                     reduce_only=True, reason="stop 1.5 ATR")
    assert [(o.purpose, o.price, o.quantity) for o in commands[1:]  # type: ignore[union-attr]
            ] == [
        ("tp1", 104.0, 0.5), ("tp2", 108.0, 0.5)]
    assert all(isinstance(o, PlaceOrder) and o.reduce_only for o in commands)
    # the stop fills: every take-profit is canceled (OCO)
    book.execute(tactic, "sl", 1.0, 96.9, T0 + S)
    assert book.canceled == ["tp1", "tp2"] and tactic.done
    assert tactic.exit_reason == "stop_loss"


def test_take_profit_resizes_stop_moves_to_breakeven_and_last_one_cancels_stop() -> None:
    config = ProtectionConfig(plan="50/50", breakeven_offset_pct=0.001, trail_atr=None)
    tactic = ProtectiveOrders(config, side=-1, atr=1.0)
    book = Book()
    book.apply(tactic.on_entry_fill(entry(2.0, price=200.0)))
    assert book.orders["sl"].stop_price == 201.5 and book.orders["tp1"].price == 198.0
    book.execute(tactic, "tp1", 1.0, 198.0, T0 + S)
    assert book.quantity("sl") == 1.0 and tactic.stop_reason == "breakeven_stop"
    assert book.orders["sl"].stop_price == pytest.approx(200.0 * 0.999)
    book.execute(tactic, "tp2", 1.0, 196.0, T0 + 2 * S)
    assert book.canceled == ["sl"] and book.orders == {} and tactic.done


def test_partial_entry_fills_resize_every_protective_order() -> None:
    tactic = ProtectiveOrders(ProtectionConfig(plan="30/30/30/10"), side=1, atr=1.0)
    book = Book()
    for index, part in enumerate([0.2, 0.5, 0.3]):
        book.apply(tactic.on_entry_fill(entry(part, ts=T0 + index * S)))
        filled = sum([0.2, 0.5, 0.3][: index + 1])
        assert book.quantity("sl") == pytest.approx(filled)
        assert book.take_profit_quantity() == pytest.approx(filled)
        assert [book.quantity(f"tp{i}") for i in range(1, 5)] == pytest.approx(
            [0.3 * filled, 0.3 * filled, 0.3 * filled, 0.1 * filled])
    assert book.orders["tp4"].price == 104.0 and book.orders["sl"].stop_price == 98.5


def test_4x25_trails_the_last_layer_by_atr() -> None:
    config = ProtectionConfig(plan="4x25", trail_atr=2.0, breakeven_after_tp1=False)
    tactic = ProtectiveOrders(config, side=1, atr=1.0)
    book = Book()
    book.apply(tactic.on_entry_fill(entry(4.0)))
    assert sorted(book.orders) == ["sl", "tp1", "tp2", "tp3"]  # the last 25% has no target
    assert book.take_profit_quantity() == 3.0 and book.quantity("sl") == 4.0
    assert book.apply(tactic.on_bar(Bar(T0 + 60 * S, 102.5, 1.0))) == []  # not active yet
    for index in (1, 2):
        book.execute(tactic, f"tp{index}", 1.0, 100.0 + index, T0 + 70 * S)
    assert book.orders["sl"].stop_price == 98.5
    book.execute(tactic, "tp3", 1.0, 103.0, T0 + 80 * S)
    assert book.orders["sl"].stop_price == pytest.approx(100.5)  # best close 102.5 - 2 ATR
    assert book.quantity("sl") == 1.0
    book.apply(tactic.on_bar(Bar(T0 + 120 * S, 106.0, 1.5)))
    assert book.orders["sl"].stop_price == pytest.approx(103.0)
    assert tactic.stop_reason == "trailing_stop"
    assert book.apply(tactic.on_bar(Bar(T0 + 180 * S, 104.0, 1.5))) == []  # never loosens
    book.execute(tactic, "sl", 1.0, 103.0, T0 + 200 * S)
    assert tactic.done and tactic.exit_reason == "trailing_stop"


def test_time_exit_cancels_everything_before_the_market_close() -> None:
    config = ProtectionConfig(time_exit="30m", max_hold="4h")
    tactic = ProtectiveOrders(config, side=1, atr=1.0)
    book = Book()
    book.apply(tactic.on_entry_fill(entry(1.0)))
    assert tactic.on_time(T0 + 29 * 60 * S) == []
    commands = book.apply(tactic.on_time(T0 + 30 * 60 * S))
    assert sorted(c.purpose for c in commands if isinstance(c, CancelOrder)) == [
        "sl", "tp1", "tp2"]
    assert not book.markets  # no market order while anything may still fill
    book.execute(tactic, "tp1", 0.2, 102.0, T0 + 30 * 60 * S)  # races cancel
    for purpose in ("tp1", "sl"):
        assert book.apply(tactic.on_order_closed(OrderClosed(purpose, "canceled", T0))) == []
    book.apply(tactic.on_order_closed(OrderClosed("tp2", "canceled", T0 + 31 * 60 * S)))
    [close] = book.markets
    assert (close.purpose, close.side, close.order_type, close.reduce_only) == (
        "x", -1, "market", True)
    assert close.quantity == pytest.approx(0.8)
    assert close.reason == "time_exit: no take-profit within 30m"
    assert tactic.on_order_closed(OrderClosed("tp2", "canceled", T0)) == []  # no second close
    tactic.on_fill(TacticFill("x", 0.8, 101.0, T0 + 31 * 60 * S))
    assert tactic.done


def test_max_hold_after_tp1_and_lost_stop_exit() -> None:
    tactic = ProtectiveOrders(ProtectionConfig(time_exit="30m", max_hold="1h"), 1, atr=1.0)
    book = Book()
    book.apply(tactic.on_entry_fill(entry(1.0)))
    book.execute(tactic, "tp1", 0.5, 102.0, T0 + S)
    assert tactic.on_time(T0 + 59 * 60 * S) == []  # TP1 hit: the time exit no longer applies
    commands = tactic.on_time(T0 + 3600 * S)
    assert {c.reason for c in commands} == {"max_hold: held 1h"}
    lost = ProtectiveOrders(ProtectionConfig(), -1, atr=1.0)
    Book().apply(lost.on_entry_fill(entry(1.0)))
    commands = lost.on_order_closed(OrderClosed("sl", "expired", T0 + S))
    assert [type(c).__name__ for c in commands] == ["CancelOrder", "CancelOrder"]
    assert lost.exit_reason == "stop_lost: stop order expired"
    lost.on_order_closed(OrderClosed("tp1", "canceled", T0 + S))
    [close] = lost.on_order_closed(OrderClosed("tp2", "canceled", T0 + S))
    assert isinstance(close, PlaceOrder) and close.side == 1 and close.quantity == 1.0
    assert lost.on_order_closed(OrderClosed("x", "rejected", T0 + 2 * S)) == []
    assert "x rejected" in lost.attention  # never resubmitted blindly


def test_config_validation_names_keys() -> None:
    with pytest.raises(ValidationError, match="target_atr"):
        ProtectionConfig(plan="4x25", target_atr=(1.0, 2.0))
    with pytest.raises(ValidationError, match="max_hold"):
        ProtectionConfig(max_hold="forever")
    assert ProtectionConfig(plan="4x25", target_atr=(1.0, 2.0, 5.0)).layers()[2:] == [
        (0.25, 5.0), (0.25, None)]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    plan=st.sampled_from(["50/50", "30/30/30/10", "4x25"]),
    side=st.sampled_from([1, -1]),
    entries=st.lists(st.sampled_from([0.1, 0.25, 0.3, 0.5, 1.0]), min_size=1, max_size=5),
    exits=st.lists(st.tuples(st.integers(1, 4), st.sampled_from([0.3, 0.5, 1.0])), max_size=8),
)
def test_protective_sizes_always_equal_the_open_position(
    plan: str, side: int, entries: list[float], exits: list[tuple[int, float]]
) -> None:
    tactic = ProtectiveOrders(ProtectionConfig(plan=plan), side, atr=1.0)
    book = Book()
    trailing = plan == "4x25"
    operations: list[tuple[str, float]] = [("e", q) for q in entries]
    for index, (layer, share) in enumerate(exits):  # interleave take-profit fills
        operations.insert(min(len(operations), 1 + 2 * index), (f"tp{layer}", share))
    for clock, (purpose, amount) in enumerate(operations):
        if tactic.done:
            break
        ts = T0 + clock * S
        if purpose == "e":
            book.apply(tactic.on_entry_fill(entry(amount, ts=ts)))
        elif book.quantity(purpose) > 0:
            quantity = book.quantity(purpose) * amount
            resting = book.orders[purpose]
            book.execute(tactic, purpose, quantity, resting.price or 0.0, ts)
        position = tactic.position
        if tactic.done:
            assert position == 0 and book.orders == {}
            break
        assert book.quantity("sl") == pytest.approx(position)
        resting_take_profits = book.take_profit_quantity()
        assert resting_take_profits <= position * (1 + 1e-9)
        if not trailing:
            assert resting_take_profits == pytest.approx(position)
        for name, order in book.orders.items():
            if name.startswith("tp"):  # take-profits sit on the profitable side
                assert (order.price - 100.0) * side > 0  # type: ignore[operator]


def test_entry_growing_after_tp1_moves_its_share_to_the_last_open_layer() -> None:
    tactic = ProtectiveOrders(ProtectionConfig(plan="50/50"), side=1, atr=1.0)
    book = Book()
    book.apply(tactic.on_entry_fill(entry(1.0)))
    book.execute(tactic, "tp1", 0.5, 102.0, T0 + S)
    book.apply(tactic.on_entry_fill(entry(1.0, ts=T0 + 2 * S)))
    assert book.quantity("sl") == 1.5 and book.quantity("tp2") == 1.5
    assert tactic.entry_price == 100.0 and book.orders["tp2"].price == 104.0


def test_fills_of_foreign_orders_or_beyond_the_position_raise_before_any_change() -> None:
    tactic = ProtectiveOrders(ProtectionConfig(), side=1, atr=1.0)
    tactic.on_entry_fill(entry(1.0))
    for purpose, quantity in (("e", 0.1), ("tp9", 0.1), ("x", 0.1), ("sl", 1.5)):
        with pytest.raises(ValueError, match=purpose):
            tactic.on_fill(TacticFill(purpose, quantity, 100.0, T0))
    assert tactic.position == 1.0 and tactic.take_profits_hit == 0
