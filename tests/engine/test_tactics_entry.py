"""Limit entry tactic: place at the touch, one reprice at 15 s, give up or market at 30 s."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.tactics import AmendOrder, CancelOrder, OrderClosed, PlaceOrder, Quote, TacticFill
from engine.tactics.limit_entry import LimitEntryConfig, LimitEntryTactic

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_buy_places_at_bid_reprices_once_then_cancels() -> None:
    tactic = LimitEntryTactic(LimitEntryConfig(), side=1, quantity=2.0)
    assert tactic.start(Quote(T0, 100.0, 100.1)) == [
        PlaceOrder("e", 1, "limit", 2.0, price=100.0, reason="limit at best bid")
    ]
    assert tactic.on_quote(Quote(T0 + 5 * S, 100.2, 100.3)) == []  # not yet due
    assert tactic.on_time(T0 + 14 * S) == []
    commands = tactic.on_time(T0 + 15 * S)
    assert commands == [AmendOrder("e", price=100.2, reason="reprice to best after 15s")]
    assert tactic.on_quote(Quote(T0 + 20 * S, 100.5, 100.6)) == []  # only one reprice
    assert tactic.on_time(T0 + 29 * S) == []
    assert tactic.on_time(T0 + 30 * S) == [CancelOrder("e", "not filled after 30s")]
    assert tactic.on_time(T0 + 31 * S) == []  # the cancel is sent once
    assert tactic.on_order_closed(OrderClosed("e", "canceled", T0 + 31 * S)) == []
    assert tactic.done and tactic.outcome == "gave up"


def test_sell_places_at_ask_and_skips_a_reprice_to_the_same_price() -> None:
    tactic = LimitEntryTactic(LimitEntryConfig(), side=-1, quantity=1.0)
    [place] = tactic.start(Quote(T0, 99.0, 99.5))
    assert isinstance(place, PlaceOrder) and place.price == 99.5 and place.side == -1
    assert tactic.on_quote(Quote(T0 + 16 * S, 99.1, 99.5)) == []
    assert tactic.reprices == 1 and tactic.price == 99.5


def test_market_fallback_waits_for_the_cancel_and_sends_only_the_rest() -> None:
    config = LimitEntryConfig(reprice_after="10s", give_up_after="20s", fallback="market")
    tactic = LimitEntryTactic(config, side=1, quantity=3.0)
    tactic.start(Quote(T0, 100.0, 100.1))
    tactic.on_fill(TacticFill("e", 1.0, 100.0, T0 + 2 * S))
    assert tactic.on_time(T0 + 10 * S) == []  # best unchanged: no amend
    assert tactic.on_time(T0 + 20 * S) == [CancelOrder("e", "not filled after 20s")]
    tactic.on_fill(TacticFill("e", 0.5, 100.0, T0 + 20 * S))  # fills racing the cancel
    assert tactic.state == "canceling"
    commands = tactic.on_order_closed(OrderClosed("e", "canceled", T0 + 21 * S))
    assert commands == [PlaceOrder("em", 1, "market", 1.5, reason="market fallback after 20s")]
    tactic.on_fill(TacticFill("em", 1.5, 100.2, T0 + 21 * S))
    assert tactic.done and tactic.outcome == "filled at market fallback"
    assert tactic.filled == pytest.approx(3.0)


def test_fill_before_give_up_ends_the_tactic() -> None:
    tactic = LimitEntryTactic(LimitEntryConfig(fallback="market"), side=1, quantity=1.0)
    tactic.start(Quote(T0, 100.0, 100.1))
    tactic.on_fill(TacticFill("e", 1.0, 100.0, T0 + S))
    assert tactic.done and tactic.outcome == "filled"
    assert tactic.on_time(T0 + 60 * S) == []


def test_rejected_limit_gets_no_market_fallback_and_bad_quotes_no_order() -> None:
    tactic = LimitEntryTactic(LimitEntryConfig(fallback="market"), side=1, quantity=1.0)
    tactic.start(Quote(T0, 100.0, 100.1))
    assert tactic.on_order_closed(OrderClosed("e", "rejected", T0 + S)) == []
    assert tactic.done and tactic.outcome == "limit rejected by the venue"
    crossed = LimitEntryTactic(LimitEntryConfig(), side=1, quantity=1.0)
    assert crossed.start(Quote(T0, 101.0, 100.0)) == []
    assert crossed.done and "invalid quote" in crossed.outcome


def test_config_is_validated_with_key_names() -> None:
    with pytest.raises(ValidationError, match="give_up_after"):
        LimitEntryConfig(reprice_after="30s", give_up_after="15s")
    with pytest.raises(ValidationError, match="reprice_after"):
        LimitEntryConfig(reprice_after="soon")
    with pytest.raises(ValidationError, match="fallback"):
        LimitEntryConfig(fallback="retry")
    assert LimitEntryConfig().reprice_after_ns == 15 * S


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    fallback=st.sampled_from(["cancel", "market"]),
    steps=st.lists(
        st.tuples(st.integers(1, 8), st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.5, 1.0]),
                  st.booleans()),
        min_size=1, max_size=20,
    ),
)
def test_never_orders_more_than_the_approved_quantity(
    fallback: str, steps: list[tuple[int, float, bool]]
) -> None:
    """Random fills racing the reprice and the cancel: the limit's fills plus the market
    fallback never exceed the quantity, and the tactic always ends once the venue answers."""
    config = LimitEntryConfig(fallback=fallback)
    tactic = LimitEntryTactic(config, side=1, quantity=1.0)
    ts = T0
    commands = tactic.start(Quote(ts, 100.0, 100.1))
    limit_left, limit_filled, cancel_sent, market_sent = 1.0, 0.0, False, 0.0
    for seconds, share, cancel_arrives in steps:
        for command in commands:
            if isinstance(command, CancelOrder):
                assert not cancel_sent
                cancel_sent = True
            elif isinstance(command, PlaceOrder) and command.order_type == "market":
                assert cancel_sent and limit_left == 0.0  # only after the cancel is confirmed
                market_sent += command.quantity
                commands = tactic.on_fill(TacticFill("em", command.quantity, 100.2, ts))
        ts += seconds * S
        executed = min(limit_left, share)
        if executed > 0:
            limit_left -= executed
            limit_filled += executed
            tactic.on_fill(TacticFill("e", executed, 100.0, ts))
        commands = tactic.on_quote(Quote(ts, 100.0 + seconds / 100, 100.1 + seconds / 100))
        if cancel_sent and cancel_arrives and limit_left > 0:
            limit_left = 0.0
            commands += tactic.on_order_closed(OrderClosed("e", "canceled", ts))
        assert limit_filled + market_sent <= 1.0 + 1e-9  # limit fills + market sent
        assert tactic.filled <= 1.0 + 1e-9
    if ts - T0 >= 30 * S and cancel_sent and limit_left == 0.0 and not any(
        isinstance(c, PlaceOrder) for c in commands
    ):
        assert tactic.done
