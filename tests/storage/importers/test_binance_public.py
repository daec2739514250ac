"""Binance public-data importer: every layout round-trips real data; bad input is named."""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from importer_inputs import (
    MS,
    aggregate_trades,
    binance_agg_trade_lines,
    binance_kline_lines,
    binance_trade_lines,
    kline_columns,
    table_columns,
    take,
    write_lines,
)

from storage.importers import DEAD_LETTER_FILE, ImportFormatError, import_binance_public
from storage.importers.binance_public import inspect_file
from storage.tape import TapeReader

TRADE_NAME = "BTCUSDT-trades-2024-08-08"


def _assert_columns(tape: Path, table: str, expected: dict[str, np.ndarray]) -> None:
    found = table_columns(tape, table)
    for name, values in expected.items():
        np.testing.assert_array_equal(found[name], values, err_msg=f"{table}.{name}")


def _expected_trades(trades: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"ts_event": trades["ts_event"], "ts_recv": trades["ts_event"],
            "trade_id": trades["trade_id"], "price": trades["price"], "qty": trades["qty"],
            "side": trades["side"]}


def _no_leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize("unit", ["ms", "us"])
@pytest.mark.parametrize("container", ["csv", "gz", "zip"])
def test_spot_trades_round_trip_in_every_container_and_time_unit(
    tmp_path: Path, spot_capture_tape: Path, unit: str, container: str
) -> None:
    trades = table_columns(spot_capture_tape, "trades")
    source = write_lines(tmp_path / TRADE_NAME, binance_trade_lines(trades, "spot", unit),
                         container)
    result = import_binance_public([source], tmp_path / "tape")

    assert result.rows["trades"] == len(trades["ts_event"]) == 19_904
    assert result.symbols == ["BTCUSDT"] and result.dead_letter_count == 0
    _assert_columns(result.path, "trades", _expected_trades(trades))
    metadata = TapeReader(result.path).metadata
    assert metadata["receive_time"] == "event_time"
    assert metadata["files"] == [{
        "file": source.name, "kind": "trades", "market": "spot", "header": False,
        "symbol": "BTCUSDT", "time_unit": unit, "rows": 19_904, "dead_letters": 0,
    }]
    report = (result.path / DEAD_LETTER_FILE).read_text().splitlines()
    assert report == ["file,line,stage,reason,detail,symbol,payload"]


def test_futures_trades_with_header(tmp_path: Path, usdm_capture_tape: Path) -> None:
    trades = table_columns(usdm_capture_tape, "trades")
    lines = binance_trade_lines(trades, "futures", "ms")
    assert lines[0] == "id,price,qty,quote_qty,time,is_buyer_maker"
    source = write_lines(tmp_path / TRADE_NAME, lines, "zip")
    result = import_binance_public([source], tmp_path / "tape", market="futures")
    assert result.rows["trades"] == 21_313
    _assert_columns(result.path, "trades", _expected_trades(trades))
    info = result.files[0]
    assert (info["market"], info["header"], info["time_unit"]) == ("futures", True, "ms")


@pytest.mark.parametrize(("market", "unit", "container"),
                         [("spot", "us", "gz"), ("spot", "ms", "zip"), ("futures", "ms", "csv")])
def test_agg_trades_round_trip(tmp_path: Path, spot_capture_tape: Path, usdm_capture_tape: Path,
                               market: str, unit: str, container: str) -> None:
    tape = spot_capture_tape if market == "spot" else usdm_capture_tape
    agg = aggregate_trades(table_columns(tape, "trades"))
    assert 0 < len(agg["agg_id"]) < len(table_columns(tape, "trades")["trade_id"])
    source = write_lines(tmp_path / "BTCUSDT-aggTrades-2024-08-08",
                         binance_agg_trade_lines(agg, market, unit), container)
    result = import_binance_public([source], tmp_path / "tape")
    assert result.rows["agg_trades"] == len(agg["agg_id"]) and result.dead_letter_count == 0
    _assert_columns(result.path, "agg_trades", {**agg, "ts_recv": agg["ts_event"]})
    assert (result.files[0]["kind"], result.files[0]["market"]) == ("aggTrades", market)


@pytest.mark.parametrize(("market", "unit", "container"),
                         [("spot", "ms", "zip"), ("spot", "us", "csv"), ("futures", "ms", "gz")])
def test_klines_round_trip(tmp_path: Path, klines_csv: Path, market: str, unit: str,
                           container: str) -> None:
    klines = kline_columns(klines_csv)
    source = write_lines(tmp_path / "BTCUSDT-1m-2024-12", binance_kline_lines(klines, market, unit),
                         container)
    result = import_binance_public([source], tmp_path / "tape")
    rows = len(klines["ts_open"])
    assert result.rows["venue_klines"] == rows == 41_761 and result.dead_letter_count == 0
    expected = {name: klines[name] for name in ("ts_open", "ts_close", "open", "high", "low",
                                                  "close", "volume", "quote_volume",
                                                  "taker_buy_volume", "trade_count")}
    expected.update(ts_event=klines["ts_close"], ts_recv=klines["ts_close"],
                    interval_ns=np.full(rows, 60_000 * MS), closed=np.ones(rows, dtype=bool))
    _assert_columns(result.path, "venue_klines", expected)
    info = result.files[0]
    assert (info["kind"], info["interval"], info["time_unit"]) == ("klines", "1m", unit)
    assert info["market"] == ("futures" if market == "futures" else "unknown")


def test_several_files_and_kinds_make_one_tape(tmp_path: Path, spot_capture_tape: Path,
                                               klines_csv: Path) -> None:
    trades = table_columns(spot_capture_tape, "trades")
    first, second = take(trades, slice(0, 10_000)), take(trades, slice(10_000, None))
    files = [
        write_lines(tmp_path / "BTCUSDT-trades-2024-08-08",
                    binance_trade_lines(first, "spot", "ms"), "zip"),
        write_lines(tmp_path / "BTCUSDT-trades-2024-08-09",
                    binance_trade_lines(second, "spot", "ms"), "zip"),
        write_lines(tmp_path / "BTCUSDT-aggTrades-2024-08-08",
                    binance_agg_trade_lines(aggregate_trades(trades), "spot", "ms"), "csv"),
        write_lines(tmp_path / "BTCUSDT-1m-2024-12",
                    binance_kline_lines(kline_columns(klines_csv, 100), "spot", "ms"), "csv"),
    ]
    result = import_binance_public(files, tmp_path / "tape", symbol="btc-spot")
    assert result.symbols == ["BTC-SPOT"]
    assert result.rows["trades"] == 19_904 and result.rows["venue_klines"] == 100
    assert [info["kind"] for info in result.files] == ["trades", "trades", "aggTrades", "klines"]
    _assert_columns(result.path, "trades", _expected_trades(trades))


def _spot_lines(spot_capture_tape: Path, rows: int = 300) -> list[str]:
    return binance_trade_lines(take(table_columns(spot_capture_tape, "trades"), slice(0, rows)),
                               "spot", "ms")


def test_bad_rows_become_dead_letters_with_their_lines(tmp_path: Path,
                                                       spot_capture_tape: Path) -> None:
    lines = _spot_lines(spot_capture_tape)
    faults = {  # line number (1-based) -> (new text, expected reason)
        5: (lines[4].replace(lines[4].split(",")[1], "NaN", 1), "invalid_price"),
        10: (lines[9].replace("," + lines[9].split(",")[2] + ",", ",-0.5,", 1), "invalid_qty"),
        20: (lines[19].replace(lines[19].split(",")[1], "61k", 1), "unparsable_value"),
        30: (",".join(["", *lines[29].split(",")[1:]]), "missing_value"),
        40: (lines[39] + ",extra", "wrong_field_count"),
        50: ("", "missing_value"),
        60: (lines[59].replace(lines[59].split(",")[4], lines[59].split(",")[4] + "000", 1),
             "invalid_time"),
        70: (lines[69].replace("False,True", "maybe,True").replace("True,True", "maybe,True"),
             "unparsable_value"),
    }
    for line, (text, _) in faults.items():
        lines[line - 1] = text
    source = write_lines(tmp_path / TRADE_NAME, lines, "gz")
    result = import_binance_public([source], tmp_path / "tape")

    found = {int(letter.source.rsplit(" ", 1)[1]): letter for letter in result.dead_letters}
    assert sorted(found) == sorted(faults)
    for line, (text, reason) in faults.items():
        letter = found[line]
        assert letter.reason == reason, (line, letter)
        assert letter.source == f"{source.name}:line {line}"
        assert f"line {line}" in letter.detail and letter.payload == text[:2000]
        assert letter.stage == "import_binance" and letter.symbol == "BTCUSDT"
    assert "column 'price' 'NaN' is not a finite positive number" in found[5].detail
    assert "column 'time'" in found[60].detail and "milliseconds" in found[60].detail
    assert "expected 7 fields" in found[40].detail

    good = [row for row in range(300) if row + 1 not in faults]
    trades = take(table_columns(spot_capture_tape, "trades"), np.array(good))
    _assert_columns(result.path, "trades", _expected_trades(trades))
    with open(result.path / DEAD_LETTER_FILE, newline="") as handle:
        report = list(csv.DictReader(handle))
    assert [int(row["line"]) for row in report] == sorted(faults)
    metadata = TapeReader(result.path).metadata
    assert metadata["dead_letters"] == len(faults) == result.files[0]["dead_letters"]
    assert metadata["dead_letter_reasons"] == result.dead_letter_reasons
    assert result.summary()["dead_letters"][0]["source"] == f"{source.name}:line 5"


def test_unreadable_files_are_named_with_the_problem(tmp_path: Path,
                                                     spot_capture_tape: Path) -> None:
    lines = _spot_lines(spot_capture_tape, 20)
    cases: dict[str, tuple[bytes, str]] = {
        "BTCUSDT-trades-2024-08-01.csv": (b"", "empty file"),
        "BTCUSDT-trades-2024-08-02.csv": (b"1,2,3,4,5\n", "5 fields, an unknown layout"),
        "BTCUSDT-trades-2024-08-03.csv": (b"a,b,c\n1,2,3\n", "unknown header"),
        "BTCUSDT-1m-2024-08-04.csv": (("\n".join(lines) + "\n").encode(),
                                      "the file name says klines but line 1 has 7 fields"),
        "trades.csv": (("\n".join(lines) + "\n").encode(),
                       "spot trades or futures aggTrades"),
        "BTCUSDT-trades-2024-08-05.csv": (b"PAR1\x00\x01\x02binary", "not a text CSV"),
        "BTCUSDT-trades-2024-08-06.zip": (b"PK\x03\x04broken", "not a readable zip archive"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ImportFormatError) as raised:
            import_binance_public([path], tmp_path / "tape")
        assert name in str(raised.value) and message in str(raised.value), str(raised.value)
    two = tmp_path / "BTCUSDT-trades-2024-08-07.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", "\n".join(lines))
        archive.writestr("b.csv", "\n".join(lines))
    with pytest.raises(ImportFormatError, match="holds 2 files"):
        import_binance_public([two], tmp_path / "tape")
    good = write_lines(tmp_path / TRADE_NAME, lines, "csv")
    with pytest.raises(ImportFormatError, match=r"market futures was given but .* spot trades"):
        import_binance_public([good], tmp_path / "tape", market="futures")
    with pytest.raises(ImportFormatError, match="kind klines was asked for"):
        import_binance_public([good], tmp_path / "tape", kind="klines")
    unnamed = tmp_path / "agg.csv"
    unnamed.write_text("\n".join(",".join([*line.split(",")[:6], "1"]) for line in lines[:3]))
    assert inspect_file(unnamed, kind="trades", symbol="x").symbol == "X"
    with pytest.raises(ImportFormatError, match="cannot tell the symbol"):
        import_binance_public([unnamed], tmp_path / "tape", kind="trades")
    assert not (tmp_path / "tape").exists() and _no_leftovers(tmp_path) == []


def test_a_file_failing_midway_leaves_nothing_at_the_target(tmp_path: Path,
                                                            spot_capture_tape: Path) -> None:
    trades = table_columns(spot_capture_tape, "trades")
    whole = gzip.compress(("\n".join(binance_trade_lines(trades, "spot", "ms")) + "\n").encode())
    good = write_lines(tmp_path / "BTCUSDT-trades-2024-08-07", _spot_lines(spot_capture_tape),
                       "csv")
    cut = tmp_path / f"{TRADE_NAME}.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImportFormatError, match=f"{cut.name}: cannot read gzip data after line"):
        import_binance_public([good, cut], tmp_path / "tape")
    assert not (tmp_path / "tape").exists() and _no_leftovers(tmp_path) == []
    import_binance_public([good], tmp_path / "tape")
    with pytest.raises(FileExistsError, match="already exists"):
        import_binance_public([good], tmp_path / "tape")


def test_summary_is_json(tmp_path: Path, spot_capture_tape: Path) -> None:
    source = write_lines(tmp_path / TRADE_NAME, _spot_lines(spot_capture_tape, 50), "csv")
    summary = import_binance_public([source], tmp_path / "tape").summary()
    decoded = json.loads(json.dumps(summary))
    assert decoded["rows"]["trades"] == 50 and decoded["symbols"] == ["BTCUSDT"]
    assert decoded["dead_letter_count"] == 0 and decoded["files"][0]["kind"] == "trades"
