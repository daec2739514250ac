"""REST responses and feed events that the live feed writes into the frame stream.

So that a replay sees exactly what live saw, the live feed records its own frames beside the
venue's websocket frames, and the parser reads them back:

- REST responses in an envelope, `{"rest": "<endpoint path>", "symbol": "<SYMBOL>", "data":
  <response JSON exactly as Binance returned it>}`. Endpoints and what they become:
  `/api/v3/depth`, `/fapi/v1/depth` -> a book snapshot (`lastUpdateId`, `bids`, `asks`; futures
  adds `E`, `T`; spot has no time, so its `ts_event` is estimated like a spot bookTicker's);
  `/api/v3/trades`, `/api/v3/historicalTrades` and their `/fapi/v1/` twins -> trades (a list of
  {id, price, qty, quoteQty, time, isBuyerMaker, isBestMatch});
  `/api/v3/aggTrades`, `/fapi/v1/aggTrades` -> agg trades (a list of {a, p, q, f, l, T, m, M});
  `/api/v3/ticker/bookTicker` -> a quote with update id -1 (spot sends neither id nor time) and an
  estimated time; `/fapi/v1/ticker/bookTicker` -> a quote with `lastUpdateId` and `time`;
  `/fapi/v1/premiumIndex` -> a mark price ({markPrice, indexPrice, estimatedSettlePrice,
  lastFundingRate, nextFundingTime, time}).
  bookTicker and premiumIndex called without a symbol answer with a list for every symbol: each
  item then belongs to the symbol it names. A single object naming another symbol than the
  envelope is "invalid_field".
- Feed events, `{"feed": "<kind>", "symbol": "<SYMBOL>", "detail": "<text>"}`, which become
  `engine.batches.FeedEvent`s; `ts_event` is the receive time plus the stream's latest observed
  exchange-minus-receive offset.
"""

from __future__ import annotations

from typing import Any

from dataflows.binance_fields import (
    ExchangeClock,
    FrameError,
    flag,
    funding_rate,
    int64,
    ms_to_ns,
    number,
    require,
)
from dataflows.binance_frames import (
    add_agg_trade,
    add_snapshot,
    append_mark,
    append_quote,
    append_trade,
)
from dataflows.capture import SymbolBuffers
from engine.batches import FeedEvent

REST_DEPTH = "depth"
REST_TRADES = "trades"
REST_AGG_TRADES = "aggTrades"
REST_BOOK_TICKER = "bookTicker"
REST_PREMIUM_INDEX = "premiumIndex"

REST_ENDPOINTS: dict[str, str] = {
    "/api/v3/depth": REST_DEPTH,
    "/api/v3/trades": REST_TRADES,
    "/api/v3/historicalTrades": REST_TRADES,
    "/api/v3/aggTrades": REST_AGG_TRADES,
    "/api/v3/ticker/bookTicker": REST_BOOK_TICKER,
    "/fapi/v1/depth": REST_DEPTH,
    "/fapi/v1/trades": REST_TRADES,
    "/fapi/v1/historicalTrades": REST_TRADES,
    "/fapi/v1/aggTrades": REST_AGG_TRADES,
    "/fapi/v1/ticker/bookTicker": REST_BOOK_TICKER,
    "/fapi/v1/premiumIndex": REST_PREMIUM_INDEX,
}

# The agreed kinds, plus "snapshot_failed", which the live feed writes when a REST depth
# snapshot could not be fetched (dataflows/live/feed.py).
FEED_KINDS = frozenset({
    "connected", "disconnected", "rollover", "stale", "fresh", "rest_fallback_started",
    "rest_fallback_stopped", "gap_filled", "gap_unfilled", "resync_snapshot", "snapshot_failed",
})


def envelope_symbol(message: dict[str, Any], what: str, required: bool = True) -> str | None:
    """The upper-case `symbol` of a REST envelope or feed event ("missing_field" when required
    and absent; a REST envelope of an all-symbols request has none)."""
    symbol = message.get("symbol")
    if symbol is None and not required:
        return None
    if type(symbol) is not str or not symbol:
        raise FrameError("missing_field", f"{what} has no 'symbol' string (found {symbol!r:.40})")
    return symbol.upper()


def rest_endpoint(message: dict[str, Any]) -> str:
    """The kind of response a REST envelope holds; an unknown path is "unknown_stream"."""
    path = message.get("rest")
    kind = REST_ENDPOINTS.get(path) if type(path) is str else None
    if kind is None:
        raise FrameError("unknown_stream", f"unknown REST endpoint {path!r:.80}")
    return kind


def rest_items(
    kind: str, symbol: str | None, message: dict[str, Any]
) -> list[tuple[str | None, object]]:
    """The rows of a REST response, each with the symbol it belongs to (None if none is named).

    `symbol` is the envelope's; trades, agg trades and depth need it, bookTicker and
    premiumIndex rows may name their own.
    """
    what = f"REST {message['rest']} response"
    if "data" not in message:
        raise FrameError("missing_field", f"{what}: the envelope has no 'data'")
    data = message["data"]
    if type(data) is dict and "code" in data and "msg" in data:  # Binance's error body
        raise FrameError("venue_error", f"{what} is an error: {data!r:.200}")
    if kind in (REST_TRADES, REST_AGG_TRADES, REST_DEPTH) and symbol is None:
        raise FrameError("missing_field", f"{what}: the envelope has no 'symbol'")
    if kind in (REST_TRADES, REST_AGG_TRADES):
        if type(data) is not list:
            raise FrameError("invalid_field", f"{what} is a {type(data).__name__}, not a list")
        return [(symbol, item) for item in data]
    if type(data) is dict:
        if kind == REST_DEPTH:
            return [(symbol, data)]
        named = _item_symbol(data)
        if symbol is not None and named is not None and named != symbol:
            raise FrameError(
                "invalid_field", f"{what} is for symbol {named}, the envelope for {symbol}"
            )
        return [(symbol or named, data)]
    if type(data) is list and kind != REST_DEPTH:
        return [(_item_symbol(item) or symbol, item) for item in data]
    raise FrameError("invalid_field", f"{what} is a {type(data).__name__}, not an object")


def _item_symbol(item: object) -> str | None:
    named = item.get("symbol") if type(item) is dict else None
    return named.upper() if type(named) is str and named else None


def add_rest_item(
    kind: str,
    buffer: SymbolBuffers,
    item: object,
    ts_recv: int,
    symbol: str,
    clock: ExchangeClock,
) -> None:
    """Append one row of a REST response of `kind` to the buffers of `symbol`."""
    if type(item) is not dict:
        raise FrameError("invalid_field", f"REST {kind} item is {item!r:.60}, not an object")
    if kind == REST_TRADES:
        _add_rest_trade(buffer, item, ts_recv)
    elif kind == REST_AGG_TRADES:
        add_agg_trade(buffer, item, ts_recv)
    elif kind == REST_DEPTH:
        event_ms = item.get("E")
        if event_ms is not None:
            clock.observe(event_ms, ts_recv)
        add_snapshot(buffer, item, ts_recv, clock)
    elif kind == REST_BOOK_TICKER:
        _add_rest_book_ticker(buffer, item, ts_recv, symbol, clock)
    else:
        _add_premium_index(buffer, item, ts_recv)


def _add_rest_trade(buffer: SymbolBuffers, item: dict[str, Any], ts_recv: int) -> None:
    what = "REST trade"
    trade_id, price, qty, time_ms, buyer_is_maker = require(
        item, ("id", "price", "qty", "time", "isBuyerMaker"), what
    )
    append_trade(
        buffer, ms_to_ns(time_ms, "time", what), ts_recv, int64(trade_id, "id", what),
        number(price, "price", what), number(qty, "qty", what),
        flag(buyer_is_maker, "isBuyerMaker", what),
    )


def _add_rest_book_ticker(
    buffer: SymbolBuffers, item: dict[str, Any], ts_recv: int, symbol: str, clock: ExchangeClock
) -> None:
    what = "REST bookTicker"
    names = ("bidPrice", "bidQty", "askPrice", "askQty")
    values = [number(value, name, what) for value, name in
              zip(require(item, names, what), names, strict=True)]
    update_id = int64(item.get("lastUpdateId", -1), "lastUpdateId", what)
    time_ms = item.get("time")
    if time_ms is None:
        ts_event = clock.estimate_quote(symbol, ts_recv)
    else:
        ts_event = ms_to_ns(time_ms, "time", what)
    append_quote(buffer, ts_event, ts_recv, update_id, values)


def _add_premium_index(buffer: SymbolBuffers, item: dict[str, Any], ts_recv: int) -> None:
    what = "REST premiumIndex"
    mark, index, rate, next_funding_ms, time_ms = require(
        item, ("markPrice", "indexPrice", "lastFundingRate", "nextFundingTime", "time"), what
    )
    settle = item.get("estimatedSettlePrice")
    row = (
        ms_to_ns(time_ms, "time", what), ts_recv, number(mark, "markPrice", what),
        number(index, "indexPrice", what),
        float("nan") if settle is None else number(settle, "estimatedSettlePrice", what),
        funding_rate(rate, "lastFundingRate", what),
        ms_to_ns(next_funding_ms, "nextFundingTime", what),
    )
    append_mark(buffer, row)


def add_feed_event(
    buffer: SymbolBuffers,
    message: dict[str, Any],
    ts_recv: int,
    symbol: str,
    clock: ExchangeClock,
) -> None:
    """Append a feed event; an unknown kind or a non-text detail is "invalid_field"."""
    kind = message["feed"]
    if type(kind) is not str or kind not in FEED_KINDS:
        raise FrameError(
            "invalid_field", f"feed event kind {kind!r:.40} is not one of {sorted(FEED_KINDS)}"
        )
    detail = message.get("detail", "")
    if type(detail) is not str:
        raise FrameError("invalid_field", f"feed event 'detail' is {detail!r:.40}, not text")
    buffer.feed_events.append(FeedEvent(symbol, clock.estimate(ts_recv), ts_recv, kind, detail))
