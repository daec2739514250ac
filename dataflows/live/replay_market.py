"""The replay server's own market: the order book, trades and tickers the timeline has played.

REST answers come from here, so they agree with the websocket streams the way Binance's do:
- The order book of a symbol starts from the captures' first depth snapshot of that symbol (loaded
  when the timeline starts, even if the snapshot line comes a few frames later in the file) and
  takes every depth diff the timeline plays, whether or not a fault kept the diff from the clients.
  Diffs older than the book are skipped as a client would skip them (spot: u <= lastUpdateId;
  futures: u < lastUpdateId). `last_update_id` is the last applied u; futures books also carry
  the diff's E and T. If the capture itself misses diffs (spot U != lastUpdateId + 1, futures
  pu != lastUpdateId) the book is marked out of sync and the next snapshot in the captures
  rebuilds it, re-applying the recent diffs it has not seen. Without any snapshot the book is
  what the diffs alone say (levels never touched are unknown).
- Trades are kept in play order. Futures REST trades are market trades only (`X` = MARKET).
- Aggregate trades come from `@aggTrade` frames when the captures have them for the symbol;
  otherwise they are derived from trades as Binance forms them: consecutive trades with the same
  price, the same taker side and the same trade time, with `a` equal to the first trade id `f`
  (the venue's own agg ids are a separate sequence the captures do not carry). The newest
  aggregate can still grow while trades of the same taker order are played.
- The book ticker is the last played `@bookTicker` frame, or the book's best levels before one.
- The premium index is the last played `@markPrice` frame; without one it is derived from the
  book: mark = index = settle price = the mid price, funding rate 0 (documented, not venue data).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from dataflows.live.replay_frames import (
    AGG_TRADE,
    BOOK_TICKER,
    DEPTH,
    MARK_PRICE,
    SNAPSHOT,
    TRADE,
    TimelineFrame,
)

RECENT_DIFFS = 5000
Level = tuple[str, str]


class MarketDataError(ValueError):
    """A played frame whose payload the server cannot apply (named by file and line)."""


def _levels(data: dict[str, Any], key: str, where: str) -> list[Level]:
    levels = data.get(key)
    if type(levels) is not list:
        raise MarketDataError(f"{where}: '{key}' is not a list of levels")
    out: list[Level] = []
    for level in levels:
        if type(level) is not list or len(level) < 2 or type(level[0]) is not str \
                or type(level[1]) is not str:
            raise MarketDataError(f"{where}: '{key}' holds a level {level!r:.60}")
        out.append((level[0], level[1]))
    return out


def _set_levels(side: dict[float, Level], levels: list[Level], where: str) -> None:
    for price, qty in levels:
        try:
            key, amount = float(price), float(qty)
        except ValueError as error:
            raise MarketDataError(f"{where}: level [{price!r:.30}, {qty!r:.30}]") from error
        if amount == 0.0:
            side.pop(key, None)
        else:
            side[key] = (price, qty)


@dataclass
class SymbolBook:
    """One symbol's book as the server keeps it (see the module docstring)."""

    futures: bool
    bids: dict[float, Level] = field(default_factory=dict)
    asks: dict[float, Level] = field(default_factory=dict)
    last_update_id: int | None = None
    event_time: int = 0
    transaction_time: int = 0
    synced: bool = False
    fresh_snapshot: bool = False
    recent: deque[tuple[dict[str, Any], str]] = field(
        default_factory=lambda: deque(maxlen=RECENT_DIFFS)
    )

    def load_snapshot(self, data: dict[str, Any], where: str) -> bool:
        """Rebuild from a snapshot when the book has none or is out of sync; True if used."""
        if self.synced:
            return False
        last = data.get("lastUpdateId")
        if type(last) is not int:
            raise MarketDataError(f"{where}: snapshot 'lastUpdateId' is {last!r:.40}")
        bids, asks = _levels(data, "bids", where), _levels(data, "asks", where)
        self.bids.clear()
        self.asks.clear()
        _set_levels(self.bids, bids, where)
        _set_levels(self.asks, asks, where)
        self.last_update_id = last
        self.event_time = data.get("E", 0) if type(data.get("E")) is int else 0
        self.transaction_time = data.get("T", 0) if type(data.get("T")) is int else 0
        self.synced, self.fresh_snapshot = True, True
        for diff, diff_where in list(self.recent):
            self._apply(diff, diff_where, remember=False)
        return True

    def apply_diff(self, data: dict[str, Any], where: str) -> None:
        self._apply(data, where, remember=True)

    def _apply(self, data: dict[str, Any], where: str, remember: bool) -> None:
        first, final = data.get("U"), data.get("u")
        if type(first) is not int or type(final) is not int:
            raise MarketDataError(f"{where}: depth diff without integer U and u")
        if remember:
            self.recent.append((data, where))
        last = self.last_update_id
        if last is not None:
            if final < last or (final == last and not self.futures):
                return
            if self.futures:
                previous = data.get("pu")
                straddles = first <= last <= final
                if not (straddles if self.fresh_snapshot else previous == last):
                    self.synced = False
            elif first > last + 1:
                self.synced = False
        _set_levels(self.bids, _levels(data, "b", where), where)
        _set_levels(self.asks, _levels(data, "a", where), where)
        self.last_update_id = final
        self.fresh_snapshot = False
        if type(data.get("E")) is int:
            self.event_time = data["E"]
        if type(data.get("T")) is int:
            self.transaction_time = data["T"]

    def top(self, limit: int) -> tuple[list[Level], list[Level]]:
        """The best `limit` bids (highest first) and asks (lowest first)."""
        bids = [self.bids[key] for key in sorted(self.bids, reverse=True)[:limit]]
        asks = [self.asks[key] for key in sorted(self.asks)[:limit]]
        return bids, asks


@dataclass
class TradeTape:
    """Played trades of one symbol, and their aggregates (derived or from `@aggTrade`)."""

    ids: list[int] = field(default_factory=list)
    rows: list[tuple[str, str, int, bool, bool]] = field(default_factory=list)  # p, q, T, m, M
    agg_ids: list[int] = field(default_factory=list)
    agg_times: list[int] = field(default_factory=list)
    aggs: list[dict[str, Any]] = field(default_factory=list)

    def add_trade(self, data: dict[str, Any], where: str, derive_aggs: bool) -> None:
        trade_id, price, qty = data.get("t"), data.get("p"), data.get("q")
        time_ms, maker = data.get("T"), data.get("m")
        if type(trade_id) is not int or type(price) is not str or type(qty) is not str \
                or type(time_ms) is not int or type(maker) is not bool:
            raise MarketDataError(f"{where}: trade without t, p, q, T, m of the right types")
        if data.get("X", "MARKET") != "MARKET":
            return
        if self.ids and trade_id <= self.ids[-1]:
            raise MarketDataError(f"{where}: trade id {trade_id} after {self.ids[-1]}")
        best = data.get("M", True) is True
        self.ids.append(trade_id)
        self.rows.append((price, qty, time_ms, maker, best))
        if not derive_aggs:
            return
        last = self.aggs[-1] if self.aggs else None
        if last is not None and last["p"] == price and last["m"] == maker \
                and last["T"] == time_ms and last["l"] == trade_id - 1:
            last["q"] = format(Decimal(last["q"]) + Decimal(qty), "f")
            last["l"] = trade_id
        else:
            self._append_agg({"a": trade_id, "p": price, "q": qty, "f": trade_id,
                              "l": trade_id, "T": time_ms, "m": maker, "M": best})

    def add_agg_trade(self, data: dict[str, Any], where: str) -> None:
        if type(data.get("a")) is not int or type(data.get("T")) is not int:
            raise MarketDataError(f"{where}: aggTrade without integer a and T")
        self._append_agg({key: data[key] for key in ("a", "p", "q", "f", "l", "T", "m", "M")
                          if key in data})

    def _append_agg(self, agg: dict[str, Any]) -> None:
        self.agg_ids.append(agg["a"])
        self.agg_times.append(agg["T"])
        self.aggs.append(agg)

    def trades(self, from_id: int | None, limit: int) -> list[int]:
        """Row positions of up to `limit` trades from id `from_id`, or the newest `limit`."""
        if from_id is None:
            start = max(0, len(self.ids) - limit)
        else:
            start = bisect_left(self.ids, from_id)
        return list(range(start, min(len(self.ids), start + limit)))

    def agg_positions(self, from_id: int | None, start_ms: int | None, end_ms: int | None,
                      limit: int) -> list[int]:
        """Positions of the aggregates an aggTrades query selects (ids from `from_id`, times in
        [start_ms, end_ms], both inclusive), oldest first; the newest `limit` without filters."""
        if from_id is None and start_ms is None and end_ms is None:
            return list(range(max(0, len(self.aggs) - limit), len(self.aggs)))
        start, stop = 0, len(self.aggs)
        if from_id is not None:
            start = max(start, bisect_left(self.agg_ids, from_id))
        if start_ms is not None:
            start = max(start, bisect_left(self.agg_times, start_ms))
        if end_ms is not None:
            stop = bisect_right(self.agg_times, end_ms)
        return list(range(start, min(stop, start + limit)))


def quote_quantity(price: str, qty: str) -> str:
    """price x qty, exact, without trailing zeros (as Binance prints quoteQty)."""
    try:
        product = (Decimal(price) * Decimal(qty)).normalize()
    except InvalidOperation:
        return "0"
    return format(product, "f")


@dataclass
class MarketState:
    """Everything the timeline has played, per symbol, for the REST endpoints."""

    futures: bool
    symbols_with_agg_stream: frozenset[str] = frozenset()
    books: dict[str, SymbolBook] = field(default_factory=dict)
    tapes: dict[str, TradeTape] = field(default_factory=dict)
    tickers: dict[str, bytes] = field(default_factory=dict)
    marks: dict[str, bytes] = field(default_factory=dict)
    exchange_offset_ms: int = 0
    problems: list[str] = field(default_factory=list)
    snapshots_used: int = 0

    def book(self, symbol: str) -> SymbolBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = SymbolBook(self.futures)
        return book

    def tape(self, symbol: str) -> TradeTape:
        tape = self.tapes.get(symbol)
        if tape is None:
            tape = self.tapes[symbol] = TradeTape()
        return tape

    def seed(self, frames: list[TimelineFrame]) -> None:
        """Load each symbol's first snapshot before anything is played, and start the exchange
        clock from the first frame that carries an event time."""
        for frame in frames:
            if frame.kind in (DEPTH, TRADE):
                with suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                    event_time = orjson.loads(frame.raw).get("E")
                    if type(event_time) is int:
                        self.exchange_offset_ms = event_time - frame.ts_recv // 1_000_000
                        break
        seen: set[str] = set()
        for frame in frames:
            if frame.kind == SNAPSHOT and frame.symbol not in seen:
                seen.add(frame.symbol)
                self.play(frame)

    def play(self, frame: TimelineFrame) -> None:
        """Apply one played frame; a payload that cannot be applied is listed in `problems`.
        Tickers and mark prices are kept as bytes and decoded only when REST asks for them."""
        kind = frame.kind
        if kind == BOOK_TICKER:
            self.tickers[frame.symbol] = frame.raw
            return
        if kind == MARK_PRICE:
            self.marks[frame.symbol] = frame.raw
            return
        if kind not in (DEPTH, TRADE, AGG_TRADE, SNAPSHOT):
            return
        try:
            data = orjson.loads(frame.raw)
            if type(data) is not dict:
                raise MarketDataError("payload is not a JSON object")
            self._play(frame, data)
        except (orjson.JSONDecodeError, MarketDataError) as error:
            self.problems.append(f"{frame.source}: not applied to the server's market: {error}")

    def _play(self, frame: TimelineFrame, data: dict[str, Any]) -> None:
        symbol = frame.symbol
        if frame.kind == DEPTH:
            self.book(symbol).apply_diff(data, frame.source)
        elif frame.kind == SNAPSHOT:
            self.snapshots_used += self.book(symbol).load_snapshot(data, frame.source)
        elif frame.kind == TRADE:
            derive = symbol not in self.symbols_with_agg_stream
            self.tape(symbol).add_trade(data, frame.source, derive)
        else:
            self.tape(symbol).add_agg_trade(data, frame.source)
        event_time = data.get("E")
        if type(event_time) is int:
            self.exchange_offset_ms = event_time - frame.ts_recv // 1_000_000

    def latest(self, table: dict[str, bytes], symbol: str) -> dict[str, Any] | None:
        """The last played ticker or mark price of a symbol, decoded; None if none is usable."""
        raw = table.get(symbol)
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return data if type(data) is dict else None

    def best(self, symbol: str) -> tuple[Level | None, Level | None]:
        bids, asks = self.book(symbol).top(1)
        return (bids[0] if bids else None), (asks[0] if asks else None)
