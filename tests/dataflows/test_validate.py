"""Trade, agg trade, quote and mark validation: real data passes whole, each injected defect
gets its reason; `validate_events` builds bars from agg trades when a stream has no trades."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataflows.binance import parse_capture
from dataflows.steps import StagedChunk, compute_indicators, validate_events
from dataflows.validate import AggTradeValidator, MarkValidator, QuoteValidator, TradeValidator
from engine.batches import (
    AggTradeColumns,
    MarketChunk,
    MarkPriceColumns,
    QuoteColumns,
    TradeColumns,
)
from tests.dataflows.test_binance_captures import cryptofeed_frames, parse_all

REPO = Path(__file__).resolve().parents[2]
SPOT = REPO / "data" / "binance-spot" / "btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def real() -> tuple[TradeColumns, QuoteColumns]:
    chunks = [chunk for result in parse_capture([SPOT]) for chunk in result.chunks]
    trades = TradeColumns.concat([chunk.trades for chunk in chunks])
    quotes = QuoteColumns(
        **{
            key: np.concatenate([chunk.quotes.as_dict()[key] for chunk in chunks])
            for key in QuoteColumns.empty().as_dict()
        }
    )
    return trades, quotes


def _trades(ids: list[int], times: list[int], prices: list[float] | None = None,
            qtys: list[float] | None = None) -> TradeColumns:
    count = len(ids)
    return TradeColumns(
        ts_event=np.array(times, np.int64),
        ts_recv=np.array(times, np.int64),
        trade_id=np.array(ids, np.int64),
        price=np.array(prices or [100.0] * count, np.float64),
        qty=np.array(qtys or [1.0] * count, np.float64),
        side=np.ones(count, np.int8),
    )


def _rows(letters: list) -> list[tuple[int, str]]:
    return [(int(letter.source.rsplit(" ", 1)[1]), letter.reason) for letter in letters]


def test_real_trades_all_accepted_in_batches(real) -> None:
    trades, _ = real
    validator = TradeValidator()
    kept = []
    for start in range(0, len(trades), 1000):
        batch, dead = validator.validate("BTCUSDT", trades.take(slice(start, start + 1000)), "t")
        assert dead == []
        kept.append(batch)
    merged = TradeColumns.concat(kept)
    np.testing.assert_array_equal(merged.trade_id, trades.trade_id)
    assert validator.last_accepted("BTCUSDT") == (
        int(trades.trade_id[-1]), int(trades.ts_event[-1])
    )


def test_injected_trade_defects_get_exact_reasons(real) -> None:
    trades, _ = real
    base = trades.take(slice(0, 50))
    columns = {key: value.copy() for key, value in base.as_dict().items()}
    columns["price"][3] = np.nan
    columns["price"][4] = -1.0
    columns["price"][5] = np.inf
    columns["qty"][6] = 0.0
    columns["qty"][7] = np.nan
    columns["price"][8] = np.nan  # price wins over the bad qty
    columns["qty"][8] = -2.0
    # row 10 repeats row 9 (a duplicate), row 20 carries an older id, row 30 an older time
    columns["trade_id"][10] = columns["trade_id"][9]
    columns["trade_id"][20] = columns["trade_id"][2]
    columns["ts_event"][30] = columns["ts_event"][0] - 1
    batch = TradeColumns(**columns)
    kept, dead = TradeValidator().validate("BTCUSDT", batch, "btcusdt_20240808.gz chunk 0")
    assert _rows(dead) == [
        (3, "invalid_price"), (4, "invalid_price"), (5, "invalid_price"), (6, "invalid_qty"),
        (7, "invalid_qty"), (8, "invalid_price"), (10, "duplicate_trade_id"),
        (20, "duplicate_trade_id"), (30, "out_of_order"),
    ]
    assert len(kept) == 50 - 9
    assert np.all(np.diff(kept.trade_id) > 0) and np.all(np.diff(kept.ts_event) >= 0)
    assert dead[0].source == "btcusdt_20240808.gz chunk 0 row 3"
    assert dead[0].symbol == "BTCUSDT" and dead[0].stage == "validate_trades"
    assert "nan" in dead[0].detail and str(int(batch.trade_id[3])) in dead[0].detail
    assert "earlier than the last accepted ts_event" in dead[-1].detail


def test_state_carries_across_batches_and_pickles() -> None:
    validator = TradeValidator()
    kept, dead = validator.validate("X", _trades([1, 2, 3], [10, 20, 30]), "a")
    assert len(kept) == 3 and dead == []
    validator = pickle.loads(pickle.dumps(validator))
    kept, dead = validator.validate("X", _trades([3, 2, 4, 5, 5], [30, 40, 25, 50, 50]), "b")
    assert _rows(dead) == [
        (0, "duplicate_trade_id"), (1, "out_of_order"), (2, "out_of_order"),
        (4, "duplicate_trade_id"),
    ]
    assert kept.trade_id.tolist() == [5]
    # another symbol has its own state
    kept, dead = validator.validate("Y", _trades([1], [1]), "c")
    assert len(kept) == 1 and dead == []
    assert validator.last_accepted("X") == (5, 50)
    empty, dead = validator.validate("X", TradeColumns.empty(), "d")
    assert len(empty) == 0 and dead == []


def test_rejected_row_does_not_block_later_rows() -> None:
    # Row 1 has a huge id but an old time: rejected for its time, its id must not count.
    validator = TradeValidator()
    batch = _trades([1, 10**12, 2, 3], [100, 50, 110, 120])
    kept, dead = validator.validate("X", batch, "s")
    assert _rows(dead) == [(1, "out_of_order")]
    assert kept.trade_id.tolist() == [1, 2, 3]
    # Symmetric case: an old id with a far-future time must not block later times.
    kept, dead = validator.validate("X", _trades([2, 4, 5], [10**15, 130, 140]), "s")
    assert _rows(dead) == [(0, "out_of_order")]  # below the last id 3
    assert kept.trade_id.tolist() == [4, 5]


def test_real_quotes_pass_and_injected_quote_defects(real) -> None:
    _, quotes = real
    validator = QuoteValidator()
    kept, dead = validator.validate("BTCUSDT", quotes, "q")
    assert dead == [] and len(kept) == len(quotes)

    part = {key: value[:40].copy() for key, value in quotes.as_dict().items()}
    part["bid_price"][2] = np.nan
    part["ask_qty"][3] = 0.0
    part["bid_price"][4] = part["ask_price"][4] + 0.01
    part["bid_price"][5] = part["ask_price"][5]  # locked: allowed
    part["ts_event"][6] = part["ts_event"][0] - 1
    validator = QuoteValidator()
    kept, dead = validator.validate("BTCUSDT", QuoteColumns(**part), "q")
    assert _rows(dead) == [
        (2, "invalid_quote"), (3, "invalid_quote"), (4, "crossed_quote"), (6, "out_of_order"),
    ]
    assert len(kept) == 36 and np.all(np.diff(kept.ts_event) >= 0)
    assert "is above ask" in dead[2].detail and dead[2].stage == "validate_quotes"
    # across batches: an older quote is out of order
    later = {key: value[:1].copy() for key, value in quotes.as_dict().items()}
    _, dead = pickle.loads(pickle.dumps(validator)).validate("BTCUSDT", QuoteColumns(**later), "r")
    assert Counter(letter.reason for letter in dead) == {"out_of_order": 1}


@pytest.fixture(scope="module")
def futures_chunks(multi_venue_dir: Path) -> list[MarketChunk]:
    """The cryptofeed Binance futures capture: aggTrade only, no raw trades, four symbols."""
    frames = cryptofeed_frames(multi_venue_dir / "BINANCE_FUTURES.ws.1.0",
                               multi_venue_dir / "BINANCE_FUTURES.http.0.0")
    _, chunks, dead = parse_all(frames, 300, "futures")
    assert dead == []
    return chunks


def test_real_agg_trades_pass_and_injected_defects_get_reasons(futures_chunks) -> None:
    chunks = [chunk for chunk in futures_chunks if chunk.symbol == "SUSHIUSDT"]
    agg = AggTradeColumns(**{key: np.concatenate([c.agg_trades.as_dict()[key] for c in chunks])
                             for key in AggTradeColumns.empty().as_dict()})
    assert len(agg) > 20
    kept, dead = AggTradeValidator().validate("SUSHIUSDT", agg, "s")
    assert dead == [] and len(kept) == len(agg)

    columns = {key: value[:20].copy() for key, value in agg.as_dict().items()}
    columns["price"][2] = np.nan
    columns["qty"][3] = -1.0
    columns["agg_id"][6] = columns["agg_id"][5]
    columns["agg_id"][9] = columns["agg_id"][0] - 1
    columns["ts_event"][12] = columns["ts_event"][0] - 1
    validator = AggTradeValidator()
    kept, dead = validator.validate("SUSHIUSDT", AggTradeColumns(**columns), "sushi chunk 0")
    assert _rows(dead) == [(2, "invalid_price"), (3, "invalid_qty"), (6, "duplicate_agg_id"),
                           (9, "out_of_order"), (12, "out_of_order")]
    assert len(kept) == 15 and np.all(np.diff(kept.agg_id) > 0)
    assert dead[2].stage == "validate_agg_trades" and "agg trade" in dead[2].detail
    assert f'"agg_id": {int(columns["agg_id"][6])}' in dead[2].payload
    # the state is the last accepted agg id and time, and it pickles
    validator = pickle.loads(pickle.dumps(validator))
    again, dead = validator.validate("SUSHIUSDT", AggTradeColumns(**columns), "sushi chunk 1")
    assert len(again) == 0 and Counter(d.reason for d in dead)["duplicate_agg_id"] >= 1


def _marks(mark: list[float], index: list[float], rate: list[float],
           next_funding: list[int]) -> MarkPriceColumns:
    count = len(mark)
    times = np.arange(count, dtype=np.int64) * 1_000_000_000
    return MarkPriceColumns(times, times, np.array(mark), np.array(index),
                            np.full(count, np.nan), np.array(rate),
                            np.array(next_funding, dtype=np.int64))


def test_mark_defects_get_reasons_and_delivery_contracts_pass() -> None:
    nan, inf = float("nan"), float("inf")
    marks = _marks(
        mark=[100.0, nan, -1.0, 100.0, 100.0, 100.0, 100.0, 100.0],
        index=[99.0, 99.0, 99.0, 0.0, inf, 99.0, 99.0, 99.0],
        rate=[1e-4, 1e-4, 1e-4, 1e-4, 1e-4, nan, inf, nan],
        next_funding=[10**18, 10**18, 10**18, 10**18, 10**18, 10**18, 10**18, 0],
    )
    kept, dead = MarkValidator().validate("BTCUSDT", marks, "m")
    assert _rows(dead) == [(1, "invalid_mark_price"), (2, "invalid_mark_price"),
                           (3, "invalid_index_price"), (4, "invalid_index_price"),
                           (5, "invalid_funding_rate"), (6, "invalid_funding_rate")]
    assert kept.ts_event.tolist() == [0, 7_000_000_000]  # row 7: delivery, no funding
    assert dead[0].stage == "validate_marks" and "mark price nan" in dead[0].detail
    empty, none = MarkValidator().validate("BTCUSDT", MarkPriceColumns.empty(), "m")
    assert len(empty) == 0 and none == []


def test_validate_events_builds_trades_from_agg_trades_without_raw_trades(futures_chunks
                                                                         ) -> None:
    states: dict[str, object] = {}
    for chunk in futures_chunks:
        state, staged = validate_events(states.get(chunk.symbol), StagedChunk(chunk=chunk))
        states[chunk.symbol] = state
        assert staged.dead_letters == ()
        agg = chunk.agg_trades
        assert staged.trades is not None
        assert staged.trades.trade_id.tolist() == agg.agg_id.tolist()
        np.testing.assert_array_equal(staged.trades.price, agg.price)
        np.testing.assert_array_equal(staged.trades.side, agg.side)
        np.testing.assert_array_equal(staged.trades.ts_event, agg.ts_event)
        if len(agg):
            assert staged.watermark == int(agg.ts_event[-1])
    assert sum(len(chunk.agg_trades) for chunk in futures_chunks) == 91


def _chunk(sequence: int, trades: TradeColumns, agg: AggTradeColumns,
           marks: MarkPriceColumns | None = None) -> MarketChunk:
    return MarketChunk("BTCUSDT", sequence, trades, agg_trades=agg,
                       marks=marks if marks is not None else MarkPriceColumns.empty())


def _agg(ids: list[int], times: list[int]) -> AggTradeColumns:
    count = len(ids)
    ints = [np.array(values, np.int64) for values in (times, times, ids, ids, ids)]
    return AggTradeColumns(*ints, np.full(count, 100.0), np.ones(count), np.ones(count, np.int8))


def test_raw_trades_win_from_their_first_chunk_on_and_marks_reach_the_batch() -> None:
    chunk = _chunk(0, TradeColumns.empty(), _agg([5, 6], [10, 20]))
    state, staged = validate_events(None, StagedChunk(chunk=chunk))
    assert staged.trades is not None and staged.trades.trade_id.tolist() == [5, 6]
    marks = _marks([100.0, float("nan")], [99.0, 99.0], [1e-4, 1e-4], [10**18, 10**18])
    chunk = _chunk(1, _trades([100, 101], [30, 40]), _agg([7, 8], [30, 40]), marks)
    state, staged = validate_events(state, StagedChunk(chunk=chunk))
    assert staged.trades is not None and staged.trades.trade_id.tolist() == [100, 101]
    assert [d.reason for d in staged.dead_letters] == ["invalid_mark_price"]
    assert staged.marks is not None and len(staged.marks) == 1
    _, batch = compute_indicators(None, staged, specs=())
    assert batch.marks is not None and batch.marks.mark_price.tolist() == [100.0]
    # raw trades have been seen: agg trades alone no longer make trades
    chunk = _chunk(2, TradeColumns.empty(), _agg([9, 10], [50, 60]))
    _, staged = validate_events(state, StagedChunk(chunk=chunk))
    assert staged.trades is not None and len(staged.trades) == 0
    assert staged.dead_letters == ()  # the agg trades were still validated, and were fine
    _, batch = compute_indicators(None, staged, specs=())
    assert batch.marks is None
