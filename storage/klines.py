"""Importer of 1-minute kline CSVs (Binance public data, as exported with a header).

Expected header (extra columns are ignored, order is free):
`open,high,low,close,volume,quote_volume,trades,close_datetime`, with `close_datetime` an ISO
time with a UTC offset such as `2024-12-01 00:00:59.999000+01:00` (the kline's last millisecond).
An optional taker-buy base volume column (`taker_buy_volume`, `taker_buy_base_volume` or
`taker_buy_base_asset_volume`) is kept as `taker_buy_volume` and gives the bars their buy/sell
split.

The fast path parses with `pyarrow.csv` and checks values vectorised; only when something is
wrong does a row-by-row scan run, to name the file, the line and the column in the error.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from engine.timeframes import NS_PER_MINUTE
from storage.schemas import BARS
from storage.schemas import KLINES as KLINE_SCHEMA

NS_PER_MS = 1_000_000
PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED_COLUMNS = (*PRICE_COLUMNS, "volume", "quote_volume", "trades", "close_datetime")
TAKER_BUY_COLUMNS = ("taker_buy_volume", "taker_buy_base_volume", "taker_buy_base_asset_volume")


class KlineFormatError(ValueError):
    """A kline CSV cannot be imported; the message names the file, line and column."""


def _header(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        first = handle.readline()
    if not first.strip():
        raise KlineFormatError(f"{path.name}: line 1: empty file, expected a header row")
    return [name.strip() for name in next(csv.reader([first]))]


def _scan_for_error(path: Path, header: list[str], columns: list[str]) -> str | None:
    """Row-by-row scan (error path only): 'line N, column C: what' of the first bad value."""
    positions = {name: header.index(name) for name in columns}
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for row in reader:
            if not row or not any(field.strip() for field in row):
                continue
            where = f"line {reader.line_num}"
            if len(row) != len(header):
                return f"{where}: expected {len(header)} fields, found {len(row)}"
            for name, position in positions.items():
                text = row[position].strip()
                if not text:
                    return f"{where}, column {name!r}: missing value"
                if name == "close_datetime":
                    try:
                        moment = datetime.fromisoformat(text)
                    except ValueError:
                        return f"{where}, column {name!r}: {text!r} is not an ISO date-time"
                    if moment.tzinfo is None:
                        return f"{where}, column {name!r}: {text!r} has no UTC offset"
                elif name == "trades":
                    if not text.lstrip("+-").isdigit():
                        return f"{where}, column {name!r}: {text!r} is not an integer"
                else:
                    try:
                        float(text)
                    except ValueError:
                        return f"{where}, column {name!r}: {text!r} is not a number"
    return None


def _line_of_row(path: Path, row_index: int) -> int:
    """Physical line number of the `row_index`-th data row (blank lines skipped, as pyarrow)."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        seen = -1
        for row in reader:
            if row and any(field.strip() for field in row):
                seen += 1
                if seen == row_index:
                    return reader.line_num
    return row_index + 2  # pragma: no cover - the row exists since pyarrow read it


def read_klines_csv(path: str | Path) -> pa.Table:
    """Read and check a 1-minute kline CSV into a table of `KLINE_SCHEMA` columns.

    `ts_close` is the window end, exclusive: close time + 1 ms, in ns UTC; `ts_open` is one
    minute earlier. Raises `KlineFormatError` naming the file, line and column for a missing
    column, a value that is not a number, a missing value, a non-positive or non-finite price,
    high below low or open/close outside [low, high], a negative volume, a trade count below 1,
    a close time that is not the last millisecond of a minute, and unsorted or duplicate times.
    """
    path = Path(path)
    if not path.is_file():
        raise KlineFormatError(f"{path}: no such file")
    header = _header(path)
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise KlineFormatError(
            f"{path.name}: line 1: missing column(s) {missing}; header is {header}"
        )
    taker = next((name for name in TAKER_BUY_COLUMNS if name in header), None)
    wanted = [*REQUIRED_COLUMNS, *([taker] if taker else [])]
    types = {name: pa.float64() for name in wanted}
    types["trades"] = pa.int64()
    types["close_datetime"] = pa.timestamp("ns", tz="UTC")
    try:
        raw = pa_csv.read_csv(
            path,
            convert_options=pa_csv.ConvertOptions(
                column_types=types, include_columns=wanted, null_values=[""]
            ),
        )
    except pa.ArrowInvalid as error:
        problem = _scan_for_error(path, header, wanted)
        raise KlineFormatError(f"{path.name}: {problem or error}") from None
    for name in wanted:
        if raw.column(name).null_count:
            row = int(np.flatnonzero(raw.column(name).is_null().to_numpy(zero_copy_only=False))[0])
            line = _line_of_row(path, row)
            raise KlineFormatError(f"{path.name}: line {line}, column {name!r}: missing value")

    values = {name: raw.column(name).to_numpy() for name in wanted if name != "close_datetime"}
    close_ns = raw.column("close_datetime").cast(pa.int64()).to_numpy()
    ts_close = close_ns + NS_PER_MS
    _check_values(path, values, ts_close)

    columns = {
        "ts_open": ts_close - NS_PER_MINUTE,
        "ts_close": ts_close,
        **{name: values[name] for name in (*PRICE_COLUMNS, "volume", "quote_volume")},
        "trade_count": values["trades"].astype(np.int64),
    }
    schema = KLINE_SCHEMA
    if taker:
        columns["taker_buy_volume"] = values[taker]
        schema = schema.append(pa.field("taker_buy_volume", pa.float64()))
    return pa.Table.from_pydict(columns, schema=schema)


def _check_values(path: Path, values: dict[str, np.ndarray], ts_close: np.ndarray) -> None:
    """Vectorised semantic checks; raises naming the first bad line and column."""
    low, high = values["low"], values["high"]
    checks: list[tuple[str, np.ndarray, str]] = []
    for name in PRICE_COLUMNS:
        column = values[name]
        checks.append((name, ~(np.isfinite(column) & (column > 0)), "is not a positive number"))
    checks.append(("high", high < low, "is below low"))
    for name in ("open", "close"):
        outside = (values[name] < low) | (values[name] > high)
        checks.append((name, outside, "is outside [low, high]"))
    volumes = ["volume", "quote_volume", *(["taker_buy_volume"] if "taker_buy_volume" in values
                                            else [])]
    for name in volumes:
        column = values[name]
        checks.append((name, ~(np.isfinite(column) & (column >= 0)), "is not a volume >= 0"))
    checks.append(("trades", values["trades"] < 1, "is below 1"))
    checks.append(
        ("close_datetime", (ts_close % NS_PER_MINUTE) != 0,
         "is not the last millisecond of a minute")
    )
    order = np.zeros(len(ts_close), dtype=bool)
    order[1:] = ts_close[1:] <= ts_close[:-1]
    checks.append(("close_datetime", order, "is not after the previous row (unsorted/duplicate)"))

    first_bad: tuple[int, str, str] | None = None
    for name, bad, what in checks:
        rows = np.flatnonzero(bad)
        if len(rows) and (first_bad is None or rows[0] < first_bad[0]):
            first_bad = (int(rows[0]), name, what)
    if first_bad is None:
        return
    row, name, what = first_bad
    if name == "close_datetime":
        shown = str(np.datetime64(int(ts_close[row]) - NS_PER_MS, "ns")) + "Z"
    else:
        shown = repr(values[name][row].item())
    raise KlineFormatError(
        f"{path.name}: line {_line_of_row(path, row)}, column {name!r}: {shown} {what}"
    )


def bars_table(klines: pa.Table, symbol: str) -> pa.Table:
    """Klines as rows of the `BARS` schema, timeframe "1m".

    Klines carry no book: spread, imbalance and depth columns are NaN. Without a taker-buy
    column, buy/sell volume and order-flow imbalance are NaN too; with one, sell = volume - buy
    and order_flow_imbalance = (buy - sell) / volume. vwap = quote_volume / volume (NaN when the
    volume is 0).
    """
    rows = len(klines)
    volume = klines.column("volume").to_numpy()
    nan = np.full(rows, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(volume > 0, klines.column("quote_volume").to_numpy() / volume, math.nan)
        if "taker_buy_volume" in klines.column_names:
            buy = klines.column("taker_buy_volume").to_numpy()
            sell = volume - buy
            imbalance = np.where(volume > 0, (buy - sell) / volume, math.nan)
        else:
            buy, sell, imbalance = nan, nan, nan
    columns = {
        "symbol": pa.array(np.full(rows, symbol, dtype=object), pa.string()),
        "timeframe": pa.array(np.full(rows, "1m", dtype=object), pa.string()),
        "ts_open": klines.column("ts_open"),
        "ts_close": klines.column("ts_close"),
        **{name: klines.column(name) for name in PRICE_COLUMNS},
        "volume": klines.column("volume"),
        "buy_volume": buy,
        "sell_volume": sell,
        "trade_count": klines.column("trade_count"),
        "vwap": vwap,
        "order_flow_imbalance": imbalance,
        "spread": nan,
        "top_imbalance": nan,
        "depth_bid_5pct": nan,
        "depth_ask_5pct": nan,
    }
    return pa.Table.from_pydict(columns, schema=BARS)
