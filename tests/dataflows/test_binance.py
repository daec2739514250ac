"""Binance capture reader and parser, checked against the real bundled spot capture."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from dataflows.binance import (
    PAYLOAD_LIMIT,
    BinanceParser,
    CaptureChunk,
    ParseResult,
    parse_capture,
    read_capture,
)
from engine.batches import MarketChunk, TradeColumns

REPO = Path(__file__).resolve().parents[2]
SPOT = [
    REPO / "data" / "binance-spot" / "btcusdt_20240808.gz",
    REPO / "data" / "binance-spot" / "btcusdt_20240809.gz",
]
USDM = REPO / "data" / "binance-usdm" / "btcusdt_20240808.gz"


def _all_chunks(results: list[ParseResult]) -> list[MarketChunk]:
    return [chunk for result in results for chunk in result.chunks]


def _all_dead(results: list[ParseResult]) -> list:
    dead = [letter for result in results for letter in result.dead_letters]
    return dead + [letter for chunk in _all_chunks(results) for letter in chunk.dead_letters]


@pytest.fixture(scope="module")
def spot_results() -> list[ParseResult]:
    return list(parse_capture(SPOT, chunk_lines=20_000))


@pytest.fixture(scope="module")
def spot_lines() -> list[tuple[int, dict]]:
    """Independent reading of the capture with the standard library only."""
    lines = []
    for path in SPOT:
        with gzip.open(path, "rt") as handle:
            for line in handle:
                stamp, frame = line.split(" ", 1)
                lines.append((int(stamp), json.loads(frame)))
    return lines


def test_every_spot_frame_parses_without_dead_letters(spot_results, spot_lines) -> None:
    assert _all_dead(spot_results) == []
    chunks = _all_chunks(spot_results)
    assert {chunk.symbol for chunk in chunks} == {"BTCUSDT"}
    assert [chunk.sequence for chunk in chunks] == list(range(len(chunks)))
    assert len(chunks) == 3 + 3  # 41,249 and 58,325 lines, chunks of 20,000 lines per file

    trade_frames = [frame["data"] for _, frame in spot_lines
                    if frame.get("stream") == "btcusdt@trade"]
    depth_frames = [frame["data"] for _, frame in spot_lines
                    if frame.get("stream") == "btcusdt@depth@100ms"]
    ticker_count = sum(1 for _, frame in spot_lines if frame.get("stream") == "btcusdt@bookTicker")
    assert sum(len(chunk.trades) for chunk in chunks) == len(trade_frames) == 19_904
    assert sum(len(chunk.quotes) for chunk in chunks) == ticker_count == 73_174
    level_count = sum(len(data["b"]) + len(data["a"]) for data in depth_frames)
    assert sum(len(chunk.deltas) for chunk in chunks) == level_count

    trades = TradeColumns.concat([chunk.trades for chunk in chunks])
    assert np.all(np.diff(trades.trade_id) == 1)
    assert trades.trade_id[0] == trade_frames[0]["t"] == 3735683259
    assert trades.ts_event[0] == trade_frames[0]["T"] * 1_000_000
    assert trades.price[0] == 61837.63 and trades.qty[0] == 0.02
    sellers = sum(1 for data in trade_frames if data["m"])
    assert int(np.sum(trades.side == -1)) == sellers
    assert int(np.sum(trades.side == 1)) == len(trade_frames) - sellers
    np.testing.assert_array_equal(trades.price, [float(data["p"]) for data in trade_frames])
    np.testing.assert_array_equal(trades.qty, [float(data["q"]) for data in trade_frames])


def test_depth_rows_keep_ids_sides_and_order(spot_results, spot_lines) -> None:
    first = _all_chunks(spot_results)[0].deltas
    data = spot_lines[0][1]["data"]
    rows = len(data["b"]) + len(data["a"])
    assert np.all(first.first_update_id[:rows] == 50093239189)
    assert np.all(first.final_update_id[:rows] == 50093239202)
    assert np.all(first.prev_final_update_id[:rows] == -1)
    assert list(first.side[:rows]) == [1] * len(data["b"]) + [-1] * len(data["a"])
    assert list(first.price[:rows]) == [float(p) for p, _ in data["b"] + data["a"]]
    assert first.ts_event[0] == data["E"] * 1_000_000
    assert first.ts_recv[0] == spot_lines[0][0]


def test_snapshot_parsed_with_all_levels_and_estimated_time(spot_results, spot_lines) -> None:
    snapshots = [chunk.snapshots for chunk in _all_chunks(spot_results) if len(chunk.snapshots)]
    assert len(snapshots) == 1
    snapshot = snapshots[0]
    assert len(snapshot) == 2000
    assert set(snapshot.last_update_id.tolist()) == {50093239218}
    assert int(np.sum(snapshot.side == 1)) == 1000 and int(np.sum(snapshot.side == -1)) == 1000
    assert snapshot.price[0] == 61837.63 and snapshot.qty[0] == 3.78826
    assert snapshot.price[1000] == 61837.64  # first ask
    # No exchange time: ts_recv + (E - ts_recv) of the latest earlier frame carrying E.
    index = next(i for i, (_, frame) in enumerate(spot_lines) if "lastUpdateId" in frame)
    received = spot_lines[index][0]
    earlier = [(stamp, frame["data"]["E"]) for stamp, frame in spot_lines[:index]
               if "E" in frame.get("data", {})]
    offset = earlier[-1][1] * 1_000_000 - earlier[-1][0]
    assert set(snapshot.ts_recv.tolist()) == {received}
    assert set(snapshot.ts_event.tolist()) == {received + offset}


def test_spot_quotes_get_estimated_non_decreasing_event_times(spot_results, spot_lines) -> None:
    quotes = _all_chunks(spot_results)[0].quotes
    # The first bookTicker (line 3) follows two depth frames; the offset is the second's.
    stamp, frame = spot_lines[1]
    offset = frame["data"]["E"] * 1_000_000 - stamp
    assert quotes.ts_event[0] == quotes.ts_recv[0] + offset
    assert quotes.update_id[0] == 50093239212
    assert (quotes.bid_price[0], quotes.ask_price[0]) == (61837.63, 61837.64)
    all_quotes = np.concatenate([chunk.quotes.ts_event for chunk in _all_chunks(spot_results)])
    assert np.all(np.diff(all_quotes) >= 0)


def test_chunk_size_does_not_change_the_columns(spot_results) -> None:
    """Parser state (clock offset, quote clamp) carries across chunks: any cut gives the same
    rows."""
    small = _all_chunks(list(parse_capture(SPOT, chunk_lines=1_777)))
    for kind in ("trades", "quotes", "deltas", "snapshots"):
        for key, values in _joined(_all_chunks(spot_results), kind).items():
            np.testing.assert_array_equal(values, _joined(small, kind)[key], err_msg=kind + key)


def _joined(chunks: list[MarketChunk], kind: str) -> dict[str, np.ndarray]:
    parts = [getattr(chunk, kind).as_dict() for chunk in chunks]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def test_sequences_increase_per_symbol_across_calls() -> None:
    parser = BinanceParser()
    sequences = []
    for lines, read_letters in read_capture(SPOT[0], chunk_lines=5_000):
        assert read_letters == []
        result = parser.parse_lines(lines)
        sequences += [(chunk.symbol, chunk.sequence) for chunk in result.chunks]
    assert sequences == [("BTCUSDT", index) for index in range(len(sequences))]
    assert len(sequences) == 9  # 41,249 lines in chunks of 5,000


TRADE = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
    '"t":%d,"p":"%s","q":"%s","T":1723161255342,"m":%s,"M":true}}'
)
SNAPSHOT = '{"lastUpdateId":7,"bids":[["100.0","1.0"]],"asks":[["101.0","2.0"]]}'


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_lines_become_dead_letters_with_reasons_and_sources(tmp_path: Path) -> None:
    long_garbage = "x" * 5000
    capture = _write(tmp_path / "bad.txt", [
        f"1000 {SNAPSHOT}",  # 1: no symbol seen yet
        "not-a-time {}",  # 2
        f"1001 {{not json {long_garbage}",  # 3
        '1002 {"stream":"btcusdt@ticker","data":{"e":"24hrTicker","s":"BTCUSDT"}}',  # 4
        '1003 {"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1}}',  # 5
        "1004 " + TRADE % (2, "abc", "1.0", "false"),  # 6
        "1005 " + TRADE % (3, "NaN", "1.0", "true"),  # 7 passes: validation judges NaN
        "1006 " + TRADE % (4, "100.5", "-1", "false"),  # 8 passes too
        '1007 {"e":"trade","E":1723161255400,"s":"btcusdt","t":5,"p":"101","q":"2",'
        '"T":1723161255399,"m":false}',  # 9 bare frame
        '1008 {"u":11,"s":"BTCUSDT","b":"100.0","B":"1","a":"100.5","A":"2"}',  # 10 bare ticker
        '1009 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255500,'
        '"s":"BTCUSDT","U":1,"u":2,"b":[["1.0"]],"a":[]}}',  # 11 level not [p, q]
        '1010 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255500,'
        '"s":"BTCUSDT","U":1,"u":2,"b":[["x","1"]],"a":[]}}',  # 12 level price not a number
        "1011 [1, 2]",  # 13
        '1012 {"hello":"world"}',  # 14
        "",  # blank line: skipped
        f"1013 {SNAPSHOT}",  # 16: now attributable to BTCUSDT
        "1014 " + TRADE % (6, "1", "1", '"yes"'),  # 17 m not a bool
    ])
    results = list(parse_capture([capture]))
    assert len(results) == 1
    result = results[0]
    orphans = {(letter.source, letter.reason) for letter in result.dead_letters}
    assert orphans == {
        ("bad.txt:line 1", "snapshot_symbol_unknown"),
        ("bad.txt:line 2", "invalid_timestamp"),
        ("bad.txt:line 3", "malformed_json"),
        ("bad.txt:line 4", "unknown_stream"),
        ("bad.txt:line 13", "unknown_stream"),
        ("bad.txt:line 14", "unknown_stream"),
    }
    (chunk,) = result.chunks
    attributed = {(letter.source, letter.reason) for letter in chunk.dead_letters}
    assert attributed == {
        ("bad.txt:line 5", "missing_field"),
        ("bad.txt:line 6", "invalid_number"),
        ("bad.txt:line 11", "invalid_field"),
        ("bad.txt:line 12", "invalid_number"),
        ("bad.txt:line 17", "invalid_field"),
    }
    for letter in [*result.dead_letters, *chunk.dead_letters]:
        assert str(tmp_path) not in letter.detail and str(tmp_path) not in letter.source
        assert len(letter.payload) <= PAYLOAD_LIMIT
        assert letter.stage in {"read_capture", "parse_frames"}
    malformed = next(letter for letter in result.dead_letters if letter.reason == "malformed_json")
    assert len(malformed.payload) == PAYLOAD_LIMIT and malformed.ts_recv == 1001
    assert next(letter for letter in chunk.dead_letters).symbol == "BTCUSDT"

    assert chunk.symbol == "BTCUSDT"
    assert chunk.trades.trade_id.tolist() == [3, 4, 5]
    assert np.isnan(chunk.trades.price[0]) and chunk.trades.qty[1] == -1.0
    assert chunk.trades.side.tolist() == [-1, 1, 1]
    assert chunk.quotes.update_id.tolist() == [11]
    # Bare ticker: ts_recv plus the offset of the latest frame with E (line 9).
    assert chunk.quotes.ts_event[0] == 1008 + (1723161255400 * 1_000_000 - 1007)
    assert chunk.snapshots.last_update_id.tolist() == [7, 7]
    assert chunk.snapshots.side.tolist() == [1, -1]


def test_snapshot_goes_to_symbol_hint_and_unknown_with_several_symbols(tmp_path: Path) -> None:
    capture = _write(tmp_path / "hint.txt", [f"5 {SNAPSHOT}"])
    (result,) = parse_capture([capture], symbol_hint="ethusdt")
    assert [chunk.symbol for chunk in result.chunks] == ["ETHUSDT"]
    assert result.chunks[0].snapshots.ts_event.tolist() == [5, 5]  # no offset known yet

    other = TRADE.replace("btcusdt", "ethusdt").replace("BTCUSDT", "ETHUSDT")
    capture = _write(tmp_path / "two.txt", [
        "1 " + TRADE % (1, "1", "1", "true"),
        "2 " + other % (1, "2", "1", "false"),
        f"3 {SNAPSHOT}",
    ])
    (result,) = parse_capture([capture])
    assert [(chunk.symbol, len(chunk.trades)) for chunk in result.chunks] == [
        ("BTCUSDT", 1), ("ETHUSDT", 1)
    ]
    assert [letter.reason for letter in result.dead_letters] == ["snapshot_symbol_unknown"]
    assert "BTCUSDT, ETHUSDT" in result.dead_letters[0].detail


def test_truncated_gzip_ends_with_a_dead_letter(tmp_path: Path) -> None:
    whole = gzip.compress(
        "".join(f"{1000 + i} " + TRADE % (i, "1", "1", "true") + "\n" for i in range(2000)).encode()
    )
    path = tmp_path / "cut.gz"
    path.write_bytes(whole[: len(whole) // 2])
    chunks = list(read_capture(path, chunk_lines=500))
    reasons = [letter.reason for _, letters in chunks for letter in letters]
    assert reasons == ["truncated_file"]
    assert 0 < sum(len(chunk) for chunk, _ in chunks) < 2000


def test_live_style_chunk_and_bad_chunk_size() -> None:
    parser = BinanceParser()
    frame = (TRADE % (9, "10", "0.5", "true")).encode()
    result = parser.parse_lines(CaptureChunk("capture", [1], [123], [frame]), "live:btcusdt")
    assert result.chunks[0].trades.trade_id.tolist() == [9]
    assert parser.offset_ns == 1723161255343 * 1_000_000 - 123
    live = parser.parse_frames([frame, b"{oops"], [124, 125], source="live:btcusdt")
    assert [letter.source for letter in live.dead_letters] == ["live:btcusdt:line 2"]
    assert live.chunks[0].sequence == 1
    with pytest.raises(ValueError, match="chunk_lines"):
        next(read_capture(SPOT[0], chunk_lines=0))


def test_usdm_futures_capture_parses_with_prev_update_ids() -> None:
    results = list(parse_capture([USDM]))
    assert _all_dead(results) == []
    chunks = _all_chunks(results)
    trades = TradeColumns.concat([chunk.trades for chunk in chunks])
    assert len(trades) == 21_313 and np.all(np.diff(trades.trade_id) == 1)
    deltas = chunks[0].deltas
    assert np.all(deltas.prev_final_update_id > 0)
    quotes = chunks[0].quotes
    assert quotes.ts_event[0] == 1723161256313 * 1_000_000  # futures tickers carry E
