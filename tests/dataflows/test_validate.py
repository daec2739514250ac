"""Trade and quote validation: real data passes whole, each injected defect gets its reason."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataflows.binance import parse_capture
from dataflows.validate import QuoteValidator, TradeValidator
from engine.batches import QuoteColumns, TradeColumns

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
