"""1-minute kline CSV import: real values, and errors that name the file, line and column."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from storage.klines import KlineFormatError, bars_table, read_klines_csv
from storage.schemas import BARS

REPO = Path(__file__).resolve().parents[2]
KLINES = REPO / "data" / "binance-1m" / "BTCUSDT_1m.csv"
HEADER = "open,high,low,close,volume,quote_volume,trades,close_datetime"
GOOD_ROWS = [
    "96466.11,96495.52,96440.0,96440.0,6.6158,638250.2950308,3577,"
    "2024-12-01 00:00:59.999000+01:00",
    "96440.01,96454.62,96422.0,96454.62,7.0222,677202.9744168,2318,"
    "2024-12-01 00:01:59.999000+01:00",
    "96454.62,96536.0,96454.61,96528.0,8.55144,825302.2455001,5554,"
    "2024-12-01 00:02:59.999000+01:00",
]
MINUTE = 60_000_000_000


@pytest.fixture(scope="module")
def klines():
    return read_klines_csv(KLINES)


def test_real_file_values(klines) -> None:
    assert klines.num_rows == 41_761
    first = klines.slice(0, 1).to_pylist()[0]
    assert first == {
        "ts_open": 1733007600000000000,  # 2024-11-30 23:00:00 UTC
        "ts_close": 1733007660000000000,
        "open": 96466.11, "high": 96495.52, "low": 96440.0, "close": 96440.0,
        "volume": 6.6158, "quote_volume": 638250.2950308, "trade_count": 3577,
    }
    last = klines.slice(klines.num_rows - 1, 1).to_pylist()[0]
    assert last["close"] == 93226.88 and last["trade_count"] == 8471
    assert last["ts_close"] == 1735513260000000000  # 2024-12-29 23:01:00 UTC
    ts_open = klines.column("ts_open").to_numpy()
    assert np.all(np.diff(ts_open) == MINUTE)  # no gaps
    assert klines.column("trade_count").type == "int64"


def test_every_value_matches_the_csv_text(klines) -> None:
    with open(KLINES, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in ("open", "high", "low", "close", "volume", "quote_volume"):
        np.testing.assert_array_equal(klines.column(name).to_numpy(),
                                      [float(row[name]) for row in rows])
    np.testing.assert_array_equal(klines.column("trade_count").to_numpy(),
                                  [int(row["trades"]) for row in rows])
    expected_close = [
        int(datetime.fromisoformat(row["close_datetime"]).timestamp() * 1000) * 1_000_000
        + 1_000_000 for row in rows
    ]
    np.testing.assert_array_equal(klines.column("ts_close").to_numpy(), expected_close)


def _csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "k.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _replace(row: int, column: int, value: str) -> list[str]:
    rows = list(GOOD_ROWS)
    fields = rows[row].split(",")
    fields[column] = value
    rows[row] = ",".join(fields)
    return rows


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (_replace(1, 1, "abc"), "line 3, column 'high': 'abc' is not a number"),
        (_replace(2, 6, "12.5"), "line 4, column 'trades': '12.5' is not an integer"),
        (_replace(0, 4, ""), "line 2, column 'volume': missing value"),
        (_replace(1, 2, "96460.0"), "line 3, column 'high': 96454.62 is below low"),
        (_replace(2, 4, "-1"), "line 4, column 'volume': -1.0 is not a volume >= 0"),
        (_replace(1, 6, "0"), "line 3, column 'trades': 0 is below 1"),
        (_replace(0, 0, "nan"), "line 2, column 'open': nan is not a positive number"),
        (_replace(0, 0, "96500"), "line 2, column 'open': 96500.0 is outside [low, high]"),
        (_replace(1, 7, "2024-12-01 00:00:59.999000+01:00"),
         "line 3, column 'close_datetime': 2024-11-30T23:00:59.999000000Z is not after"),
        ([GOOD_ROWS[1], GOOD_ROWS[0]],
         "line 3, column 'close_datetime': 2024-11-30T23:00:59.999000000Z is not after"),
        (_replace(1, 7, "2024-12-01 00:01:59.999000"),
         "line 3, column 'close_datetime': '2024-12-01 00:01:59.999000' has no UTC offset"),
        (_replace(1, 7, "2024-12-01 00:01:30.000000+01:00"),
         "line 3, column 'close_datetime': 2024-11-30T23:01:30.000000000Z is not the last"),
        ([GOOD_ROWS[0], GOOD_ROWS[1].rsplit(",", 1)[0]], "line 3: expected 8 fields, found 7"),
    ],
)
def test_bad_values_name_file_line_and_column(tmp_path: Path, rows, expected) -> None:
    with pytest.raises(KlineFormatError) as error:
        read_klines_csv(_csv(tmp_path, rows))
    message = str(error.value)
    assert message.startswith("k.csv: "), message
    assert expected in message, message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    rows = [GOOD_ROWS[0], "", _replace(1, 6, "0")[1]]
    with pytest.raises(KlineFormatError, match="line 4, column 'trades'"):
        read_klines_csv(_csv(tmp_path, rows))


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    header = HEADER.replace("quote_volume,", "")
    rows = [",".join(row.split(",")[:5] + row.split(",")[6:]) for row in GOOD_ROWS]
    with pytest.raises(KlineFormatError, match=r"k\.csv: line 1: missing column\(s\) "
                                               r"\['quote_volume'\]"):
        read_klines_csv(_csv(tmp_path, rows, header))
    with pytest.raises(KlineFormatError, match="no such file"):
        read_klines_csv(tmp_path / "absent.csv")


def test_bars_table_schema_and_values(klines) -> None:
    bars = bars_table(klines.slice(0, 100), "BTCUSDT")
    assert bars.schema == BARS and bars.num_rows == 100
    row = bars.slice(0, 1).to_pylist()[0]
    assert row["symbol"] == "BTCUSDT" and row["timeframe"] == "1m"
    assert row["vwap"] == pytest.approx(638250.2950308 / 6.6158)
    assert row["low"] <= row["vwap"] <= row["high"]
    for name in ("buy_volume", "sell_volume", "order_flow_imbalance", "spread",
                 "top_imbalance", "depth_bid_5pct", "depth_ask_5pct"):
        assert math.isnan(row[name]), name


def test_taker_buy_column_gives_buy_sell_split(tmp_path: Path) -> None:
    rows = [row + ",2.0" for row in GOOD_ROWS]
    klines = read_klines_csv(_csv(tmp_path, rows, HEADER + ",taker_buy_base_asset_volume"))
    bars = bars_table(klines, "BTCUSDT").to_pylist()
    assert bars[0]["buy_volume"] == 2.0
    assert bars[0]["sell_volume"] == pytest.approx(6.6158 - 2.0)
    assert bars[0]["order_flow_imbalance"] == pytest.approx((2.0 - 4.6158) / 6.6158)
