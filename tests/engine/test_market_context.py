"""MarketContext: spread and volume facts at an event time never include later data, carry over
batches in bounded form, and forget what falls out of their windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from engine_builders import make_trades

from engine.batches import FeatureBatch, QuoteColumns
from engine.market_context import MarketContext
from engine.timeframes import NS_PER_HOUR, NS_PER_MINUTE, NS_PER_SECOND

T0 = 1_709_510_400 * NS_PER_SECOND  # 2024-03-04 00:00 UTC


def quotes(rows: list[tuple[int, float, float]]) -> QuoteColumns:
    """(seconds after T0, bid, ask) rows."""
    ts = np.asarray([T0 + row[0] * NS_PER_SECOND for row in rows], np.int64)
    return QuoteColumns(ts, ts.copy(), np.arange(len(rows), dtype=np.int64),
                        np.asarray([row[1] for row in rows]), np.ones(len(rows)),
                        np.asarray([row[2] for row in rows]), np.ones(len(rows)))


def batch(sequence: int, trade_rows: list[tuple[int, float, float]],
          quote_rows: list[tuple[int, float, float]]) -> FeatureBatch:
    """Trades as (seconds after T0, price, quantity)."""
    ts = [T0 + row[0] * NS_PER_SECOND for row in trade_rows]
    last = max([*ts, *(T0 + row[0] * NS_PER_SECOND for row in quote_rows)])
    return FeatureBatch(symbol="BTCUSDT", sequence=sequence, watermark=last + 1,
                        trades=make_trades(ts, [row[1] for row in trade_rows],
                                           [row[2] for row in trade_rows]),
                        bars={}, quotes=quotes(quote_rows) if quote_rows else None)


def test_spread_at_uses_only_quotes_up_to_then() -> None:
    context = MarketContext(60 * NS_PER_SECOND, 24 * NS_PER_HOUR)
    # 1 bp spreads each second, then a 3 bp quote at 10 s
    rows = [(second, 99.995, 100.005) for second in range(10)] + [(10, 99.985, 100.015)]
    context.observe(batch(0, [(0, 100.0, 1.0)], rows))
    now, average, samples = context.spread_at(T0 + 9 * NS_PER_SECOND)
    assert now == pytest.approx(1.0) and average == pytest.approx(1.0) and samples == 9
    now, average, samples = context.spread_at(T0 + 10 * NS_PER_SECOND)
    assert now == pytest.approx(3.0) and average == pytest.approx(1.0) and samples == 10
    before = context.spread_at(T0 - 1)
    assert math.isnan(before[0]) and math.isnan(before[1]) and before[2] == 0


def test_spread_window_carries_over_batches_and_forgets() -> None:
    context = MarketContext(10 * NS_PER_SECOND, 24 * NS_PER_HOUR)
    context.observe(batch(0, [(0, 100.0, 1.0)], [(s, 99.99, 100.01) for s in range(5)]))
    context.end_batch()
    context.observe(batch(1, [(30, 100.0, 1.0)], [(s, 99.995, 100.005) for s in range(20, 31)]))
    now, average, samples = context.spread_at(T0 + 30 * NS_PER_SECOND)
    assert (now, samples) == (pytest.approx(1.0), 9)  # quotes within the 10 s before it
    assert average == pytest.approx(1.0)
    now, average, samples = context.spread_at(T0 + 4 * NS_PER_SECOND)  # still known to it
    assert now == pytest.approx(2.0) and samples == 4


def test_quote_volume_counts_trades_up_to_then_in_a_rolling_day() -> None:
    context = MarketContext(60 * NS_PER_SECOND, 24 * NS_PER_HOUR)
    context.observe(batch(0, [(0, 100.0, 2.0), (30, 100.0, 1.0)], []))
    assert context.quote_volume_at(T0 + 10 * NS_PER_SECOND) == pytest.approx(200.0)
    assert context.quote_volume_at(T0 + 30 * NS_PER_SECOND) == pytest.approx(300.0)
    assert math.isnan(MarketContext(1, 1).quote_volume_at(T0))
    context.end_batch()
    later = 23 * 60 * 60 + 59 * 60  # 23:59 later
    context.observe(batch(1, [(later, 110.0, 1.0)], []))
    assert context.quote_volume_at(T0 + later * NS_PER_SECOND) == pytest.approx(410.0)
    context.end_batch()
    next_day = 24 * 60 * 60 + 5 * 60
    context.observe(batch(2, [(next_day, 120.0, 1.0)], []))
    # the first minute has left the 24 h window; 23:59 and the new trade remain
    assert context.quote_volume_at(T0 + next_day * NS_PER_SECOND) == pytest.approx(230.0)
    assert context._minutes.min() * NS_PER_MINUTE >= T0  # bounded: old minutes trimmed
