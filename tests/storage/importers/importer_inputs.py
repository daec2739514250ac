"""Binance public-data and Tardis CSV files built from the bundled real data, for importer tests.

The real captures (data/binance-spot, data/binance-usdm) are parsed once into tapes with
`capture_to_tape`; their trades, depth updates and snapshots are then written out in the layouts
the importers read, so every value in an input file is a real one (aggTrades are the real trades
aggregated as Binance does: consecutive fills of one taker order at one price). The 1-minute
klines come from data/binance-1m/BTCUSDT_1m.csv; that file has no taker-buy columns, so the
Binance kline rows carry a taker-buy volume derived from the row's volume (labelled below).
Book helpers replay a book through `dataflows.book.BookSynchronizer` and record the book after
every applied update.
"""

from __future__ import annotations

import gzip
import heapq
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dataflows.book import BookSynchronizer
from engine.batches import BookDeltaColumns, BookSnapshotColumns
from storage.klines import read_klines_csv
from storage.tape import TapeReader

MS = 1_000_000
US = 1_000
Columns = dict[str, np.ndarray]
Top = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]


def table_columns(tape: Path, table: str, symbol: str | None = None) -> Columns:
    """One tape table as NumPy columns (without the symbol column)."""
    data = TapeReader(tape).read_table(table, [symbol] if symbol else None)
    return {name: data.column(name).to_numpy() for name in data.column_names if name != "symbol"}


def take(columns: Columns, rows: np.ndarray | slice) -> Columns:
    return {name: values[rows] for name, values in columns.items()}


def write_lines(path: Path, lines: list[str], container: str) -> Path:
    """Write CSV lines as `path` + ".csv", ".csv.gz" or ".zip" (holding `path`.csv)."""
    text = ("\n".join(lines) + "\n").encode()
    if container == "csv":
        out = path.with_name(path.name + ".csv")
        out.write_bytes(text)
    elif container == "gz":
        out = path.with_name(path.name + ".csv.gz")
        out.write_bytes(gzip.compress(text, compresslevel=1))
    else:
        out = path.with_name(path.name + ".zip")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(path.name + ".csv", text)
    return out


def _bool(value: bool, style: str) -> str:
    return ("True" if value else "False") if style == "spot" else ("true" if value else "false")


def binance_trade_lines(trades: Columns, market: str, unit: str) -> list[str]:
    """Binance public trades: spot without header (7 fields), futures with header (6)."""
    per_unit = MS if unit == "ms" else US
    lines = [] if market == "spot" else ["id,price,qty,quote_qty,time,is_buyer_maker"]
    for trade_id, price, qty, ts, side in zip(
        trades["trade_id"].tolist(), trades["price"].tolist(), trades["qty"].tolist(),
        trades["ts_event"].tolist(), trades["side"].tolist(), strict=True,
    ):
        fields = [str(trade_id), f"{price:.8f}", f"{qty:.8f}", f"{price * qty:.8f}",
                  str(ts // per_unit), _bool(side == -1, market)]
        if market == "spot":
            fields.append("True")
        lines.append(",".join(fields))
    return lines


def aggregate_trades(trades: Columns) -> Columns:
    """Consecutive trades at one time, side and price (one taker order's fills) summed, as
    Binance's aggTrades are; ids start at 900,000,000."""
    change = np.ones(len(trades["ts_event"]), dtype=bool)
    change[1:] = (
        (trades["ts_event"][1:] != trades["ts_event"][:-1])
        | (trades["side"][1:] != trades["side"][:-1])
        | (trades["price"][1:] != trades["price"][:-1])
    )
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], len(change)] - 1
    return {
        "ts_event": trades["ts_event"][starts],
        "agg_id": 900_000_000 + np.arange(len(starts), dtype=np.int64),
        "first_trade_id": trades["trade_id"][starts],
        "last_trade_id": trades["trade_id"][ends],
        "price": trades["price"][starts],
        "qty": np.add.reduceat(trades["qty"], starts),
        "side": trades["side"][starts],
    }


def binance_agg_trade_lines(agg: Columns, market: str, unit: str) -> list[str]:
    per_unit = MS if unit == "ms" else US
    lines = [] if market == "spot" else [
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
    for agg_id, price, qty, first, last, ts, side in zip(
        *(agg[name].tolist() for name in ("agg_id", "price", "qty", "first_trade_id",
                                          "last_trade_id", "ts_event", "side")), strict=True,
    ):
        fields = [str(agg_id), repr(price), repr(qty), str(first), str(last), str(ts // per_unit),
                  _bool(side == -1, market)]
        if market == "spot":
            fields.append("True")
        lines.append(",".join(fields))
    return lines


def kline_columns(klines_csv: Path, rows: int | None = None) -> Columns:
    """The bundled 1-minute klines, with a taker-buy volume derived from the volume (0.4 x,
    rounded to 8 decimals: the source file has no taker split)."""
    table = read_klines_csv(klines_csv)
    columns = {name: table.column(name).to_numpy()[:rows] for name in table.column_names}
    columns["taker_buy_volume"] = np.round(columns["volume"] * 0.4, 8)
    return columns


def binance_kline_lines(klines: Columns, market: str, unit: str) -> list[str]:
    """Binance klines (12 fields): spot without header, futures with; close_time is the last
    millisecond (or microsecond) of the candle."""
    per_unit = MS if unit == "ms" else US
    lines = [] if market == "spot" else [
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore"]
    names = ("ts_open", "open", "high", "low", "close", "volume", "ts_close", "quote_volume",
             "trade_count", "taker_buy_volume")
    for ts_open, o, h, low, c, v, ts_close, qv, n, tb in zip(
        *(klines[name].tolist() for name in names), strict=True,
    ):
        lines.append(",".join([
            str(ts_open // per_unit), repr(o), repr(h), repr(low), repr(c), repr(v),
            str(ts_close // per_unit - 1), repr(qv), str(n), repr(tb), repr(round(tb * c, 8)),
            "0",
        ]))
    return lines


def tardis_trade_lines(parts: list[tuple[str, str, Columns]]) -> list[str]:
    """Tardis trades of several (exchange, symbol, trades), merged by receive time."""
    rows = []
    for exchange, symbol, trades in parts:
        for ts, recv, trade_id, side, price, qty in zip(
            *(trades[name].tolist() for name in ("ts_event", "ts_recv", "trade_id", "side",
                                                 "price", "qty")), strict=True,
        ):
            side_text = "buy" if side == 1 else "sell"
            rows.append((recv // US, f"{exchange},{symbol},{ts // US},{recv // US},{trade_id},"
                                     f"{side_text},{price!r},{qty!r}"))
    rows.sort(key=lambda row: row[0])
    return ["exchange,symbol,timestamp,local_timestamp,id,side,price,amount"] + [
        line for _, line in rows]


def tardis_book_line(exchange: str, symbol: str, ts_event: int, ts_recv: int, snapshot: bool,
                     side: int, price: float, qty: float) -> str:
    return (f"{exchange},{symbol},{ts_event // US},{ts_recv // US},"
            f"{'true' if snapshot else 'false'},{'bid' if side == 1 else 'ask'},{price!r},{qty!r}")


def tardis_book_rows(symbol: str, deltas: Columns, snapshots: Columns, futures: bool = False,
                     exchange: str = "binance") -> list[tuple[int, str]]:
    """incremental_book_L2 rows (receive time us, line) of a capture: its first snapshot, then
    every update not covered by it (spot u > lastUpdateId, futures u >= lastUpdateId), as
    Tardis publishes them."""
    first_id = int(snapshots["last_update_id"][0])
    snapshot = take(snapshots, snapshots["last_update_id"] == first_id)
    after = take(deltas, deltas["final_update_id"] >= first_id + (0 if futures else 1))
    rows = []
    for columns, is_snapshot in ((snapshot, True), (after, False)):
        for ts, recv, side, price, qty in zip(*(columns[name].tolist() for name in (
                "ts_event", "ts_recv", "side", "price", "qty")), strict=True):
            rows.append((recv // US, tardis_book_line(exchange, symbol, ts, recv, is_snapshot,
                                                      side, price, qty)))
    return rows


def merge_by_receive_time(parts: list[list[tuple[int, str]]]) -> list[str]:
    """Lines of several symbols interleaved by receive time, each symbol's order kept (a
    capture's snapshot is received after the first updates that follow it)."""
    keyed = []
    for part, rows in enumerate(parts):
        latest = 0
        for index, (received, line) in enumerate(rows):
            latest = max(latest, received)
            keyed.append((latest, part, index, line))
    return [line for *_, line in sorted(keyed)]


INCREMENTAL_HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"


def top(book: BookSynchronizer, depth: int) -> Top:
    """The best `depth` levels of each side, best first."""
    if hasattr(book.bids, "top"):  # BookSide.top: a slice, far cheaper than copying the book
        sides = [book.bids.top(depth), book.asks.top(depth)]
        bids, asks = (tuple(zip(prices, qtys, strict=True)) for prices, qtys in sides)
        return bids, asks
    bid_levels, ask_levels = book.levels()
    return (tuple((price, bid_levels[price]) for price in heapq.nlargest(depth, bid_levels)),
            tuple((price, ask_levels[price]) for price in heapq.nsmallest(depth, ask_levels)))


def replay_book(deltas: BookDeltaColumns, snapshots: BookSnapshotColumns, depth: int,
                book: BookSynchronizer | None = None
                ) -> tuple[list[tuple[int, Top]], BookSynchronizer]:
    """Apply one batch; (u, the top `depth` levels) after every applied update."""
    book = book or BookSynchronizer("X")
    tops: list[tuple[int, Top]] = []
    record: Callable[[int], None] = lambda u: tops.append((u, top(book, depth)))  # noqa: E731
    book.apply(deltas, snapshots, observer=record)
    return tops, book


def replay_tape_book(tape: Path, symbol: str, depth: int
                     ) -> tuple[list[tuple[int, Top]], BookSynchronizer]:
    """Replay a tape's book for `symbol` chunk by chunk, as the dataflow does."""
    book = BookSynchronizer(symbol)
    tops: list[tuple[int, Top]] = []
    for chunk in TapeReader(tape).iter_chunks(50_000, 60 * 10**9, [symbol]):
        more, _ = replay_book(chunk.deltas, chunk.snapshots, depth, book)
        tops.extend(more)
    return tops, book


def only_tops(tops: list[tuple[int, Top]]) -> list[Top]:
    return [levels for _, levels in tops]
