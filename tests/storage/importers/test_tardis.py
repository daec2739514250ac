"""Tardis importer: trades of several symbols round-trip; bad files and rows are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from importer_inputs import (
    INCREMENTAL_HEADER,
    US,
    table_columns,
    take,
    tardis_book_rows,
    tardis_trade_lines,
    write_lines,
)

from storage.importers import ImportFormatError, import_tardis
from storage.tape import TapeReader


def _expected(trades: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a Tardis file keeps of a trade: times in whole microseconds."""
    return {"ts_event": trades["ts_event"] // US * US, "ts_recv": trades["ts_recv"] // US * US,
            "trade_id": trades["trade_id"], "price": trades["price"], "qty": trades["qty"],
            "side": trades["side"]}


def _assert_trades(tape: Path, symbol: str, expected: dict[str, np.ndarray]) -> None:
    found = table_columns(tape, "trades", symbol)
    for name, values in expected.items():
        np.testing.assert_array_equal(found[name], values, err_msg=f"{symbol}.{name}")


def test_trades_of_two_symbols_in_one_file(tmp_path: Path, spot_capture_tape: Path,
                                           usdm_capture_tape: Path) -> None:
    spot = table_columns(spot_capture_tape, "trades")
    perp = table_columns(usdm_capture_tape, "trades")
    lines = tardis_trade_lines([("binance", "BTCUSDT", spot), ("binance", "btcusdt_perp", perp)])
    source = write_lines(tmp_path / "binance_trades_2024-08-08_GROUPED", lines, "gz")
    result = import_tardis([source], tmp_path / "tape")

    assert result.symbols == ["BTCUSDT", "BTCUSDT_PERP"] or result.symbols == [
        "BTCUSDT_PERP", "BTCUSDT"]
    assert result.rows["trades"] == 19_904 + 21_313 and result.dead_letter_count == 0
    _assert_trades(result.path, "BTCUSDT", _expected(spot))
    _assert_trades(result.path, "BTCUSDT_PERP", _expected(perp))
    metadata = TapeReader(result.path).metadata
    assert metadata["exchanges"] == {"BTCUSDT": "binance", "BTCUSDT_PERP": "binance"}
    assert metadata["synthetic_trade_ids"] == [] and metadata["synthetic_update_ids"] is False
    assert metadata["time_unit"] == "us"
    assert result.files[0]["data_type"] == "trades" and result.files[0]["unknown_side"] == 0


def test_trades_without_numeric_ids_are_numbered_and_unknown_sides_kept(
    tmp_path: Path, spot_capture_tape: Path
) -> None:
    spot = take(table_columns(spot_capture_tape, "trades"), slice(0, 500))
    lines = tardis_trade_lines([("kraken", "XBT/USD", spot)])
    rows = [line.split(",") for line in lines[1:]]
    for index, fields in enumerate(rows):
        fields[4] = "" if index % 2 else f"t-{index}"
        if index % 10 == 3:
            fields[5] = "unknown"
    source = write_lines(tmp_path / "kraken_trades",
                         [lines[0], *(",".join(fields) for fields in rows)], "csv")
    result = import_tardis([source], tmp_path / "tape")

    expected = _expected(spot)
    expected["trade_id"] = np.arange(1, 501)
    expected["side"] = np.where(np.arange(500) % 10 == 3, 0, spot["side"]).astype(np.int8)
    _assert_trades(result.path, "XBT/USD", expected)
    assert TapeReader(result.path).metadata["synthetic_trade_ids"] == ["XBT/USD"]
    assert result.files[0]["unknown_side"] == 50


def test_bad_trade_rows_are_dead_letters_with_lines(tmp_path: Path,
                                                    spot_capture_tape: Path) -> None:
    spot = take(table_columns(spot_capture_tape, "trades"), slice(0, 200))
    lines = tardis_trade_lines([("binance", "BTCUSDT", spot)])
    faults = {  # line -> (field index, new value, reason)
        3: (6, "nan", "invalid_price"),
        7: (7, "-1", "invalid_qty"),
        11: (5, "middle", "invalid_side"),
        15: (4, "abc", "invalid_id"),
        19: (2, "1723161255", "invalid_time"),
        23: (3, "soon", "unparsable_value"),
        27: (1, "", "missing_value"),
    }
    for line, (field, value, _) in faults.items():
        fields = lines[line - 1].split(",")
        fields[field] = value
        lines[line - 1] = ",".join(fields)
    source = write_lines(tmp_path / "binance_trades", lines, "zip")
    result = import_tardis([source], tmp_path / "tape")

    found = {int(letter.source.rsplit(" ", 1)[1]): letter for letter in result.dead_letters}
    assert {line: letter.reason for line, letter in found.items()} == {
        line: reason for line, (_, _, reason) in faults.items()}
    assert "column 'side' 'middle' is not one of ['buy', 'sell', 'unknown']" in found[11].detail
    assert found[15].symbol == "BTCUSDT" and found[15].stage == "import_tardis"
    kept = np.array([row for row in range(200) if row + 2 not in faults])
    _assert_trades(result.path, "BTCUSDT", _expected(take(spot, kept)))


def test_unreadable_files_are_named_with_the_problem(tmp_path: Path,
                                                     spot_capture_tape: Path) -> None:
    trades = take(table_columns(spot_capture_tape, "trades"), slice(0, 20))
    lines = tardis_trade_lines([("binance", "BTCUSDT", trades)])
    cases = {
        "quotes.csv": ("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,"
                       "bid_price,bid_amount\n", "is not a supported Tardis CSV"),
        "no_header.csv": ("\n".join(lines[1:]) + "\n", "is not a supported Tardis CSV"),
        "empty.csv.gz": ("", "empty file"),
        "half_book.csv": ("exchange,symbol,timestamp,local_timestamp,asks[0].price,"
                          "asks[0].amount,bids[0].price\n", "is not a supported Tardis CSV"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ImportFormatError) as raised:
            import_tardis([path], tmp_path / "tape")
        assert name in str(raised.value) and message in str(raised.value), str(raised.value)
    assert not (tmp_path / "tape").exists()


def test_one_symbol_from_two_exchanges_or_two_book_types_is_refused(
    tmp_path: Path, spot_capture_tape: Path
) -> None:
    trades = take(table_columns(spot_capture_tape, "trades"), slice(0, 20))
    first = write_lines(tmp_path / "a", tardis_trade_lines([("binance", "BTCUSDT", trades)]),
                        "csv")
    second = write_lines(tmp_path / "b", tardis_trade_lines([("bybit", "BTCUSDT", trades)]),
                         "csv")
    with pytest.raises(ImportFormatError, match=r"b.csv: line 2: symbol BTCUSDT comes from "
                                                r"exchanges \['binance', 'bybit'\]"):
        import_tardis([first, second], tmp_path / "tape")

    deltas = table_columns(spot_capture_tape, "book_deltas")
    snapshots = table_columns(spot_capture_tape, "book_snapshots")
    rows = tardis_book_rows("BTCUSDT", deltas, snapshots)[:2100]
    incremental = write_lines(tmp_path / "incremental",
                              [INCREMENTAL_HEADER, *(line for _, line in rows)], "csv")
    top = write_lines(tmp_path / "top", [
        "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,"
        "bids[0].amount", "binance,BTCUSDT,1723161255208000,1723161253937085,2.0,1.0,1.0,1.0"],
        "csv")
    with pytest.raises(ImportFormatError, match="both incremental_book_L2 and book_snapshot_N"):
        import_tardis([incremental, top], tmp_path / "tape")
    assert not (tmp_path / "tape").exists()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []
