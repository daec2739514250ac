"""Tape writer and reader: round trips, chunk limits, atomic close and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflows.binance import parse_capture
from engine.batches import (
    BookDeltaColumns,
    BookSnapshotColumns,
    MarketChunk,
    QuoteColumns,
    TradeColumns,
)
from storage.schemas import TAPE_TABLES
from storage.tape import TapeError, TapeReader, TapeWriter, capture_to_tape
from storage.tape_chunks import CONTAINERS

REPO = Path(__file__).resolve().parents[2]
SPOT = [
    REPO / "data" / "binance-spot" / "btcusdt_20240808.gz",
    REPO / "data" / "binance-spot" / "btcusdt_20240809.gz",
]
ATTRIBUTES = ("trades", "deltas", "snapshots", "quotes")


def _concat(columns: list) -> dict[str, np.ndarray]:
    keys = columns[0].as_dict().keys()
    return {key: np.concatenate([part.as_dict()[key] for part in columns]) for key in keys}


def _assert_same(chunks_a: list[MarketChunk], chunks_b: list[MarketChunk]) -> None:
    for attribute in ATTRIBUTES:
        left = _concat([getattr(chunk, attribute) for chunk in chunks_a])
        right = _concat([getattr(chunk, attribute) for chunk in chunks_b])
        for key in left:
            assert left[key].dtype == right[key].dtype, (attribute, key)
            np.testing.assert_array_equal(left[key], right[key], err_msg=f"{attribute}.{key}")


@pytest.fixture(scope="module")
def spot_tape(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[MarketChunk]]:
    out = tmp_path_factory.mktemp("tapes") / "spot"
    summary = capture_to_tape(SPOT, out, None)
    parsed = [chunk for result in parse_capture(SPOT) for chunk in result.chunks]
    return out, summary, parsed


def test_capture_to_tape_round_trip(spot_tape) -> None:
    out, summary, parsed = spot_tape
    assert summary["dead_letter_count"] == 0 and summary["dead_letters"] == []
    assert summary["rows"] == {
        "trades": 19_904, "book_deltas": sum(len(c.deltas) for c in parsed),
        "book_snapshots": 2000, "best_bid_ask": 73_174,
        "agg_trades": 0, "mark_prices": 0, "venue_klines": 0, "feed_events": 0,
    }
    reader = TapeReader(out)
    assert reader.symbols == ["BTCUSDT"]
    metadata = json.loads((out / "tape.json").read_text())
    assert metadata["format"] == "ats-tape" and metadata["version"] == 1
    assert metadata["synthetic"] is False
    assert metadata["source"] == "btcusdt_20240808.gz, btcusdt_20240809.gz"
    assert metadata["created_by"].startswith("ats ")
    assert metadata["rows"] == summary["rows"] and reader.metadata == metadata
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [f"{name}.parquet" for name in TAPE_TABLES] + ["tape.json"]
    )
    whole = list(reader.iter_chunks(10**9, 2**62))
    assert len(whole) == 1 and whole[0].end_of_stream
    _assert_same(whole, parsed)


def test_chunks_respect_limits_and_cover_everything(spot_tape) -> None:
    out, _, parsed = spot_tape
    limit_rows, limit_ns = 500, 2_000_000_000
    chunks = list(TapeReader(out).iter_chunks(limit_rows, limit_ns))
    assert [chunk.sequence for chunk in chunks] == list(range(len(chunks)))
    assert [chunk.end_of_stream for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    previous_end = -1
    for chunk in chunks:
        assert len(chunk.trades) <= limit_rows
        received = np.concatenate([getattr(chunk, a).ts_recv for a in ATTRIBUTES])
        assert len(received) > 0  # gaps never make empty chunks
        assert received.max() - received.min() < limit_ns
        assert received.min() >= previous_end  # consecutive, non-overlapping ranges
        previous_end = received.max()
    assert any(len(chunk.trades) == limit_rows for chunk in chunks)  # row limit was hit
    _assert_same(chunks, parsed)


def _synthetic_chunk(symbol: str, sequence: int, start: int, rows: int) -> MarketChunk:
    times = np.arange(start, start + rows, dtype=np.int64) * 10
    trades = TradeColumns(
        ts_event=times, ts_recv=times + 1, trade_id=np.arange(start, start + rows),
        price=np.full(rows, 100.5), qty=np.full(rows, 0.25), side=np.ones(rows, np.int8),
    )
    deltas = BookDeltaColumns(
        times[::2], times[::2] + 3, times[::2], times[::2], np.full(len(times[::2]), -1),
        np.ones(len(times[::2]), np.int8), np.full(len(times[::2]), 99.0),
        np.zeros(len(times[::2])),
    )
    quotes = QuoteColumns(times, times + 2, times, np.full(rows, 99.0), np.ones(rows),
                          np.full(rows, 101.0), np.ones(rows))
    return MarketChunk(symbol, sequence, trades, deltas, BookSnapshotColumns.empty(), quotes)


def test_multi_symbol_tape_with_empty_table_and_symbol_filter(tmp_path: Path) -> None:
    written = {"AAA": [], "BBB": []}
    with TapeWriter(tmp_path / "multi", source="unit test", extra_metadata={"note": 1},
                    row_group_rows=700) as writer:
        for step in range(6):
            for symbol in written:
                chunk = _synthetic_chunk(symbol, step, step * 300, 300)
                written[symbol].append(chunk)
                writer.write_chunk(chunk)
    reader = TapeReader(tmp_path / "multi")
    assert reader.symbols == ["AAA", "BBB"] and reader.metadata["note"] == 1
    assert pq.ParquetFile(tmp_path / "multi" / "trades.parquet").num_row_groups > 1
    chunks = list(reader.iter_chunks(250, 10**9))
    assert [chunk.symbol for chunk in chunks] == ["AAA"] * 8 + ["BBB"] * 8
    for symbol in written:
        mine = [chunk for chunk in chunks if chunk.symbol == symbol]
        assert [chunk.end_of_stream for chunk in mine][-2:] == [False, True]
        _assert_same(mine, written[symbol])
        assert all(len(chunk.snapshots) == 0 for chunk in mine)
        assert mine[0].snapshots.price.dtype == np.float64
    only = list(reader.iter_chunks(10**6, 10**9, symbols=["BBB"]))
    assert len(only) == 1 and only[0].symbol == "BBB" and len(only[0].trades) == 1800
    with pytest.raises(TapeError, match="CCC"):
        list(reader.iter_chunks(10, 10, symbols=["CCC"]))


def test_unsorted_receive_times_keep_row_order(tmp_path: Path) -> None:
    chunk = _synthetic_chunk("AAA", 0, 0, 100)
    received = chunk.trades.ts_recv.copy()
    received[50] = 5  # a late-stamped row in the middle
    trades = TradeColumns(**{**chunk.trades.as_dict(), "ts_recv": received})
    with TapeWriter(tmp_path / "t") as writer:
        writer.write_chunk(MarketChunk("AAA", 0, trades))
    chunks = list(TapeReader(tmp_path / "t").iter_chunks(30, 10**9))
    merged = TradeColumns.concat([c.trades for c in chunks])
    np.testing.assert_array_equal(merged.ts_recv, received)
    assert [len(c.trades) for c in chunks] == [30, 30, 30, 10]


def test_atomic_close_and_abort_leave_no_temporary_directory(tmp_path: Path) -> None:
    target = tmp_path / "tape"
    writer = TapeWriter(target)
    writer.write_chunk(_synthetic_chunk("AAA", 0, 0, 10))
    assert not target.exists()  # nothing visible before close
    writer.close()
    assert [path.name for path in tmp_path.iterdir()] == ["tape"]

    with pytest.raises(TapeError, match="already exists"):
        TapeWriter(target)
    with pytest.raises(RuntimeError), TapeWriter(target, overwrite=True) as writer:
        writer.write_chunk(_synthetic_chunk("BBB", 0, 0, 10))
        raise RuntimeError("crash while writing")
    assert [path.name for path in tmp_path.iterdir()] == ["tape"]
    assert TapeReader(target).symbols == ["AAA"]  # old tape untouched

    with TapeWriter(target, overwrite=True) as writer:
        writer.write_chunk(_synthetic_chunk("BBB", 0, 0, 10))
    assert TapeReader(target).symbols == ["BBB"]
    assert [path.name for path in tmp_path.iterdir()] == ["tape"]


def test_empty_tape_reads_as_one_empty_chunk_per_symbol(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "empty") as writer:
        writer.write_chunk(MarketChunk("AAA", 0, TradeColumns.empty()))
    (chunk,) = TapeReader(tmp_path / "empty").iter_chunks(10, 10)
    assert chunk.symbol == "AAA" and chunk.end_of_stream and len(chunk.trades) == 0
    assert chunk.trades.trade_id.dtype == np.int64 and chunk.trades.side.dtype == np.int8


def test_not_a_tape_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match="no such directory") as error:
        TapeReader(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(error.value)
    (tmp_path / "plain").mkdir()
    with pytest.raises(TapeError, match=r"tape\.json is missing"):
        TapeReader(tmp_path / "plain")

    with TapeWriter(tmp_path / "good") as writer:
        writer.write_chunk(_synthetic_chunk("AAA", 0, 0, 10))
    meta = json.loads((tmp_path / "good" / "tape.json").read_text())
    (tmp_path / "good" / "tape.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(TapeError, match="'format' is not 'ats-tape'"):
        TapeReader(tmp_path / "good")
    (tmp_path / "good" / "tape.json").write_text(json.dumps({**meta, "version": 9}))
    with pytest.raises(TapeError, match="version 9"):
        TapeReader(tmp_path / "good")
    (tmp_path / "good" / "tape.json").write_text("{broken")
    with pytest.raises(TapeError, match="unreadable tape metadata"):
        TapeReader(tmp_path / "good")

    (tmp_path / "good" / "tape.json").write_text(json.dumps(meta))
    wrong = pa.table({"symbol": ["AAA"], "ts_event": [1.5]})
    pq.write_table(wrong, tmp_path / "good" / "trades.parquet")
    with pytest.raises(TapeError) as error:
        TapeReader(tmp_path / "good")
    message = str(error.value)
    assert str(tmp_path / "good" / "trades.parquet") in message
    assert "missing column 'price'" in message and "'ts_event' is double" in message

    (tmp_path / "good" / "trades.parquet").write_bytes(b"not parquet")
    with pytest.raises(TapeError, match="unreadable Parquet"):
        TapeReader(tmp_path / "good")


def test_reading_one_symbol_filters_rows_while_reading(tmp_path: Path) -> None:
    from tests.support.tapes import two_symbol_tape

    klines = Path(__file__).resolve().parents[2] / "data" / "binance-1m" / "BTCUSDT_1m.csv"
    reader = TapeReader(two_symbol_tape(klines, tmp_path / "tape", minutes=20))
    whole = reader.read_table("trades")
    only_eth = reader.read_table("trades", ["ETHUSDT"])
    assert set(only_eth.column("symbol").to_pylist()) == {"ETHUSDT"}
    expected = sum(1 for symbol in whole.column("symbol").to_pylist() if symbol == "ETHUSDT")
    assert only_eth.num_rows == expected < whole.num_rows
    chunks = list(reader.iter_chunks(50_000, 10**15, symbols=["ETHUSDT"]))
    assert sum(len(chunk.trades) for chunk in chunks) == expected
    assert {chunk.symbol for chunk in chunks} == {"ETHUSDT"} and chunks[-1].end_of_stream


def test_streamed_chunks_do_not_depend_on_the_read_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.tape_chunks as tape_chunks
    from tests.support.tapes import two_symbol_tape

    klines = Path(__file__).resolve().parents[2] / "data" / "binance-1m" / "BTCUSDT_1m.csv"
    reader = TapeReader(two_symbol_tape(klines, tmp_path / "tape", minutes=15))

    def cut(read_rows: int) -> list[tuple[str, int, bool, list[np.ndarray]]]:
        monkeypatch.setattr(tape_chunks, "READ_BATCH_ROWS", read_rows)
        return [
            (chunk.symbol, chunk.sequence, chunk.end_of_stream,
             list(chunk.trades.as_dict().values()))
            for chunk in reader.iter_chunks(7_000, 90 * 10**9)
        ]

    large, small = cut(1_000_000), cut(997)
    assert [item[:3] for item in large] == [item[:3] for item in small]
    assert len(large) > 4
    for (_, _, _, expected), (_, _, _, actual) in zip(large, small, strict=True):
        for left, right in zip(expected, actual, strict=True):
            np.testing.assert_array_equal(left, right)


def test_a_table_row_of_an_unlisted_symbol_is_refused(tmp_path: Path) -> None:
    import json

    from tests.support.tapes import two_symbol_tape

    klines = Path(__file__).resolve().parents[2] / "data" / "binance-1m" / "BTCUSDT_1m.csv"
    tape = two_symbol_tape(klines, tmp_path / "tape", minutes=3)
    metadata = json.loads((tape / "tape.json").read_text())
    metadata["symbols"] = ["BTCUSDT"]
    (tape / "tape.json").write_text(json.dumps(metadata))
    with pytest.raises(TapeError, match=r"symbols \['ETHUSDT'\] are not listed"):
        list(TapeReader(tape).iter_chunks(10_000, 10**12))


def _assert_same_tables(chunks_a: list[MarketChunk], chunks_b: list[MarketChunk]) -> None:
    """Every tape table (agg trades, marks and venue klines included) holds the same rows."""
    for attribute, _ in CONTAINERS.values():
        if attribute == "feed_events":
            assert [event for chunk in chunks_a for event in chunk.feed_events] == [
                event for chunk in chunks_b for event in chunk.feed_events]
            continue
        left = _concat([getattr(chunk, attribute) for chunk in chunks_a])
        right = _concat([getattr(chunk, attribute) for chunk in chunks_b])
        for key in left:
            assert left[key].dtype == right[key].dtype, (attribute, key)
            np.testing.assert_array_equal(left[key], right[key], err_msg=f"{attribute}.{key}")


@pytest.mark.slow
def test_usdm_capture_round_trip(tmp_path: Path, usdm_captures: list[Path]) -> None:
    summary = capture_to_tape(usdm_captures, tmp_path / "usdm")
    parsed = [chunk for result in parse_capture(usdm_captures) for chunk in result.chunks]
    assert summary["dead_letter_count"] == 0
    assert summary["rows"] == {
        "trades": 21_313, "book_deltas": sum(len(c.deltas) for c in parsed),
        "book_snapshots": sum(len(c.snapshots) for c in parsed), "best_bid_ask": 66_089,
        "agg_trades": 0, "mark_prices": 0, "venue_klines": 0, "feed_events": 0,
    }
    whole = list(TapeReader(tmp_path / "usdm").iter_chunks(10**9, 2**62))
    assert len(whole) == 1 and whole[0].symbol == "BTCUSDT"
    _assert_same_tables(whole, parsed)
    assert np.all(whole[0].deltas.prev_final_update_id > 0)  # futures pu survives the tape


def test_agg_trades_marks_and_klines_round_trip(tmp_path: Path, multi_venue_dir: Path) -> None:
    """The cryptofeed futures capture (aggTrade, kline_1m, depth, bookTicker, REST snapshots)
    plus mark price frames, as a raw capture, through `capture_to_tape` and back."""
    from tests.dataflows.test_binance_captures import cryptofeed_frames

    frames = cryptofeed_frames(multi_venue_dir / "BINANCE_FUTURES.ws.1.0",
                               multi_venue_dir / "BINANCE_FUTURES.http.0.0")
    mark = {"e": "markPriceUpdate", "E": 1626992742000, "s": "SUSHIUSDT", "p": "7.6115",
            "i": "7.6091", "r": "0.00010000", "T": 1627027200000}
    frames += [(frames[-1][0] + step, json.dumps({"stream": "!markPrice@arr@1s", "data": [
        {**mark, "E": mark["E"] + step * 1000}, {**mark, "s": "CTKUSDT", "P": "1.0101"}]}).encode())
        for step in range(1, 4)]
    capture = tmp_path / "futures.capture"
    capture.write_bytes(b"".join(b"%d %s\n" % (recv, raw) for recv, raw in frames))
    summary = capture_to_tape([capture], tmp_path / "tape")
    assert summary["dead_letter_count"] == 0
    assert {name: summary["rows"][name] for name in ("agg_trades", "mark_prices",
                                                     "venue_klines")} == {
        "agg_trades": 91, "mark_prices": 6, "venue_klines": 67}
    parsed = [chunk for result in parse_capture([capture]) for chunk in result.chunks]
    reader = TapeReader(tmp_path / "tape")
    assert sorted(reader.symbols) == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    for symbol in reader.symbols:
        back = list(reader.iter_chunks(10**9, 2**62, symbols=[symbol]))
        _assert_same_tables(back, [chunk for chunk in parsed if chunk.symbol == symbol])
    marks = next(reader.iter_chunks(10**9, 2**62, symbols=["CTKUSDT"])).marks
    assert marks.estimated_settle_price.tolist() == [1.0101] * 3
    sushi = next(reader.iter_chunks(10**9, 2**62, symbols=["SUSHIUSDT"])).marks
    assert np.isnan(sushi.estimated_settle_price).all()  # not sent: NaN survives Parquet


def test_feed_events_round_trip_through_the_tape(tmp_path: Path) -> None:
    """A live recording's stale/fresh events stay on its tape, so a replay blocks the same
    entries the live run blocked."""
    from engine.batches import FeedEvent, TradeColumns
    from storage.tape import TapeWriter

    events = (FeedEvent("BTCUSDT", 10, 9, "stale", "no data for 30.0 s"),
              FeedEvent("BTCUSDT", 20, 19, "fresh", "data flows again"))
    with TapeWriter(tmp_path / "feed") as writer:
        writer.write_chunk(MarketChunk("BTCUSDT", 0, TradeColumns.empty(), feed_events=events))
    chunks = list(TapeReader(tmp_path / "feed").iter_chunks(1000, 10**12))
    assert tuple(event for chunk in chunks for event in chunk.feed_events) == events
