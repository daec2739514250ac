"""Importer of Tardis (tardis.dev) CSV datasets: trades, incremental_book_L2, book_snapshot_N.

Format: one header line, then rows sorted by `local_timestamp`, usually gzip-compressed. Every
type starts with `exchange,symbol,timestamp,local_timestamp`; times are microseconds since the
epoch, `timestamp` the exchange's time (-> ts_event) and `local_timestamp` the receive time
(-> ts_recv). One file may hold many symbols (a grouped file): each becomes a tape symbol, upper
case as given. The type is recognised from the header:
- trades: `...,id,side,price,amount`, side the taker: buy -> +1, sell -> -1, unknown -> 0
  (counted per file as "unknown_side"). A symbol whose first id is an integer keeps the venue's
  ids (a later id that is not an integer is a bad row); a symbol whose first id is empty or not an
  integer gets ids numbered 1, 2, ... in file order, listed in `tape.json` under
  "synthetic_trade_ids".
- incremental_book_L2: `...,is_snapshot,side,price,amount` (side bid/ask, amount 0 removes the
  level) -> `book_snapshots` and `book_deltas`.
- book_snapshot_N: `...,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,...` up to
  level N-1 (empty where the book is thinner) -> `book_snapshots`, `book_deltas` and
  `best_bid_ask`.
Book rows get synthetic update ids (`storage.importers.tardis_book`); `tape.json` says
`"synthetic_update_ids": true`. Other Tardis types raise `ImportFormatError`, as does a symbol
whose book comes from both incremental_book_L2 and book_snapshot_N, or a symbol seen on two
exchanges.

Bad rows (missing or unparsable values, NaN or negative price or amount, unknown side, a time
that is not in microseconds; for book_snapshot_N a row with any bad level, a price repeated on a
side, or a crossed top of book) become dead letters and the rest of the file is imported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.batches import TradeColumns
from storage.importers.csv_blocks import (
    CsvBlock,
    ImportFormatError,
    convert_text,
    iter_blocks,
    null_mask,
    present_bools,
    present_floats,
    present_ints,
    read_first_line,
)
from storage.importers.session import ImportResult, ImportSession, RowChecks
from storage.importers.tardis_book import IncrementalBookIds, TopLevelsBook

STAGE = "import_tardis"
NS_PER_US = 1_000
US_RANGE = (10**15, 10**16)  # 2001-09-09 to 2286-11-20
COMMON = ("exchange", "symbol", "timestamp", "local_timestamp")
TRADES = (*COMMON, "id", "side", "price", "amount")
INCREMENTAL = (*COMMON, "is_snapshot", "side", "price", "amount")
_LEVEL = re.compile(r"^(asks|bids)\[([0-9]+)\]\.(price|amount)$")
_STR, _INT, _FLOAT, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
_WHAT = {_STR: "text", _INT: "an integer", _FLOAT: "a number", _BOOL: "true or false"}
_EXPECTED = (f"trades ({','.join(TRADES)}), incremental_book_L2 ({','.join(INCREMENTAL)}) or "
             "book_snapshot_N (exchange,symbol,timestamp,local_timestamp,asks[0].price,"
             "asks[0].amount,bids[0].price,bids[0].amount,...)")


@dataclass(frozen=True)
class TardisFile:
    """A file recognised and ready to import; `levels` is N for book_snapshot_N."""

    path: Path
    data_type: str
    columns: tuple[str, ...]
    levels: int = 0


def inspect_file(path: str | Path) -> TardisFile:
    """Recognise a Tardis CSV from its header (nothing is imported); raises `ImportFormatError`
    naming the file and what was expected for an empty file, no header or an unsupported type."""
    path = Path(path)
    first = read_first_line(path)
    columns = tuple(name.strip().strip('"') for name in first.split(","))
    if columns == TRADES:
        return TardisFile(path, "trades", columns)
    if columns == INCREMENTAL:
        return TardisFile(path, "incremental_book_L2", columns)
    levels = [_LEVEL.match(name) for name in columns[len(COMMON):]]
    if columns[: len(COMMON)] == COMMON and levels and all(levels):
        depth = len(columns[len(COMMON):]) // 4
        expected = {f"{side}[{level}].{field}" for side in ("asks", "bids")
                    for level in range(depth) for field in ("price", "amount")}
        if set(columns[len(COMMON):]) == expected and len(expected) == len(columns) - 4:
            return TardisFile(path, f"book_snapshot_{depth}", columns, depth)
    raise ImportFormatError(
        f"{path.name}: line 1: header {first[:200]!r} is not a supported Tardis CSV; expected "
        f"{_EXPECTED}"
    )


class _SymbolState:
    """What is carried per symbol across blocks and files."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.trade_ids: str | None = None  # "venue" or "synthetic", set by the first trade
        self.trade_count = 0
        self.book_kind: str | None = None
        self.incremental = IncrementalBookIds()
        self.top_levels = TopLevelsBook()


def _types(file: TardisFile) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {"exchange": _STR, "symbol": _STR, "timestamp": _INT,
                                     "local_timestamp": _INT}
    if file.data_type == "trades":
        types.update(id=_STR, side=_STR, price=_FLOAT, amount=_FLOAT)
    elif file.data_type == "incremental_book_L2":
        types.update(is_snapshot=_BOOL, side=_STR, price=_FLOAT, amount=_FLOAT)
    else:
        types.update({name: _FLOAT for name in file.columns[len(COMMON):]})
    return types


def _checked(block: CsvBlock, checks: RowChecks, column: str, reason: str,
             allow_zero: bool) -> np.ndarray:
    """A float column; flags present values that are not finite and positive (or >= 0)."""
    values = present_floats(block.table, column)
    present = ~null_mask(block.table, column)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(values) & ((values >= 0) if allow_zero else (values > 0))
    what = "is not a finite number >= 0" if allow_zero else "is not a finite positive number"
    checks.flag(present & ~good, reason, column, what)
    return values


def _side(block: CsvBlock, checks: RowChecks, names: list[str], values: list[int]
          ) -> np.ndarray:
    """The side column mapped through names -> values; flags unknown sides."""
    position = pc.index_in(block.table.column("side"), value_set=pa.array(names))
    index = position.fill_null(len(names)).to_numpy().astype(np.int64)
    present = ~null_mask(block.table, "side")
    checks.flag(present & (index == len(names)), "invalid_side", "side",
                f"is not one of {names}")
    return np.array([*values, 0], dtype=np.int8)[index]


def _times(block: CsvBlock, checks: RowChecks) -> tuple[np.ndarray, np.ndarray]:
    """ts_event and ts_recv in ns; flags times that are not microseconds of 2001-2286."""
    out = []
    for column in ("timestamp", "local_timestamp"):
        values = present_ints(block.table, column)
        present = ~null_mask(block.table, column)
        bad = present & ((values < US_RANGE[0]) | (values >= US_RANGE[1]))
        checks.flag(bad, "invalid_time", column, "is not a time in microseconds (2001-2286)")
        out.append(values * NS_PER_US)
    return out[0], out[1]


def _levels(block: CsvBlock, checks: RowChecks, side: str, depth: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, depth) prices and amounts of one side, NaN where a level is absent; flags half
    levels, bad numbers and prices repeated on the side."""
    table = block.table
    prices, amounts = [], []
    for level in range(depth):
        price_column, amount_column = f"{side}[{level}].price", f"{side}[{level}].amount"
        for column in (price_column, amount_column):
            checks.flag(block.unparsable[column], "unparsable_value", column, "is not a number")
        price_missing = null_mask(table, price_column) & ~block.unparsable[price_column]
        amount_missing = null_mask(table, amount_column) & ~block.unparsable[amount_column]
        checks.flag(amount_missing & ~price_missing, "missing_value", amount_column,
                    "is missing while the level's price is present")
        checks.flag(price_missing & ~amount_missing, "missing_value", price_column,
                    "is missing while the level's amount is present")
        price = _checked(block, checks, price_column, "invalid_price", allow_zero=False)
        amount = _checked(block, checks, amount_column, "invalid_qty", allow_zero=False)
        absent = np.isnan(price) | np.isnan(amount)
        prices.append(np.where(absent, np.nan, price))
        amounts.append(np.where(absent, np.nan, amount))
    price_levels, amount_levels = np.column_stack(prices), np.column_stack(amounts)
    ordered = np.sort(price_levels, axis=1)
    checks.flag((ordered[:, 1:] == ordered[:, :-1]).any(axis=1), "duplicate_level",
                f"{side}[0].price", f"starts a {side} side that lists a price twice")
    return price_levels, amount_levels


class _Importer:
    """Imports Tardis files one after the other into one session, state kept per symbol."""

    def __init__(self, session: ImportSession) -> None:
        self.session = session
        self.symbols: dict[str, _SymbolState] = {}

    def run(self, file: TardisFile) -> None:
        types = _types(file)
        # Level fields may be empty (a thin book), trade ids too (venues without ids).
        required = list(COMMON) if file.levels else [name for name in types if name != "id"]
        info: dict[str, Any] = {"file": file.path.name, "data_type": file.data_type,
                                "rows": 0, "symbols": []}
        dead_before = self.session.log.count
        for block in iter_blocks(file.path, file.columns, types, skip_header=True):
            checks = RowChecks(block, file.columns, STAGE)
            checks.require(required, {name: _WHAT[types[name]] for name in required})
            times = _times(block, checks)
            if file.data_type == "trades":
                self._trades(block, checks, times, info)
            elif file.data_type == "incremental_book_L2":
                self._incremental(block, checks, times, info)
            else:
                self._top_levels(block, checks, times, info, file.levels)
            info["rows"] += int((~checks.bad).sum())
        info["dead_letters"] = self.session.log.count - dead_before
        self.session.files.append(info)

    def _groups(self, block: CsvBlock, checks: RowChecks, book_kind: str | None,
                info: dict[str, Any]) -> list[tuple[str, _SymbolState, np.ndarray]]:
        """(symbol, state, rows) of the rows good so far; rows in file order per symbol."""
        encoded = block.table.column("symbol").combine_chunks().dictionary_encode()
        names = [str(name).upper() for name in encoded.dictionary.to_pylist()]
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        exchanges = block.table.column("exchange").combine_chunks()
        good = np.flatnonzero(~checks.bad & (codes >= 0))
        order = good[np.argsort(codes[good], kind="stable")]
        groups: list[tuple[str, _SymbolState, np.ndarray]] = []
        if len(order) == 0:
            return groups
        for rows in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
            symbol = names[int(codes[rows[0]])]
            found = [str(name) for name in pc.unique(exchanges.take(pa.array(rows))).to_pylist()]
            state = self.symbols.setdefault(symbol, _SymbolState(found[0]))
            if set(found) - {state.exchange}:
                raise ImportFormatError(
                    f"{info['file']}: line {block.line_of(int(rows[0]))}: symbol {symbol} comes "
                    f"from exchanges {sorted({state.exchange, *found})}; a tape symbol must "
                    "come from one exchange: import them into separate tapes"
                )
            if book_kind is not None:
                if state.book_kind not in (None, book_kind):
                    raise ImportFormatError(
                        f"{info['file']}: symbol {symbol} has book rows from both "
                        f"{state.book_kind} and {book_kind}; a tape symbol's book must come "
                        "from one of them: import them into separate tapes"
                    )
                state.book_kind = book_kind
            if symbol not in info["symbols"]:
                info["symbols"].append(symbol)
            groups.append((symbol, state, rows))
        return groups

    def _trades(self, block: CsvBlock, checks: RowChecks,
                times: tuple[np.ndarray, np.ndarray], info: dict[str, Any]) -> None:
        side = _side(block, checks, ["buy", "sell", "unknown"], [1, -1, 0])
        price = _checked(block, checks, "price", "invalid_price", allow_zero=False)
        qty = _checked(block, checks, "amount", "invalid_qty", allow_zero=False)
        ids, _ = convert_text(block.table.column("id"), _INT)
        id_values = ids.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        integer = ids.is_valid().to_numpy(zero_copy_only=False)
        groups = self._groups(block, checks, None, info)
        for symbol, state, rows in groups:
            if state.trade_ids is None:
                state.trade_ids = "venue" if integer[rows[0]] else "synthetic"
            if state.trade_ids == "venue":
                mask = np.zeros(len(block), dtype=bool)
                mask[rows] = ~integer[rows]
                checks.flag(mask, "invalid_id", "id",
                            f"is not an integer (earlier {symbol} ids were)")
        checks.write(self.session.log, info["file"], block.table.column("symbol"))
        ts_event, ts_recv = times
        for symbol, state, rows in groups:
            rows = rows[~checks.bad[rows]]
            if state.trade_ids == "venue":
                trade_id = id_values[rows]
            else:
                trade_id = state.trade_count + np.arange(1, len(rows) + 1, dtype=np.int64)
            state.trade_count += len(rows)
            info["unknown_side"] = info.get("unknown_side", 0) + int((side[rows] == 0).sum())
            self.session.write(symbol, trades=TradeColumns(
                ts_event=ts_event[rows], ts_recv=ts_recv[rows], trade_id=trade_id,
                price=price[rows], qty=qty[rows], side=side[rows]))

    def _incremental(self, block: CsvBlock, checks: RowChecks,
                     times: tuple[np.ndarray, np.ndarray], info: dict[str, Any]) -> None:
        side = _side(block, checks, ["bid", "ask"], [1, -1])
        price = _checked(block, checks, "price", "invalid_price", allow_zero=False)
        qty = _checked(block, checks, "amount", "invalid_qty", allow_zero=True)
        is_snapshot = present_bools(block.table, "is_snapshot")
        checks.write(self.session.log, info["file"], block.table.column("symbol"))
        ts_event, ts_recv = times
        for symbol, state, rows in self._groups(block, checks, "incremental_book_L2", info):
            before = state.incremental.markers
            snapshots, deltas = state.incremental.convert(
                is_snapshot[rows], ts_event[rows], ts_recv[rows], side[rows], price[rows],
                qty[rows])
            info["resync_markers"] = (info.get("resync_markers", 0)
                                      + state.incremental.markers - before)
            self.session.write(symbol, snapshots=snapshots, deltas=deltas)

    def _top_levels(self, block: CsvBlock, checks: RowChecks,
                    times: tuple[np.ndarray, np.ndarray], info: dict[str, Any],
                    depth: int) -> None:
        bid_price, bid_qty = _levels(block, checks, "bids", depth)
        ask_price, ask_qty = _levels(block, checks, "asks", depth)
        checks.flag(bid_price[:, 0] >= ask_price[:, 0], "crossed_book", "bids[0].price",
                    "is at or above asks[0].price (crossed book)")
        checks.write(self.session.log, info["file"], block.table.column("symbol"))
        ts_event, ts_recv = times
        for symbol, state, rows in self._groups(block, checks, "book_snapshot_N", info):
            snapshots, deltas, quotes = state.top_levels.convert(
                ts_event[rows], ts_recv[rows], bid_price[rows], bid_qty[rows],
                ask_price[rows], ask_qty[rows])
            self.session.write(symbol, snapshots=snapshots, deltas=deltas, quotes=quotes)


def import_tardis(paths: Sequence[str | Path], out: str | Path, *,
                  overwrite: bool = False) -> ImportResult:
    """Import Tardis CSV files (in the order given, as one stream per symbol) into a new tape.

    Every file is recognised before anything is written (see `inspect_file`); bad rows become
    dead letters; a failure leaves nothing at `out`.
    """
    if not paths:
        raise ImportFormatError("no files to import")
    files = [inspect_file(path) for path in paths]
    with ImportSession(Path(out), importer="tardis", files=[file.path for file in files],
                       overwrite=overwrite) as session:
        importer = _Importer(session)
        for file in files:
            importer.run(file)
        books = any(state.book_kind for state in importer.symbols.values())
        session.metadata.update({
            "time_unit": "us",
            "exchanges": {symbol: state.exchange for symbol, state in importer.symbols.items()},
            "synthetic_update_ids": books,
            "synthetic_trade_ids": sorted(symbol for symbol, state in importer.symbols.items()
                                          if state.trade_ids == "synthetic"),
        })
    return session.finished()
