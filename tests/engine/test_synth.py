"""Synthetic trades from 1-minute bars reproduce every bar exactly and are seeded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.batches import TradeColumns
from engine.synth import SynthesisError, minimum_trades, synth_from_bars, synthesize_trades
from storage.klines import read_klines_csv
from storage.tape import TapeReader

REPO = Path(__file__).resolve().parents[2]
KLINES = REPO / "data" / "binance-1m" / "BTCUSDT_1m.csv"
MINUTE = 60_000_000_000


@pytest.fixture(scope="module")
def klines() -> pa.Table:
    return read_klines_csv(KLINES)


def _check_bars(trades: TradeColumns, bars: pa.Table) -> None:
    """Every bar's O/H/L/C/V/count, windows and quantity units, vectorised."""
    count = bars.column("trade_count").to_numpy()
    starts = np.cumsum(count) - count
    column = {name: bars.column(name).to_numpy() for name in bars.column_names}
    assert len(trades) == int(count.sum())
    price = trades.price
    np.testing.assert_array_equal(price[starts], column["open"])
    np.testing.assert_array_equal(price[starts + count - 1], column["close"])
    np.testing.assert_array_equal(np.maximum.reduceat(price, starts), column["high"])
    np.testing.assert_array_equal(np.minimum.reduceat(price, starts), column["low"])
    units = np.rint(trades.qty * 1e8).astype(np.int64)
    assert np.all(units >= 1)
    np.testing.assert_array_equal(trades.qty, units / 1e8)  # exact multiples of 1e-8
    np.testing.assert_array_equal(np.add.reduceat(units, starts),
                                  np.rint(column["volume"] * 1e8).astype(np.int64))
    np.testing.assert_allclose(np.add.reduceat(trades.qty, starts), column["volume"], rtol=1e-9)
    bar = np.repeat(np.arange(len(count)), count)
    assert np.all(trades.ts_event >= column["ts_open"][bar])
    assert np.all(trades.ts_event < column["ts_close"][bar])
    assert np.all(np.diff(trades.ts_event) >= 0)
    np.testing.assert_array_equal(trades.ts_recv, trades.ts_event)
    assert np.all(np.diff(trades.trade_id) == 1)
    assert set(np.unique(trades.side).tolist()) == {-1, 1}
    assert np.all(np.abs(price * 100 - np.rint(price * 100)) < 1e-6)  # on the 0.01 tick


def test_120_bars_reproduced_exactly(klines) -> None:
    trades = synthesize_trades(klines, seed=7, minutes=120)
    _check_bars(trades, klines.slice(0, 120))
    assert trades.trade_id[0] == 1
    assert trades.trade_id.dtype == np.int64 and trades.side.dtype == np.int8


def test_deterministic_per_seed_and_different_across_seeds(klines) -> None:
    first = synthesize_trades(klines, seed=3, minutes=30, start_minute=100)
    again = synthesize_trades(klines, seed=3, minutes=30, start_minute=100)
    other = synthesize_trades(klines, seed=4, minutes=30, start_minute=100)
    for key, value in first.as_dict().items():
        np.testing.assert_array_equal(value, again.as_dict()[key])
    assert not np.array_equal(first.price, other.price)
    assert not np.array_equal(first.qty, other.qty)
    assert not np.array_equal(first.ts_event, other.ts_event)
    _check_bars(other, klines.slice(100, 30))


def test_start_minute_and_first_trade_id(klines) -> None:
    trades = synthesize_trades(klines, seed=0, minutes=5, start_minute=1000, first_trade_id=500)
    _check_bars(trades, klines.slice(1000, 5))
    assert trades.trade_id[0] == 500
    assert trades.ts_event[0] >= klines.column("ts_open")[1000].as_py()


def _bars(rows: list[tuple[float, float, float, float, float, int]]) -> pa.Table:
    opens = np.arange(len(rows), dtype=np.int64) * MINUTE + 1_700_000_000 * 10**9
    names = ("open", "high", "low", "close", "volume", "trade_count")
    columns = {name: [row[index] for row in rows] for index, name in enumerate(names)}
    return pa.table({"ts_open": opens, "ts_close": opens + MINUTE, **columns})


def test_tiny_bars_use_the_fewest_trades_possible() -> None:
    bars = _bars([
        (100.0, 100.0, 100.0, 100.0, 0.5, 1),  # flat: one trade is enough
        (100.0, 101.0, 100.0, 101.0, 0.5, 2),  # high and low are open and close
        (100.0, 102.0, 100.0, 101.0, 0.5, 3),  # high in between
        (100.0, 101.0, 99.0, 100.5, 0.5, 4),  # both extremes in between
    ])
    trades = synthesize_trades(bars, seed=1)
    _check_bars(trades, bars)
    assert trades.price[:6].tolist() == [100.0, 100.0, 101.0, 100.0, 102.0, 101.0]
    prices = [bars.column(name).to_numpy() for name in ("open", "high", "low", "close")]
    np.testing.assert_array_equal(minimum_trades(*prices), [1, 2, 3, 4])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((100.0, 101.0, 100.0, 100.0, 0.5, 1), "trade_count is too small"),
        ((100.0, 101.0, 99.0, 100.0, 0.5, 3), "needs >= 4 trades"),
        ((100.0, 101.0, 99.0, 100.0, 0.00000002, 4), "volume is below one 1e-8 unit"),
        ((100.0, 99.0, 101.0, 100.0, 0.5, 4), "outside [low, high]"),
    ],
)
def test_impossible_bars_raise_naming_the_bar(row, message) -> None:
    bars = _bars([(100.0, 100.0, 100.0, 100.0, 0.5, 5), row])
    with pytest.raises(SynthesisError) as error:
        synthesize_trades(bars, seed=0)
    assert "bar 1 (closing 2023-11-14T22:15:19.999Z)" in str(error.value)
    assert message in str(error.value)


def test_range_errors(klines) -> None:
    with pytest.raises(SynthesisError, match="there are 41761"):
        synthesize_trades(klines, seed=0, minutes=10, start_minute=41_755)
    with pytest.raises(SynthesisError, match="start_minute -1"):
        synthesize_trades(klines, seed=0, start_minute=-1)


def test_real_data_has_no_bar_too_small_and_first_day_is_full(klines) -> None:
    count = klines.column("trade_count").to_numpy()
    prices = [klines.column(name).to_numpy() for name in ("open", "high", "low", "close")]
    assert np.all(count >= minimum_trades(*prices))
    assert int(count.min()) == 70
    assert int(count[:1440].sum()) == 3_270_897  # the benchmark's default day has >= 3M trades


def test_full_day_is_fast_and_exact(klines) -> None:
    started = time.perf_counter()
    trades = synthesize_trades(klines, seed=0, minutes=1440)
    elapsed = time.perf_counter() - started
    assert len(trades) == 3_270_897
    _check_bars(trades, klines.slice(0, 1440))
    assert elapsed < 8.0, f"one day took {elapsed:.2f} s (about 1 s expected)"


def test_synth_from_bars_writes_a_synthetic_tape(tmp_path: Path, klines) -> None:
    summary = synth_from_bars(KLINES, tmp_path / "tape", minutes=20, seed=5, start_minute=60)
    expected = synthesize_trades(klines, seed=5, minutes=20, start_minute=60)
    assert summary["trades"] == len(expected) and summary["bars"] == 20
    assert summary["first_ts"] == int(expected.ts_event[0])
    assert summary["last_ts"] == int(expected.ts_event[-1])
    metadata = json.loads((tmp_path / "tape" / "tape.json").read_text())
    assert metadata["synthetic"] is True and metadata["source"] == "BTCUSDT_1m.csv"
    assert metadata["source_csv"] == "BTCUSDT_1m.csv"
    assert (metadata["seed"], metadata["minutes"], metadata["start_minute"]) == (5, 20, 60)
    assert metadata["rows"]["trades"] == len(expected) and metadata["symbols"] == ["BTCUSDT"]
    chunks = list(TapeReader(tmp_path / "tape").iter_chunks(10**9, 2**62))
    (chunk,) = chunks
    for key, value in expected.as_dict().items():
        np.testing.assert_array_equal(chunk.trades.as_dict()[key], value)
