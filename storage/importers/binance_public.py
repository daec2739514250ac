"""Importer of Binance public-data CSVs (data.binance.vision): trades, aggTrades and klines.

Layouts. Spot files have no header line; USD-M and COIN-M futures files have one (older futures
files have none):
- trades: `id,price,qty,quote_qty,time,is_buyer_maker,is_best_match` (spot, 7 fields); futures
  drop `is_best_match` (6 fields; COIN-M has `base_qty` in place of `quote_qty`).
- aggTrades: `agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,
  is_buyer_maker,is_best_match` (spot, 8 fields); futures drop `is_best_match` (7 fields).
- klines: `open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,
  taker_buy_quote_volume,ignore` (12 fields; COIN-M has `base_volume` and
  `taker_buy_base_volume` in place of the two quote columns).

A file is recognised by its header or, without one, by its field count together with its name
(`BTCUSDT-trades-2024-08-08.zip`, `BTCUSDT-aggTrades-2024-08.zip`, `BTCUSDT-1m-2024-08-08.zip`):
7 fields are spot trades or headerless futures aggTrades, so the name (or `kind`) decides. The
symbol is `symbol` or the name's. A name, `kind` or `market` that contradicts the layout, or a
layout that is none of these, raises `ImportFormatError` before anything is written.

Time: spot files from 2025-01-01 on count microseconds, older ones and futures milliseconds. The
unit is detected per file from the magnitude of its first valid time (>= 1e14 is microseconds)
and recorded per file in `tape.json` ("time_unit"); a later time outside that unit's range
(years 2001 to 2286) is a bad row. These files carry no receive time: `ts_recv` = `ts_event`, and
`tape.json` says `"receive_time": "event_time"`.

Mapping: trades -> `trades`, aggTrades -> `agg_trades`, klines -> `venue_klines`. `side` is -1
when `is_buyer_maker` is true (the seller was the aggressor), else +1. `is_best_match`,
`quote_qty` and `ignore` are not kept. A kline's `ts_close` is exclusive: the close time's
millisecond + 1 ms; its `ts_event` (when it is known) is `ts_close`, `interval_ns` = `ts_close` -
`ts_open`, and `closed` is true. COIN-M quantities and volumes are contracts ("qty_unit" in the
file's metadata) and their klines get NaN `quote_volume` (the file has base volume instead).
Bad rows (missing or unparsable values, NaN or non-positive price or size, a time out of range)
become dead letters (see `storage.importers.session`); the rest of the file is imported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.batches import AggTradeColumns, KlineColumns, TradeColumns
from storage.importers.csv_blocks import (
    CsvBlock,
    ImportFormatError,
    iter_blocks,
    null_mask,
    present_bools,
    present_floats,
    present_ints,
    read_first_line,
)
from storage.importers.session import ImportResult, ImportSession, RowChecks

STAGE = "import_binance"
NS_PER_UNIT = {"ms": 1_000_000, "us": 1_000}
UNIT_RANGES = {"ms": (10**12, 10**13), "us": (10**15, 10**16)}  # 2001-09-09 to 2286-11-20
NS_PER_MS = 1_000_000
KINDS = ("trades", "aggTrades", "klines")
MARKETS = ("spot", "futures")
_NAME = re.compile(
    r"^(?P<symbol>[A-Za-z0-9_]+)-(?P<kind>trades|aggTrades|[0-9]+(?:s|m|h|d|w|mo|M))"
    r"-[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?\.(?:csv|zip|csv\.gz|gz)$"
)
_INT, _FLOAT, _BOOL = pa.int64(), pa.float64(), pa.bool_()
_WHAT = {_INT: "an integer", _FLOAT: "a number", _BOOL: "true or false"}


@dataclass(frozen=True)
class Layout:
    """One published column layout; `market` is "spot", "futures" or "any" (klines)."""

    kind: str
    market: str
    columns: tuple[str, ...]
    coin_margined: bool = False


_AGG = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
        "is_buyer_maker")
_KLINE = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
          "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")
SPOT_TRADES = Layout("trades", "spot", ("id", "price", "qty", "quote_qty", "time",
                                        "is_buyer_maker", "is_best_match"))
USDM_TRADES = Layout("trades", "futures", SPOT_TRADES.columns[:6])
COINM_TRADES = Layout("trades", "futures", ("id", "price", "qty", "base_qty", "time",
                                            "is_buyer_maker"), coin_margined=True)
SPOT_AGG_TRADES = Layout("aggTrades", "spot", (*_AGG, "is_best_match"))
FUTURES_AGG_TRADES = Layout("aggTrades", "futures", _AGG)
KLINES = Layout("klines", "any", _KLINE)
COINM_KLINES = Layout("klines", "futures", (*_KLINE[:7], "base_volume", "count",
                                            "taker_buy_volume", "taker_buy_base_volume",
                                            "ignore"), coin_margined=True)
LAYOUTS = (SPOT_TRADES, USDM_TRADES, COINM_TRADES, SPOT_AGG_TRADES, FUTURES_AGG_TRADES, KLINES,
           COINM_KLINES)
_HEADERLESS = {6: (USDM_TRADES,), 7: (SPOT_TRADES, FUTURES_AGG_TRADES), 8: (SPOT_AGG_TRADES,),
               12: (KLINES,)}
_EXPECTED = ("6 or 7 fields (trades), 7 or 8 (aggTrades) or 12 (klines), or a futures header "
             "such as " + ",".join(USDM_TRADES.columns))


@dataclass(frozen=True)
class BinanceFile:
    """A file recognised and ready to import."""

    path: Path
    symbol: str
    layout: Layout
    header: bool
    market: str
    interval: str | None  # from the file name, klines only


def _kind_of(name: str | None) -> str | None:
    if name is None:
        return None
    if name in ("trades", "aggTrades"):
        return name
    return "klines"


def _normal_kind(kind: str | None) -> str | None:
    if kind is None:
        return None
    for known in KINDS:
        if kind.lower() == known.lower():
            return known
    raise ImportFormatError(f"unknown kind {kind!r}; expected one of {list(KINDS)}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def inspect_file(path: str | Path, *, symbol: str | None = None, market: str | None = None,
                 kind: str | None = None) -> BinanceFile:
    """Recognise a Binance public-data file from its first line and name (nothing is imported).

    Raises `ImportFormatError` naming the file and the problem: not a CSV, empty, an unknown
    layout, a layout contradicting the name, `kind` or `market`, or no symbol.
    """
    path = Path(path)
    if market is not None and market not in MARKETS:
        raise ImportFormatError(f"unknown market {market!r}; expected one of {list(MARKETS)}")
    wanted_kind = _normal_kind(kind)
    match = _NAME.match(path.name)
    named_kind = _kind_of(match.group("kind")) if match else None
    interval = match.group("kind") if match and named_kind == "klines" else None
    if wanted_kind and named_kind and wanted_kind != named_kind:
        raise ImportFormatError(
            f"{path.name}: the file name says {named_kind} but kind {wanted_kind} was asked for"
        )
    hint = wanted_kind or named_kind
    hint_source = "kind" if wanted_kind else "file name"
    first = read_first_line(path)
    fields = [field.strip().strip('"') for field in first.split(",")]
    header = not _is_number(fields[0])
    if header:
        names = tuple(field.lower() for field in fields)
        found = [layout for layout in LAYOUTS if layout.columns == names]
        if not found:
            raise ImportFormatError(
                f"{path.name}: line 1: unknown header {first!r}; expected {_EXPECTED}"
            )
        layout = found[0]
        if hint and hint != layout.kind:
            raise ImportFormatError(
                f"{path.name}: the {hint_source} says {hint} but the header is the "
                f"{layout.kind} layout ({first})"
            )
    else:
        candidates = _HEADERLESS.get(len(fields), ())
        if not candidates:
            raise ImportFormatError(
                f"{path.name}: line 1 has {len(fields)} fields, an unknown layout; expected "
                f"{_EXPECTED}"
            )
        layouts = [layout for layout in candidates if hint in (None, layout.kind)]
        if market is not None and len(layouts) > 1:
            layouts = [layout for layout in layouts if layout.market in (market, "any")]
        if not layouts:
            known = " or ".join(f"{layout.market} {layout.kind}" for layout in candidates)
            raise ImportFormatError(
                f"{path.name}: the {hint_source} says {hint} but line 1 has {len(fields)} "
                f"fields, the layout of {known}"
            )
        if len(layouts) > 1:
            raise ImportFormatError(
                f"{path.name}: {len(fields)} fields without a header are spot trades or futures "
                "aggTrades; name the file like BTCUSDT-trades-2024-08-08.csv or give the kind"
            )
        layout = layouts[0]
    found_market = layout.market
    if found_market == "any":
        found_market = "futures" if header else (market or "unknown")
    if market is not None and found_market != market:
        raise ImportFormatError(
            f"{path.name}: market {market} was given but the file has the {found_market} "
            f"{layout.kind} layout ({len(fields)} fields{', with header' if header else ''})"
        )
    chosen = symbol or (match.group("symbol") if match else None)
    if not chosen:
        raise ImportFormatError(
            f"{path.name}: cannot tell the symbol; name the file like "
            "BTCUSDT-trades-2024-08-08.zip or give the symbol"
        )
    return BinanceFile(path, chosen.upper(), layout, header, found_market, interval)


class _TimeUnit:
    """The time unit of one file, detected from its first valid time."""

    def __init__(self) -> None:
        self.unit: str | None = None

    def to_ns(self, checks: RowChecks, table: pa.Table, column: str) -> np.ndarray:
        """Times of `column` in ns; flags times outside the file's unit range."""
        values = present_ints(table, column)
        present = ~null_mask(table, column)
        ranges = {unit: (values >= low) & (values < high) & present
                  for unit, (low, high) in UNIT_RANGES.items()}
        if self.unit is None:
            first = {unit: int(np.argmax(mask)) for unit, mask in ranges.items() if mask.any()}
            if first:
                self.unit = min(first, key=lambda unit: first[unit])
        if self.unit is None:
            checks.flag(present, "invalid_time", column,
                        "is not a time in milliseconds or microseconds (years 2001-2286)")
            return values
        checks.flag(present & ~ranges[self.unit], "invalid_time", column,
                    f"is not a time in {'milliseconds' if self.unit == 'ms' else 'microseconds'}"
                    " like the file's first rows (years 2001-2286)")
        return values * NS_PER_UNIT[self.unit]


def _types(layout: Layout) -> dict[str, pa.DataType]:
    ints = {"id", "time", "agg_trade_id", "first_trade_id", "last_trade_id", "transact_time",
            "open_time", "close_time", "count"}
    bools = {"is_buyer_maker"}
    if layout.kind == "trades":
        kept: tuple[str, ...] = ("id", "price", "qty", "time", "is_buyer_maker")
    elif layout.kind == "aggTrades":
        kept = _AGG
    else:
        kept = ("open_time", "open", "high", "low", "close", "volume", "close_time",
                layout.columns[7], "count", "taker_buy_volume")
    return {name: _INT if name in ints else _BOOL if name in bools else _FLOAT for name in kept}


def _checked(checks: RowChecks, table: pa.Table, column: str, reason: str,
             allow_zero: bool = False) -> np.ndarray:
    """A float column; flags values that are not finite and positive (or >= 0)."""
    values = present_floats(table, column)
    present = ~null_mask(table, column)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(values) & ((values >= 0) if allow_zero else (values > 0))
    what = "is not a finite number >= 0" if allow_zero else "is not a finite positive number"
    checks.flag(present & ~good, reason, column, what)
    return values


def _non_negative_ids(checks: RowChecks, table: pa.Table, columns: Sequence[str]
                      ) -> dict[str, np.ndarray]:
    ids = {}
    for column in columns:
        ids[column] = present_ints(table, column)
        checks.flag(ids[column] < 0, "invalid_id", column, "is negative")
    return ids


def _side(table: pa.Table) -> np.ndarray:
    return np.where(present_bools(table, "is_buyer_maker"), -1, 1).astype(np.int8)


def _trades(block: CsvBlock, checks: RowChecks, clock: _TimeUnit) -> dict[str, Any]:
    table = block.table
    ts = clock.to_ns(checks, table, "time")
    ids = _non_negative_ids(checks, table, ["id"])
    price = _checked(checks, table, "price", "invalid_price")
    qty = _checked(checks, table, "qty", "invalid_qty")
    good = ~checks.bad
    return {"trades": TradeColumns(ts_event=ts[good], ts_recv=ts[good], trade_id=ids["id"][good],
                                   price=price[good], qty=qty[good], side=_side(table)[good])}


def _agg_trades(block: CsvBlock, checks: RowChecks, clock: _TimeUnit) -> dict[str, Any]:
    table = block.table
    ts = clock.to_ns(checks, table, "transact_time")
    ids = _non_negative_ids(checks, table, ["agg_trade_id", "first_trade_id", "last_trade_id"])
    checks.flag(ids["last_trade_id"] < ids["first_trade_id"], "invalid_id", "last_trade_id",
                "is below first_trade_id")
    price = _checked(checks, table, "price", "invalid_price")
    qty = _checked(checks, table, "quantity", "invalid_qty")
    good = ~checks.bad
    return {"agg_trades": AggTradeColumns(
        ts_event=ts[good], ts_recv=ts[good], agg_id=ids["agg_trade_id"][good],
        first_trade_id=ids["first_trade_id"][good], last_trade_id=ids["last_trade_id"][good],
        price=price[good], qty=qty[good], side=_side(table)[good])}


def _klines(block: CsvBlock, checks: RowChecks, clock: _TimeUnit, layout: Layout
            ) -> dict[str, Any]:
    table = block.table
    ts_open = clock.to_ns(checks, table, "open_time")
    close_ns = clock.to_ns(checks, table, "close_time")
    ts_close = close_ns // NS_PER_MS * NS_PER_MS + NS_PER_MS
    checks.flag(ts_close <= ts_open, "invalid_time", "close_time", "is not after open_time")
    prices = {name: _checked(checks, table, name, "invalid_price")
              for name in ("open", "high", "low", "close")}
    checks.flag(prices["high"] < prices["low"], "invalid_price", "high", "is below low")
    volume = _checked(checks, table, "volume", "invalid_volume", allow_zero=True)
    extra = _checked(checks, table, layout.columns[7], "invalid_volume", allow_zero=True)
    taker = _checked(checks, table, "taker_buy_volume", "invalid_volume", allow_zero=True)
    count = present_ints(table, "count")
    checks.flag(count < 0, "invalid_count", "count", "is negative")
    quote_volume = np.full(len(extra), np.nan) if layout.coin_margined else extra
    good = ~checks.bad
    rows = int(good.sum())
    return {"klines": KlineColumns(
        ts_event=ts_close[good], ts_recv=ts_close[good], ts_open=ts_open[good],
        ts_close=ts_close[good], interval_ns=(ts_close - ts_open)[good],
        open=prices["open"][good], high=prices["high"][good], low=prices["low"][good],
        close=prices["close"][good], volume=volume[good], quote_volume=quote_volume[good],
        taker_buy_volume=taker[good], trade_count=count[good], closed=np.ones(rows, bool))}


def _import_file(session: ImportSession, file: BinanceFile) -> None:
    layout = file.layout
    types = _types(layout)
    kinds = {name: _WHAT[kind] for name, kind in types.items()}
    clock = _TimeUnit()
    dead_before, rows = session.log.count, 0
    for block in iter_blocks(file.path, layout.columns, types, skip_header=file.header):
        checks = RowChecks(block, layout.columns, STAGE)
        checks.require(list(types), kinds)
        if layout.kind == "trades":
            columns = _trades(block, checks, clock)
        elif layout.kind == "aggTrades":
            columns = _agg_trades(block, checks, clock)
        else:
            columns = _klines(block, checks, clock, layout)
        checks.write(session.log, file.path.name, file.symbol)
        session.write(file.symbol, **columns)
        rows += int((~checks.bad).sum())
    info: dict[str, Any] = {
        "file": file.path.name, "kind": layout.kind, "market": file.market,
        "header": file.header, "symbol": file.symbol, "time_unit": clock.unit, "rows": rows,
        "dead_letters": session.log.count - dead_before,
    }
    if layout.coin_margined:
        info["qty_unit"] = "contracts"
    if file.interval:
        info["interval"] = file.interval
    session.files.append(info)


def import_binance_public(paths: Sequence[str | Path], out: str | Path, *,
                          symbol: str | None = None, market: str | None = None,
                          kind: str | None = None, overwrite: bool = False) -> ImportResult:
    """Import Binance public-data files (in the order given) into a new tape at `out`.

    Every file is recognised before anything is written (see `inspect_file`); bad rows become
    dead letters; a failure leaves nothing at `out`.
    """
    if not paths:
        raise ImportFormatError("no files to import")
    files = [inspect_file(path, symbol=symbol, market=market, kind=kind) for path in paths]
    with ImportSession(Path(out), importer="binance_public", files=[f.path for f in files],
                       overwrite=overwrite) as session:
        session.metadata["receive_time"] = "event_time"
        for file in files:
            _import_file(session, file)
    return session.finished()
