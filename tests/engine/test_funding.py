"""Perpetual funding: settlements from the mark stream, payments, risk equity and the journal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from engine_builders import RecordingGateway, make_trades

from engine.batches import FeatureBatch, MarkPriceColumns
from engine.config import EmaCrossConfig, RiskConfig, RunConfig
from engine.funding import FundingSchedule, FundingSettlement, funding_payment, funding_row
from engine.position_tracker import OrderContext
from engine.risk import PortfolioRisk
from engine.symbol_engine import SymbolEngine
from engine.timeframes import NS_PER_HOUR, NS_PER_SECOND
from engine.types import Fill, FundingPayment, Mark
from storage.journal import JournalWriter, read_table

T = 1_723_104_000 * NS_PER_SECOND  # 2024-08-08 08:00 UTC, a Binance settlement time
NEXT = T + 8 * NS_PER_HOUR


def marks(rows: list[tuple[int, float, float, int]]) -> MarkPriceColumns:
    """(ts_event, mark, funding rate, next funding time) rows."""
    ts = np.asarray([row[0] for row in rows], np.int64)
    mark = np.asarray([row[1] for row in rows])
    return MarkPriceColumns(ts, ts.copy(), mark, mark.copy(), np.full(len(rows), math.nan),
                            np.asarray([row[2] for row in rows]),
                            np.asarray([row[3] for row in rows], np.int64))


STREAM = [
    (T - 2 * NS_PER_SECOND, 100.0, 0.0001, T),
    (T - NS_PER_SECOND, 101.0, 0.0002, T),  # the last word on T's rate and mark
    (T + NS_PER_SECOND, 102.0, 0.0003, NEXT),
    (T + 2 * NS_PER_SECOND, 0.0, 0.0003, NEXT),  # unusable mark: ignored
]


def test_settlement_takes_the_last_rate_and_mark_before_it() -> None:
    schedule = FundingSchedule()
    schedule.observe(marks(STREAM))
    assert schedule.due(T) == []  # not before event time passes T
    assert schedule.due(T + 1) == [FundingSettlement(T, 0.0002, 101.0)]
    assert schedule.due(T + 1) == []  # each settlement once
    assert schedule.due(NEXT + 1) == [FundingSettlement(NEXT, 0.0003, 102.0)]


def test_settlement_is_the_same_when_the_stream_is_split_across_batches() -> None:
    schedule = FundingSchedule()
    schedule.observe(marks(STREAM[:1]))
    assert schedule.due(T - NS_PER_SECOND) == []
    schedule.observe(marks(STREAM[1:2]))
    schedule.observe(None)
    schedule.observe(marks(STREAM[2:]))
    assert schedule.due(NEXT + 1) == [
        FundingSettlement(T, 0.0002, 101.0), FundingSettlement(NEXT, 0.0003, 102.0)
    ]


def test_contracts_without_funding_and_non_finite_rates_settle_nothing() -> None:
    schedule = FundingSchedule()
    schedule.observe(marks([(T - 1, 100.0, 0.0, 0), (T - 1, 100.0, math.nan, T)]))
    assert schedule.due(NEXT + 1) == []


def test_longs_pay_and_shorts_receive_a_positive_rate() -> None:
    settlement = FundingSettlement(T, 0.0002, 101.0)
    long = funding_payment("BTCUSDT", settlement, 2.0, sequence=9)
    short = funding_payment("BTCUSDT", settlement, -3.0, sequence=10)
    assert long is not None and short is not None
    assert long.amount == pytest.approx(2.0 * 101.0 * 0.0002)  # 0.0404 paid
    assert short.amount == pytest.approx(-3.0 * 101.0 * 0.0002)  # 0.0606 received
    negative = funding_payment("BTCUSDT", FundingSettlement(T, -0.0005, 100.0), 2.0, 11)
    assert negative is not None and negative.amount == pytest.approx(-0.1)  # long receives
    assert funding_payment("BTCUSDT", settlement, 0.0, 12) is None
    assert funding_payment("BTCUSDT", FundingSettlement(T, math.inf, 1.0), 1.0, 13) is None
    assert long.key == (T, "BTCUSDT", 9)


def _fill(side: int, quantity: float, price: float, ts: int, sequence: int) -> Fill:
    return Fill(f"BTCUSDT:f{sequence}", f"BTCUSDT:o{sequence}", "BTCUSDT", ts, sequence, side,
                quantity, price, price, 0.0, "taker", 0.0, 0.0)


def test_risk_equity_subtracts_funding_paid() -> None:
    risk = PortfolioRisk(RiskConfig(), 10_000.0)
    payment = FundingPayment("BTCUSDT", T, 2, amount=0.5, rate=0.0025, mark=100.0, position=2.0)
    received = FundingPayment("ETHUSDT", T, 3, amount=-0.2, rate=0.001, mark=200.0, position=-1)
    risk.submit([
        Mark("BTCUSDT", T + 1, 4, 103.0), payment, received,
        _fill(1, 2.0, 100.0, T - 10, 1),
    ])
    risk.finish()
    assert risk.funding == pytest.approx(0.3)
    assert risk.equity == pytest.approx(10_000.0 + 2.0 * 3.0 - 0.3)
    summary = risk.summary()
    assert summary["funding"] == pytest.approx(0.3)
    assert summary["equity"] == pytest.approx(
        summary["initial_equity"] + summary["realized_pnl"] - summary["fees"]
        - summary["funding"] + summary["unrealized_pnl"]
    )
    (row,) = risk.drain_journal()["equity"]
    assert row["funding"] == pytest.approx(0.3) and row["equity"] == pytest.approx(10_005.7)


def _engine_with_long(quantity: float) -> SymbolEngine:
    engine = SymbolEngine("BTCUSDT", RunConfig(
        strategy=EmaCrossConfig(fast_period=10, slow_period=20, quantity=0.01)
    ))
    engine.flow.tracker.apply_fill(
        _fill(1, quantity, 100.0, T - NS_PER_HOUR, 1), OrderContext("entry", "test")
    )
    return engine


def _batch(sequence: int, start: int, stop: int, rows: list[tuple[int, float, float, int]]
           ) -> FeatureBatch:
    times = [start + NS_PER_SECOND, stop - NS_PER_SECOND]
    return FeatureBatch("BTCUSDT", sequence, stop, make_trades(times, [100.0, 100.0]), {},
                        marks=marks(rows) if rows else None)


def test_symbol_engine_pays_funding_on_its_position_and_journals_it(tmp_path: Path) -> None:
    engine = _engine_with_long(0.5)
    gateway = RecordingGateway()
    first = engine.step(_batch(0, T - 60 * NS_PER_SECOND, T, STREAM[:2]), 2**62, gateway)
    assert not [u for u in first.updates if isinstance(u, FundingPayment)]  # T not yet passed
    second = engine.step(_batch(1, T, T + 60 * NS_PER_SECOND, STREAM[2:]), 2**62, gateway)
    (payment,) = [u for u in second.updates if isinstance(u, FundingPayment)]
    assert (payment.ts_event, payment.position, payment.rate, payment.mark) == (
        T, 0.5, 0.0002, 101.0
    )
    assert payment.amount == pytest.approx(0.5 * 101.0 * 0.0002)
    assert second.counters["funding_payments"] == 1
    assert second.journal["funding"] == [funding_row(payment)]
    writer = JournalWriter(tmp_path / "journal.duckdb", "run")
    writer.append_many(second.journal)
    writer.close()
    (stored,) = read_table(tmp_path / "journal.duckdb", "funding", deterministic_only=True)
    assert stored[0] == f"BTCUSDT:funding:{T}" and stored[-1] == pytest.approx(payment.amount)


def test_flat_symbol_pays_nothing() -> None:
    engine = SymbolEngine("BTCUSDT", RunConfig(
        strategy=EmaCrossConfig(fast_period=10, slow_period=20, quantity=0.01)
    ))
    result = engine.step(_batch(0, T - 60 * NS_PER_SECOND, T + 60 * NS_PER_SECOND, STREAM),
                         2**62, RecordingGateway())
    assert "funding" not in result.journal
    assert not [u for u in result.updates if isinstance(u, FundingPayment)]


def test_funding_paid_while_open_counts_in_the_round_trip() -> None:
    """The trades row carries the funding paid during the round trip and its P&L is net of it,
    as risk's equity is."""
    engine = _engine_with_long(0.5)
    gateway = RecordingGateway()
    engine.step(_batch(0, T - 60 * NS_PER_SECOND, T, STREAM[:2]), 2**62, gateway)
    engine.step(_batch(1, T, T + 60 * NS_PER_SECOND, STREAM[2:]), 2**62, gateway)
    paid = 0.5 * 101.0 * 0.0002
    (row,) = engine.flow.tracker.apply_fill(
        _fill(-1, 0.5, 102.0, T + 2 * NS_PER_HOUR, 2), OrderContext("exit", "test"))
    assert row["funding"] == pytest.approx(paid)
    assert row["pnl"] == pytest.approx(0.5 * (102.0 - 100.0) - row["fees"] - paid)


def test_rate_at_is_the_last_announced_never_a_later_one() -> None:
    schedule = FundingSchedule()
    assert schedule.rate_at(T) is None  # nothing announced yet (a spot symbol stays so)
    schedule.observe(marks(STREAM[:2]))
    assert schedule.rate_at(T - 3 * NS_PER_SECOND) is None
    assert schedule.rate_at(T - 2 * NS_PER_SECOND) == 0.0001
    assert schedule.rate_at(T - NS_PER_SECOND // 2) == 0.0002
    schedule.observe(marks(STREAM[2:]))  # the next batch: the last rate before it carries over
    assert schedule.rate_at(T) == 0.0002
    assert schedule.rate_at(T + NS_PER_SECOND) == 0.0003


def test_entry_intents_carry_the_funding_rate_known_at_signal_time() -> None:
    from engine.config import SimulationConfig
    from engine.order_flow import OrderFlow
    from engine.strategies.base import Signal

    flow = OrderFlow("BTCUSDT", "test", SimulationConfig())
    flow.funding.observe(marks(STREAM))
    flow.on_signal(Signal(1, "test"), "1m", T - NS_PER_SECOND // 2, 101.0, {"close": 101.0})
    flow.on_signal(Signal(-1, "own", details={"funding_rate": 0.5}, reverse=True), "1m",
                   T + 3 * NS_PER_SECOND, 101.0, {"close": 101.0})
    features = [queued.intent.features for queued in flow.queue]
    assert features[0]["funding_rate"] == 0.0002
    assert features[-1]["funding_rate"] == 0.5  # the strategy's own value wins
