"""Resting limit orders: queue position, proportional cancellations, maker/taker, cancels."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from itertools import count

import numpy as np
import pytest
from engine_builders import make_trades
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.batches import DepthSamples, QuoteColumns, TradeColumns
from engine.config import SimulationConfig
from engine.matching import PaperMatcher
from engine.orders import OverFill
from engine.timeframes import NS_PER_SECOND
from engine.types import OrderIntent, intent_id_for

MS = 1_000_000
T0 = 1_700_000_000 * NS_PER_SECOND
CONFIG = SimulationConfig(
    order_latency_ms=0.0, order_latency_jitter_ms=0.0, maker_fee_bps=1.0, taker_fee_bps=4.0
)
Levels = list[tuple[float, float]]


def intent(sequence: int = 1, side: int = 1) -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id_for("BTCUSDT", sequence), symbol="BTCUSDT", ts_event=T0,
        sequence=sequence, side=side, intent_kind="entry", reduce_only=False, quantity=None,
        reference_price=100.0,
    )


def trades(rows: list[tuple[int, float, float, int]]) -> TradeColumns:
    """(ms after T0, price, quantity, aggressor side) rows."""
    base = make_trades([T0 + ms * MS for ms, _, _, _ in rows], [row[1] for row in rows],
                       [row[2] for row in rows])
    return replace(base, side=np.asarray([row[3] for row in rows], np.int8))


def book(samples: list[tuple[int, Levels, Levels]]) -> DepthSamples:
    """(ms after T0, bids, asks) samples."""
    width = max(max(len(bids), len(asks)) for _, bids, asks in samples)

    def grid(side: int, column: int) -> np.ndarray:
        return np.asarray([
            [level[column] for level in sample[side]] + [math.nan] * (width - len(sample[side]))
            for sample in samples
        ])

    return DepthSamples(np.asarray([T0 + ms * MS for ms, _, _ in samples], np.int64),
                        grid(1, 0), grid(1, 1), grid(2, 0), grid(2, 1))


def sequences() -> Callable[[], int]:
    counter = count(1)
    return lambda: next(counter)


def test_fills_once_the_queue_ahead_is_traded_away_at_the_maker_fee() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    depth = book([(0, [(99.0, 5.0), (98.0, 9.0)], [(100.0, 3.0)])])
    matcher.submit_limit(intent(), 2.0, 99.0, T0)
    tape = trades([
        (1, 99.0, 3.0, -1),  # queue ahead 5 -> 2
        (2, 99.0, 10.0, 1),  # a buyer at our bid price: not our queue
        (3, 99.0, 3.0, -1),  # queue 2 -> 0, 1 left over for us
        (4, 99.0, 4.0, -1),  # the last 1
    ])
    fills = matcher.match_resting(tape, sequences(), depth=depth)
    assert [(fill.ts_event, fill.quantity, fill.price, fill.liquidity) for fill in fills] == [
        (T0 + 3 * MS, 1.0, 99.0, "maker"), (T0 + 4 * MS, 1.0, 99.0, "maker")
    ]
    assert [fill.fill_id for fill in fills] == ["BTCUSDT:f1", "BTCUSDT:f2"]
    assert fills[0].fee == pytest.approx(1.0 * 99.0 * 1.0 / 1e4)
    assert fills[0].slippage_bps == 0.0
    assert not matcher.resting
    rows = matcher.drain_rows()
    assert [(row["state"], row["filled_qty"], row["order_type"]) for row in rows] == [
        ("new", 0.0, "limit"), ("submitted", 0.0, "limit"), ("accepted", 0.0, "limit"),
        ("partially_filled", 1.0, "limit"), ("filled", 2.0, "limit"),
    ]
    assert [row["key"] for row in rows] == [f"BTCUSDT:o1:{index}" for index in range(5)]
    assert rows[0]["venue_order_id"] is None and rows[2]["venue_order_id"] == "paper-BTCUSDT:o1"


def test_a_trade_through_the_price_fills_the_rest() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    depth = book([(0, [(99.0, 5.0)], [(100.0, 3.0)])])
    order = matcher.submit_limit(intent(side=-1), 2.0, 100.0, T0)
    assert order.side == -1
    fills = matcher.match_resting(trades([(1, 100.0, 1.0, 1), (2, 100.5, 0.1, -1)]), sequences(),
                                  depth=depth)
    assert [(fill.ts_event, fill.quantity, fill.price) for fill in fills] == [
        (T0 + 2 * MS, 2.0, 100.0)
    ]
    assert fills[0].side == -1 and fills[0].liquidity == "maker"


def test_cancellations_shrink_the_queue_ahead_proportionally() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    depth = book([
        (0, [(99.0, 10.0)], [(100.0, 1.0)]),
        (1_000, [(99.0, 4.0)], [(100.0, 1.0)]),  # 8 left after trades; 4 visible: half cancelled
        (2_000, [(99.0, 9.0)], [(100.0, 1.0)]),  # more joins behind us: the queue stays
    ])
    matcher.submit_limit(intent(), 2.0, 99.0, T0)
    tape = trades([(500, 99.0, 2.0, -1), (1_500, 99.0, 3.0, -1), (2_500, 99.0, 2.0, -1)])
    fills = matcher.match_resting(tape, sequences(), depth=depth)
    # queue 10 -> 8 (trade) -> 8 x 4/8 = 4 (sample) -> 1 (trade of 3) -> our 1 at the last trade
    assert [(fill.ts_event, fill.quantity) for fill in fills] == [(T0 + 2_500 * MS, 1.0)]
    order = matcher.resting["BTCUSDT:o1"]
    assert order.queue_ahead == 0.0 and order.filled == 1.0


def test_a_crossing_limit_takes_the_book_as_taker_then_rests() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    depth = book([(0, [(99.0, 5.0)], [(100.0, 1.0), (101.0, 2.0), (102.0, 5.0)])])
    matcher.submit_limit(intent(), 5.0, 101.0, T0 + 10 * MS)
    fills = matcher.match_resting(trades([(20, 101.0, 1.5, -1)]), sequences(), depth=depth)
    taker, maker = fills
    assert (taker.ts_event, taker.quantity, taker.liquidity) == (T0 + 10 * MS, 3.0, "taker")
    assert taker.price == pytest.approx((100.0 + 2 * 101.0) / 3)
    assert taker.fee == pytest.approx(3.0 * taker.price * 4.0 / 1e4)
    assert taker.reference_price == pytest.approx(99.5)
    assert (maker.quantity, maker.price, maker.liquidity) == (1.5, 101.0, "maker")
    assert maker.fee == pytest.approx(1.5 * 101.0 * 1.0 / 1e4)
    assert matcher.resting["BTCUSDT:o1"].filled == pytest.approx(4.5)


def test_cancel_takes_effect_after_the_latency() -> None:
    config = CONFIG.model_copy(update={"order_latency_ms": 50.0, "feed_latency_ms": 10.0})
    matcher = PaperMatcher("BTCUSDT", config)
    depth = book([(0, [(99.0, 0.0)], [(100.0, 1.0)])])
    order = matcher.submit_limit(intent(), 3.0, 99.0, T0)
    assert order.arrival_ts == T0 + 60 * MS
    assert matcher.cancel("BTCUSDT:o1", T0 + 100 * MS)
    assert not matcher.cancel("BTCUSDT:o1", T0 + 110 * MS)  # already on its way
    assert not matcher.cancel("BTCUSDT:o9", T0)
    tape = trades([(50, 99.0, 5.0, -1), (120, 99.0, 1.0, -1), (170, 98.0, 9.0, -1)])
    fills = matcher.match_resting(tape, sequences(), depth=depth)
    # before arrival nothing; at 120 ms 1 fills (empty queue); the cancel lands at 160 ms
    assert [(fill.ts_event, fill.quantity) for fill in fills] == [(T0 + 120 * MS, 1.0)]
    assert not matcher.resting
    rows = matcher.drain_rows()
    # the fill after the cancel was sent leaves the state at cancel_requested (engine.orders)
    assert [(row["state"], row["ts_event"]) for row in rows] == [
        ("new", T0), ("submitted", T0), ("accepted", T0 + 60 * MS),
        ("cancel_requested", T0 + 100 * MS), ("cancel_requested", T0 + 120 * MS),
        ("canceled", T0 + 160 * MS),
    ]
    assert rows[-1]["filled_qty"] == 1.0


def test_quotes_are_a_one_level_book() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    quotes = QuoteColumns(
        np.asarray([T0], np.int64), np.asarray([T0], np.int64), np.asarray([1], np.int64),
        np.asarray([99.0]), np.asarray([2.0]), np.asarray([100.0]), np.asarray([1.0]),
    )
    matcher.submit_limit(intent(), 1.0, 99.0, T0)
    fills = matcher.match_resting(trades([(1, 99.0, 2.5, -1)]), sequences(), quotes=quotes)
    assert [(fill.quantity, fill.liquidity) for fill in fills] == [(0.5, "maker")]


def test_stepwise_matching_equals_one_pass_and_spans_batches() -> None:
    depth = book([(0, [(99.0, 4.0)], [(100.0, 1.0)]), (1_000, [(99.0, 2.0)], [(100.0, 1.0)])])
    tape = trades([(ms, 99.0, 0.7, -1) for ms in range(100, 3_000, 100)])

    def run(cuts: list[int]) -> list[tuple[int, float]]:
        matcher = PaperMatcher("BTCUSDT", CONFIG)
        matcher.submit_limit(intent(), 3.0, 99.0, T0)
        next_sequence = sequences()
        fills = []
        for cut in cuts:
            fills += matcher.match_resting(tape, next_sequence, until=T0 + cut * MS, depth=depth)
        return [(fill.ts_event, fill.quantity) for fill in fills]

    whole = run([3_000])
    assert whole == run([150, 1_000, 1_001, 2_222, 3_000])
    assert sum(quantity for _, quantity in whole) == pytest.approx(3.0)


def test_invalid_limit_orders_fail_closed() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    with pytest.raises(ValueError, match="finite"):
        matcher.submit_limit(intent(), 1.0, math.nan, T0)
    with pytest.raises(ValueError, match="finite"):
        matcher.submit_limit(intent(), 0.0, 99.0, T0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.sampled_from([98.0, 98.5, 99.0, 99.5]), st.floats(0.01, 5.0),
                  st.sampled_from([-1, 1])),
        min_size=1, max_size=40,
    ),
    st.floats(0.1, 10.0),
    st.floats(0.0, 20.0),
)
def test_fills_never_exceed_the_order_and_respect_the_price(
    rows: list[tuple[float, float, int]], quantity: float, visible: float
) -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    depth = book([(0, [(99.0, visible)], [(99.5, 1.0)])])
    matcher.submit_limit(intent(), quantity, 99.0, T0)
    tape = trades([(index + 1, price, qty, side) for index, (price, qty, side) in enumerate(rows)])
    fills = matcher.match_resting(tape, sequences(), depth=depth)
    total = sum(fill.quantity for fill in fills)
    assert total <= quantity * (1 + 1e-9)
    assert all(fill.price <= 99.0 for fill in fills)
    assert all(fill.liquidity == "maker" for fill in fills[1:])
    if any(price < 99.0 for price, _, _ in rows):
        assert total == pytest.approx(quantity)


def test_an_overfill_fails_closed() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    depth = book([(0, [(99.0, 0.0)], [(100.0, 1.0)])])
    order = matcher.submit_limit(intent(), 2.0, 99.0, T0)
    next_sequence = sequences()
    matcher.match_resting(trades([(1, 99.0, 1.0, -1)]), next_sequence, depth=depth)
    assert order.managed.filled_quantity == 1.0
    order.filled = 0.0  # as if the queue model lost track of what filled
    with pytest.raises(OverFill):
        matcher.match_resting(trades([(2, 98.0, 5.0, -1)]), next_sequence, depth=depth)


def test_an_amend_takes_effect_at_arrival_and_requeues_behind_the_level() -> None:
    config = CONFIG.model_copy(update={"order_latency_ms": 50.0})
    depth = book([(0, [(99.0, 1.0), (98.0, 2.0)], [(100.0, 1.0)]),
                  (200, [(99.0, 1.0), (98.0, 2.0)], [(100.0, 1.0)])])
    tape = trades([(100, 99.0, 1.5, -1),   # fills 0.5 behind 1.0 queued at 99 (old price)
                   (260, 99.0, 5.0, -1),   # after the amend arrived: the order is at 98 now
                   (300, 98.0, 2.5, -1),   # 2.0 ahead at 98, then 0.5 ours
                   (400, 97.0, 1.0, -1)])  # through the price: the rest fills
    matcher = PaperMatcher("BTCUSDT", config)
    matcher.submit_limit(intent(), 2.0, 99.0, T0)
    next_sequence = sequences()
    fills = matcher.match_resting(tape, next_sequence, until=T0 + 150 * MS, depth=depth)
    assert matcher.amend("BTCUSDT:o1", 98.0, T0 + 200 * MS, "reprice to best")
    assert not matcher.amend("BTCUSDT:o1", 97.0, T0 + 210 * MS, "again")  # one in flight
    fills += matcher.match_resting(tape, next_sequence, depth=depth)
    assert [(fill.ts_event, fill.quantity, fill.price) for fill in fills] == [
        (T0 + 100 * MS, 0.5, 99.0), (T0 + 300 * MS, 0.5, 98.0), (T0 + 400 * MS, 1.0, 98.0)]
    assert not matcher.resting
    states = [(row["state"], row["reason"]) for row in matcher.drain_rows()]
    assert ("partially_filled", "reprice to best") in states and states[-1][0] == "filled"


def test_an_amend_after_the_fill_changes_nothing() -> None:
    matcher = PaperMatcher("BTCUSDT", CONFIG)
    depth = book([(0, [(99.0, 0.0)], [(100.0, 1.0)])])
    matcher.submit_limit(intent(), 1.0, 99.0, T0)
    fills = matcher.match_resting(trades([(10, 98.0, 1.0, -1)]), sequences(), depth=depth)
    assert [fill.price for fill in fills] == [99.0]
    assert not matcher.amend("BTCUSDT:o1", 98.0, T0 + 20 * MS, "late")
