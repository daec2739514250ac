"""What `ats journal` does to a journal: read-only SQL, exports (tables, and fills for tax tools),
and the comparison of two journals of the same stream.

- `query`: any SQL on a read-only connection, so a typo cannot change the journal.
- `export`: every table as CSV or Parquet (rows in key order), or `tax.csv`: one row per fill
  with the columns tax tools import: date (ISO 8601 UTC), type (buy or sell), asset (the base
  asset), amount, price, fee, currency (the quote asset, in which price and fee are). Paper fees
  are charged in the quote asset.
- `diff`: two journals of one stream (live paper against replay, or two configs) matched on what
  identifies an event rather than on keys (a changed parameter shifts every later sequence
  number): signals on (symbol, time, timeframe, direction), fills on (symbol, time, side, order
  type). Each table reports rows only in A, only in B, and matched rows whose values differ
  (acted, reason; quantity, price, fee), with the earliest time where the two part; P&L is
  compared by realised P&L, fees and final equity.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from storage.schemas import JOURNAL_TABLES

QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USD", "EUR", "GBP", "BTC", "ETH", "BNB")
TAX_COLUMNS = ("date", "type", "asset", "amount", "price", "fee", "currency")


def _connect(journal: Path | str) -> duckdb.DuckDBPyConnection:
    path = Path(journal)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such journal")
    return duckdb.connect(str(path), read_only=True)


def query(journal: Path | str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of `sql` on a read-only connection."""
    with _connect(journal) as connection:
        try:
            relation = connection.execute(sql)
        except duckdb.Error as error:
            raise ValueError(f"{Path(journal).name}: {error}") from None
        if relation.description is None:
            return [], []
        names = [column[0] for column in relation.description]
        return names, relation.fetchall()


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base, quote) of an exchange symbol: "BTCUSDT" -> ("BTC", "USDT")."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    for separator in ("-", "/", "_"):
        if separator in symbol:
            base, quote = symbol.split(separator, 1)
            return base, quote.split(separator)[0]
    raise ValueError(f"symbol {symbol!r}: cannot tell its base from its quote asset")


def tax_rows(journal: Path | str) -> list[dict[str, Any]]:
    """The fills as `TAX_COLUMNS` rows, oldest first."""
    with _connect(journal) as connection:
        fills = connection.execute(
            "SELECT ts_event, symbol, side, quantity, price, fee FROM fills "
            "ORDER BY ts_event, key").fetchall()
    rows = []
    for ts, symbol, side, quantity, price, fee in fills:
        base, quote = split_symbol(symbol)
        seconds, nanos = divmod(int(ts), 1_000_000_000)
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        rows.append({"date": f"{stamp}.{nanos // 1_000_000:03d}Z",
                     "type": "buy" if side > 0 else "sell", "asset": base, "amount": quantity,
                     "price": price, "fee": fee, "currency": quote})
    return rows


def export(journal: Path | str, out: Path | str, fmt: str) -> list[Path]:
    """Write the journal's tables (`csv`, `parquet`) or its `tax` CSV into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "tax":
        target = out / "tax.csv"
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=TAX_COLUMNS)
            writer.writeheader()
            writer.writerows(tax_rows(journal))
        return [target]
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format {fmt!r}: use csv, parquet or tax")
    written = []
    with _connect(journal) as connection:
        for table in JOURNAL_TABLES:
            target = out / f"{table}.{fmt}"
            options = "(FORMAT CSV, HEADER)" if fmt == "csv" else "(FORMAT PARQUET)"
            connection.execute(f"COPY (SELECT * FROM \"{table}\" ORDER BY key) TO "
                               f"'{target.as_posix()}' {options}")
            written.append(target)
    return written


@dataclass
class TableDiff:
    """How one table of two journals compares."""

    matched: int = 0
    changed: list[dict[str, Any]] = field(default_factory=list)
    only_a: list[tuple[Any, ...]] = field(default_factory=list)
    only_b: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.changed or self.only_a or self.only_b)

    def first_time(self) -> int | None:
        times = [row["at"][1] for row in self.changed]
        times += [row[1] for row in self.only_a + self.only_b]
        return min(times) if times else None


_MATCH = {
    "signals": (("symbol", "ts_event", "timeframe", "direction"), ("acted", "reason")),
    "fills": (("symbol", "ts_event", "side", "liquidity"), ("quantity", "price", "fee")),
}


def _table(connection: duckdb.DuckDBPyConnection, table: str
           ) -> dict[tuple[Any, ...], list[tuple[Any, ...]]]:
    identity, values = _MATCH[table]
    rows = connection.execute(
        f"SELECT {', '.join(identity + values)} FROM {table} ORDER BY ts_event, key").fetchall()
    grouped: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[: len(identity)]), []).append(tuple(row[len(identity):]))
    return grouped


def _same(first: Any, second: Any) -> bool:
    if isinstance(first, float) and isinstance(second, float):
        return math.isclose(first, second, rel_tol=1e-12, abs_tol=1e-12) or (
            math.isnan(first) and math.isnan(second))
    return bool(first == second)


def _compare(table: str, a: dict[tuple[Any, ...], list[tuple[Any, ...]]],
             b: dict[tuple[Any, ...], list[tuple[Any, ...]]]) -> TableDiff:
    names = _MATCH[table][1]
    result = TableDiff()
    for identity in sorted(set(a) | set(b), key=lambda key: (key[1], str(key))):
        left, right = a.get(identity, []), b.get(identity, [])
        for first, second in zip(left, right, strict=False):
            result.matched += 1
            changes = {name: (x, y) for name, x, y in zip(names, first, second, strict=True)
                       if not _same(x, y)}
            if changes:
                result.changed.append({"at": identity, "changes": changes})
        result.only_a += [identity + extra for extra in left[len(right):]]
        result.only_b += [identity + extra for extra in right[len(left):]]
    return result


def diff(journal_a: Path | str, journal_b: Path | str) -> dict[str, Any]:
    """The comparison of the module docs."""
    tables: dict[str, TableDiff] = {}
    pnl: dict[str, tuple[float, float]] = {}
    with _connect(journal_a) as first, _connect(journal_b) as second:
        for table in _MATCH:
            tables[table] = _compare(table, _table(first, table), _table(second, table))
        for name, sql in (
                ("realized_pnl", "SELECT coalesce(sum(pnl), 0) FROM trades"),
                ("fees", "SELECT coalesce(sum(fee), 0) FROM fills"),
                ("final_equity", "SELECT coalesce(arg_max(equity, ts_event), 0) FROM equity")):
            pnl[name] = (float(first.execute(sql).fetchone()[0]),  # type: ignore[index]
                         float(second.execute(sql).fetchone()[0]))  # type: ignore[index]
    pnl_differs = any(not _same(a, b) for a, b in pnl.values())
    parts = [time for time in (table.first_time() for table in tables.values())
             if time is not None]
    return {
        "identical": not pnl_differs and not any(t.differs for t in tables.values()),
        "first_difference_ts": min(parts) if parts else None,
        "tables": {name: {"matched": t.matched, "changed": t.changed, "only_a": t.only_a,
                          "only_b": t.only_b} for name, t in tables.items()},
        "pnl": {name: {"a": a, "b": b, "difference": b - a} for name, (a, b) in pnl.items()},
    }
