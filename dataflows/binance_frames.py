"""Field extraction of Binance websocket frames, one function per event kind.

Each `add_*` function reads one decoded frame (the `data` object of a combined-stream envelope,
or a bare frame), checks every field it needs and only then appends one row to the symbol's
`SymbolBuffers` lists, so a bad frame leaves no partial row behind. A bad field raises
`FrameError` with the dead-letter reason and a detail naming the field and its value; the parser
turns it into a `DeadLetter` (field readers: `dataflows.binance_fields`). Values that read as
numbers but are NaN, infinite or negative pass: `dataflows.validate` judges them.

Wire formats handled here (Binance spot and USD-M futures; times are milliseconds):
- `trade`: t id, p price, q qty, T trade time, m buyer is maker (futures adds X, ignored);
- `aggTrade`: a aggregate id, f/l first/last trade id, p, q, T, m (spot adds M, ignored);
- `bookTicker`: u update id, b/B best bid price/qty, a/A best ask price/qty; futures adds E
  (event time) and T (transaction time), spot has no time at all;
- `depthUpdate`: E, U/u first/final update id, b/a changed levels; futures adds T and pu;
- depth snapshots: REST `{"lastUpdateId", "bids", "asks"}` (futures adds E and T), the same shape
  for spot partial-book streams `<symbol>@depth<5|10|20>`, and futures partial-book streams, which
  are `depthUpdate` frames whose u is the snapshot's update id;
- `markPriceUpdate`: E, p mark, i index, P estimated settle price (optional), r funding rate
  ("" for delivery contracts, read as NaN), T next funding time (0 for delivery contracts);
- `kline`: E and k {t open time, T close time (inclusive), i interval, o/h/l/c, v base volume,
  q quote volume, V taker buy base volume, n trade count, x closed}.
"""

from __future__ import annotations

from typing import Any

from dataflows.binance_fields import (
    NS_PER_MS,
    ExchangeClock,
    FrameError,
    flag,
    funding_rate,
    int64,
    is_int64,
    is_ms_time,
    ms_to_ns,
    number,
    parse_levels,
    require,
)
from dataflows.capture import SymbolBuffers

_DAY_MS = 86_400_000

# Kline interval -> length in ns; "1M" (a calendar month) has no fixed length and maps to 0.
KLINE_INTERVAL_NS: dict[str, int] = {
    name: seconds * 1000 * NS_PER_MS
    for name, seconds in (
        ("1s", 1), ("1m", 60), ("3m", 180), ("5m", 300), ("15m", 900), ("30m", 1800),
        ("1h", 3600), ("2h", 7200), ("4h", 14_400), ("6h", 21_600), ("8h", 28_800),
        ("12h", 43_200), ("1d", 86_400), ("3d", 259_200), ("1w", 604_800), ("1M", 0),
    )
}
_MONTH_MS = (28 * _DAY_MS, 31 * _DAY_MS)  # shortest and longest calendar month


# ---------------------------------------------------------------- appends shared with REST


def append_trade(
    buffer: SymbolBuffers, ts_event: int, ts_recv: int, trade_id: int, price: float, qty: float,
    buyer_is_maker: bool,
) -> None:
    """Append one checked trade (websocket or REST)."""
    buffer.trade_event.append(ts_event)
    buffer.trade_recv.append(ts_recv)
    buffer.trade_id.append(trade_id)
    buffer.trade_price.append(price)
    buffer.trade_qty.append(qty)
    buffer.trade_side.append(-1 if buyer_is_maker else 1)


def append_quote(
    buffer: SymbolBuffers, ts_event: int, ts_recv: int, update_id: int, values: list[float]
) -> None:
    """Append one checked best bid/ask; `values` are bid, bid qty, ask, ask qty."""
    bid, bid_qty, ask, ask_qty = values
    buffer.quote_event.append(ts_event)
    buffer.quote_recv.append(ts_recv)
    buffer.quote_update_id.append(update_id)
    buffer.quote_bid.append(bid)
    buffer.quote_bid_qty.append(bid_qty)
    buffer.quote_ask.append(ask)
    buffer.quote_ask_qty.append(ask_qty)


def append_snapshot(
    buffer: SymbolBuffers, ts_event: int, ts_recv: int, last_update_id: int,
    bids: tuple[list[float], list[float]], asks: tuple[list[float], list[float]],
) -> None:
    """Append one checked book snapshot; `bids`/`asks` are (prices, quantities)."""
    buffer.snapshot_event.append(ts_event)
    buffer.snapshot_recv.append(ts_recv)
    buffer.snapshot_id.append(last_update_id)
    buffer.snapshot_bid_counts.append(len(bids[0]))
    buffer.snapshot_ask_counts.append(len(asks[0]))
    buffer.snapshot_price += bids[0]
    buffer.snapshot_price += asks[0]
    buffer.snapshot_qty += bids[1]
    buffer.snapshot_qty += asks[1]


def append_agg_trade(buffer: SymbolBuffers, row: tuple[int, int, int, int, int, float, float,
                                                        bool]) -> None:
    """Append (ts_event, ts_recv, agg id, first id, last id, price, qty, buyer is maker)."""
    ts_event, ts_recv, agg_id, first_id, last_id, price, qty, buyer_is_maker = row
    buffer.agg_event.append(ts_event)
    buffer.agg_recv.append(ts_recv)
    buffer.agg_id.append(agg_id)
    buffer.agg_first_id.append(first_id)
    buffer.agg_last_id.append(last_id)
    buffer.agg_price.append(price)
    buffer.agg_qty.append(qty)
    buffer.agg_side.append(-1 if buyer_is_maker else 1)


def append_mark(buffer: SymbolBuffers, row: tuple[int, int, float, float, float, float, int]
                ) -> None:
    """Append (ts_event, ts_recv, mark, index, estimated settle, funding rate, next funding)."""
    ts_event, ts_recv, mark, index, settle, funding, next_funding = row
    buffer.mark_event.append(ts_event)
    buffer.mark_recv.append(ts_recv)
    buffer.mark_price.append(mark)
    buffer.mark_index.append(index)
    buffer.mark_settle.append(settle)
    buffer.mark_funding.append(funding)
    buffer.mark_next_funding.append(next_funding)


# ---------------------------------------------------------------- websocket kinds


def add_trade(buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
    try:
        trade_ms = data["T"]
        trade_id = data["t"]
        price_text = data["p"]
        qty_text = data["q"]
        buyer_is_maker = data["m"]
    except KeyError as missing:
        raise FrameError("missing_field", f"trade frame has no {missing.args[0]!r}") from None
    if not is_ms_time(trade_ms):
        raise FrameError("invalid_number", f"trade time 'T' is {trade_ms!r:.40}")
    if not is_int64(trade_id):
        raise FrameError("invalid_number", f"trade id 't' is {trade_id!r:.40}")
    try:
        price = float(price_text)
        qty = float(qty_text)
        if type(price_text) is bool or type(qty_text) is bool:
            raise TypeError
    except (ValueError, TypeError):
        raise FrameError(
            "invalid_number", f"trade price/qty {price_text!r:.40}/{qty_text!r:.40}"
        ) from None
    if type(buyer_is_maker) is not bool:
        raise FrameError("invalid_field", f"trade 'm' is {buyer_is_maker!r:.40}, not a bool")
    buffer.trade_event.append(trade_ms * NS_PER_MS)
    buffer.trade_recv.append(ts_recv)
    buffer.trade_id.append(trade_id)
    buffer.trade_price.append(price)
    buffer.trade_qty.append(qty)
    buffer.trade_side.append(-1 if buyer_is_maker else 1)


def add_agg_trade(buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
    what = "aggTrade frame"
    agg_id, first_id, last_id, price, qty, trade_ms, buyer_is_maker = require(
        data, ("a", "f", "l", "p", "q", "T", "m"), what
    )
    row = (
        ms_to_ns(trade_ms, "T", what), ts_recv, int64(agg_id, "a", what),
        int64(first_id, "f", what), int64(last_id, "l", what), number(price, "p", what),
        number(qty, "q", what), flag(buyer_is_maker, "m", what),
    )
    append_agg_trade(buffer, row)


def add_quote(
    buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int, symbol: str, clock: ExchangeClock
) -> None:
    try:
        update_id = data["u"]
        bid_text = data["b"]
        bid_qty_text = data["B"]
        ask_text = data["a"]
        ask_qty_text = data["A"]
    except KeyError as missing:
        raise FrameError("missing_field", f"bookTicker frame has no {missing.args[0]!r}") from None
    if not is_int64(update_id):
        raise FrameError("invalid_number", f"bookTicker update id 'u' is {update_id!r:.40}")
    try:
        bid = float(bid_text)
        bid_qty = float(bid_qty_text)
        ask = float(ask_text)
        ask_qty = float(ask_qty_text)
        if not type(bid_text) is type(bid_qty_text) is type(ask_text) is type(ask_qty_text) \
                is str and bool in map(type, (bid_text, bid_qty_text, ask_text, ask_qty_text)):
            raise TypeError
    except (ValueError, TypeError):
        texts = (bid_text, bid_qty_text, ask_text, ask_qty_text)
        raise FrameError("invalid_number", f"bookTicker b/B/a/A are {texts!r:.120}") from None
    event_ms = data.get("E")  # checked by the parser when present
    buffer.quote_event.append(
        event_ms * NS_PER_MS if event_ms is not None else clock.estimate_quote(symbol, ts_recv)
    )
    buffer.quote_recv.append(ts_recv)
    buffer.quote_update_id.append(update_id)
    buffer.quote_bid.append(bid)
    buffer.quote_bid_qty.append(bid_qty)
    buffer.quote_ask.append(ask)
    buffer.quote_ask_qty.append(ask_qty)


def add_depth(buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
    try:
        event_ms = data["E"]
        first_id = data["U"]
        final_id = data["u"]
        bids = data["b"]
        asks = data["a"]
    except KeyError as missing:
        raise FrameError("missing_field", f"depth frame has no {missing.args[0]!r}") from None
    previous_id = data.get("pu", -1)
    for name, value in (("U", first_id), ("u", final_id), ("pu", previous_id)):
        if not is_int64(value):
            raise FrameError("invalid_number", f"depth update id {name!r} is {value!r:.40}")
    what = f"depth update {first_id}..{final_id}"
    bid_prices, bid_qtys = parse_levels(bids, "b", what)
    ask_prices, ask_qtys = parse_levels(asks, "a", what)
    buffer.delta_event.append(event_ms * NS_PER_MS)
    buffer.delta_recv.append(ts_recv)
    buffer.delta_first.append(first_id)
    buffer.delta_final.append(final_id)
    buffer.delta_prev.append(previous_id)
    buffer.delta_bid_counts.append(len(bid_prices))
    buffer.delta_ask_counts.append(len(ask_prices))
    buffer.delta_price += bid_prices
    buffer.delta_price += ask_prices
    buffer.delta_qty += bid_qtys
    buffer.delta_qty += ask_qtys


def add_snapshot(
    buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int, clock: ExchangeClock
) -> None:
    """A REST depth snapshot or a spot partial-book frame; no `E` means an estimated time."""
    last_update_id, bids, asks = require(data, ("lastUpdateId", "bids", "asks"), "depth snapshot")
    last_update_id = int64(last_update_id, "lastUpdateId", "depth snapshot")
    what = f"depth snapshot {last_update_id}"
    parsed_bids = parse_levels(bids, "bids", what)
    parsed_asks = parse_levels(asks, "asks", what)
    event_ms = data.get("E")  # checked by the parser when present
    ts_event = event_ms * NS_PER_MS if event_ms is not None else clock.estimate(ts_recv)
    append_snapshot(buffer, ts_event, ts_recv, last_update_id, parsed_bids, parsed_asks)


def add_partial_depth(
    buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int, clock: ExchangeClock
) -> None:
    """A partial-book frame (`@depth<N>`): a top-N snapshot with its update id.

    Spot sends the REST snapshot shape; futures sends a `depthUpdate` whose `u` is the book's
    update id and whose `b`/`a` are the whole top N (not changes).
    """
    if "lastUpdateId" in data:
        add_snapshot(buffer, data, ts_recv, clock)
        return
    what = "partial depth frame"
    event_ms, final_id, bids, asks = require(data, ("E", "u", "b", "a"), what)
    final_id = int64(final_id, "u", what)
    what = f"partial depth {final_id}"
    parsed_bids = parse_levels(bids, "b", what)
    parsed_asks = parse_levels(asks, "a", what)
    append_snapshot(buffer, event_ms * NS_PER_MS, ts_recv, final_id, parsed_bids, parsed_asks)


def add_mark(buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
    what = "markPriceUpdate frame"
    event_ms, mark, index, rate, next_funding_ms = require(data, ("E", "p", "i", "r", "T"), what)
    settle = data.get("P")
    row = (
        ms_to_ns(event_ms, "E", what), ts_recv, number(mark, "p", what),
        number(index, "i", what),
        float("nan") if settle is None else number(settle, "P", what),
        funding_rate(rate, "r", what), ms_to_ns(next_funding_ms, "T", what),
    )
    append_mark(buffer, row)


def add_kline(buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
    what = "kline frame"
    event_ms, candle = require(data, ("E", "k"), what)
    if type(candle) is not dict:
        raise FrameError("invalid_field", f"{what}: 'k' is {candle!r:.40}, not an object")
    open_ms, close_ms, interval, closed, count = require(candle, ("t", "T", "i", "x", "n"), what)
    prices = require(candle, ("o", "h", "l", "c", "v", "q", "V"), what)
    interval_ns = KLINE_INTERVAL_NS.get(interval) if type(interval) is str else None
    if interval_ns is None:
        raise FrameError("invalid_field", f"{what}: interval 'i' is {interval!r:.40}")
    ts_open = ms_to_ns(open_ms, "t", what)
    ts_close = ms_to_ns(close_ms, "T", what) + NS_PER_MS  # the venue's close time is inclusive
    length_ms = (ts_close - ts_open) // NS_PER_MS
    if interval_ns == 0 and _MONTH_MS[0] <= length_ms <= _MONTH_MS[1]:
        interval_ns = ts_close - ts_open
    if ts_close - ts_open != interval_ns:
        raise FrameError(
            "invalid_field", f"{what}: t={open_ms} and T={close_ms} do not span one {interval}"
        )
    values = [number(value, name, what) for value, name in zip(prices, "ohlcvqV", strict=True)]
    trade_count = int64(count, "n", what)
    is_closed = flag(closed, "x", what)
    ts_event = ms_to_ns(event_ms, "E", what)
    buffer.kline_event.append(ts_event)
    buffer.kline_recv.append(ts_recv)
    buffer.kline_open_time.append(ts_open)
    buffer.kline_close_time.append(ts_close)
    buffer.kline_interval.append(interval_ns)
    buffer.kline_values.append(values)
    buffer.kline_trade_count.append(trade_count)
    buffer.kline_closed.append(is_closed)
