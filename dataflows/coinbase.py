"""Coinbase Exchange websocket frames (`ws-feed`, channels level2, matches, ticker) to columns.

Frames are JSON objects keyed on `type`:
- `snapshot` {product_id, bids: [[price, size]], asks: [[price, size]]}: a full level-2 book,
  without an exchange time (its ts_event is estimated: receive time plus the latest observed
  exchange-minus-receive offset).
- `l2update` {product_id, changes: [[side, price, size]], time}: side "buy" is a bid, "sell" an
  ask; size 0 removes the level.
- `match` and `last_match` (the last trade before subscribing) {trade_id, side, size, price,
  product_id, time}: `side` is the MAKER's order side, so the aggressor is the opposite: a
  "sell" maker means a buyer-initiated trade (+1).
- `ticker` {product_id, best_bid, best_ask, best_bid_size?, best_ask_size?, sequence, time}: a
  best bid/ask quote; the sizes are NaN when the frame lacks them (the 2021 feed did), and
  `update_id` is the venue's `sequence`. Its `time` is the time of the trade that triggered it
  (on subscription: the last trade, possibly seconds old); without `time` it is estimated.
- control frames, counted and not dead-lettered: `subscriptions`, `heartbeat`, `status`.
  An `error` frame is a "venue_error" dead letter carrying the venue's message.

Times are ISO-8601 (`2021-04-17T16:43:37.075687Z`) read exactly into int ns. The clock offset
used for estimated times is observed on l2update and match frames only (tickers and last_match
frames sent on subscription carry old trade times).

Book continuity: level2 carries no sequence numbers, so the parser numbers the book per product:
a snapshot takes the next id n as its lastUpdateId and each later l2update gets U = u = n + 1, ...
(see `dataflows.venue_parser`); a new snapshot continues the counter.

Symbols: the product id without its separator, upper case ("BTC-USD" -> "BTCUSD").
"""

from __future__ import annotations

import math
from typing import Any

from dataflows.venue_parser import (
    FrameError,
    VenueParser,
    iso8601_to_ns,
    read_levels,
    read_number,
    require,
)
from engine.batches import BUY, SELL

CONTROL_TYPES = frozenset({"subscriptions", "heartbeat", "status"})
_BOOK_SIDES = {"buy": True, "sell": False}  # True: bid
_AGGRESSOR_OF_MAKER = {"sell": BUY, "buy": SELL}


def normalize_symbol(product_id: str) -> str:
    """ATS symbol of a Coinbase product id.

    >>> normalize_symbol("BTC-USD")
    'BTCUSD'
    """
    return product_id.replace("-", "").upper()


def _time(data: dict[str, Any], what: str) -> int:
    text = require(data, "time", what)
    if type(text) is not str:
        raise FrameError("invalid_field", f"{what} 'time' is {text!r:.40}, not ISO-8601 text")
    try:
        return iso8601_to_ns(text)
    except ValueError as error:
        raise FrameError("invalid_field", f"{what} 'time': {error}") from None


class CoinbaseParser(VenueParser):
    """Parser of Coinbase Exchange websocket frames (see the module docstring for the format)."""

    venue = "coinbase"

    def _parse_message(self, message: Any, ts_recv: int) -> str | None:
        if type(message) is not dict:
            raise FrameError(
                "unknown_stream", f"frame is a JSON {type(message).__name__}, not an object"
            )
        kind = message.get("type")
        if kind in CONTROL_TYPES:
            return str(kind)
        if kind == "error":
            reason = message.get("reason", "")
            raise FrameError(
                "venue_error", f"error frame: {message.get('message')!r:.200} {reason!r:.200}"
            )
        if kind == "l2update":
            self._add_update(message, ts_recv)
        elif kind in ("match", "last_match"):
            self._add_match(message, ts_recv)
        elif kind == "ticker":
            self._add_ticker(message, ts_recv)
        elif kind == "snapshot":
            self._add_snapshot(message, ts_recv)
        else:
            raise FrameError("unknown_stream", f"unknown message type 'type'={kind!r:.80}")
        return None

    def _symbol(self, message: dict[str, Any], what: str) -> str:
        product = require(message, "product_id", what)
        if type(product) is not str or not product:
            raise FrameError("invalid_field", f"{what} 'product_id' is {product!r:.40}")
        return normalize_symbol(product)

    def _add_update(self, message: dict[str, Any], ts_recv: int) -> None:
        symbol = self._symbol(message, "l2update")
        buffer = self._buffer(symbol)
        ts_event = _time(message, "l2update")
        changes = require(message, "changes", "l2update")
        if type(changes) is not list:
            raise FrameError("invalid_field", f"l2update 'changes' is {changes!r:.80}")
        bids: tuple[list[float], list[float]] = ([], [])
        asks: tuple[list[float], list[float]] = ([], [])
        for position, change in enumerate(changes):
            if type(change) is not list or len(change) != 3 or change[0] not in _BOOK_SIDES:
                raise FrameError(
                    "invalid_field",
                    f"l2update change {position} is {change!r:.80}, not [buy|sell, price, size]",
                )
            side = bids if _BOOK_SIDES[change[0]] else asks
            side[0].append(read_number(change[1], f"l2update change {position} price"))
            side[1].append(read_number(change[2], f"l2update change {position} size"))
        self._observe_exchange_time(ts_event, ts_recv)
        update_id = self._next_book_id(symbol)
        buffer.add_delta(ts_event, ts_recv, (update_id, update_id, -1), bids, asks)

    def _add_snapshot(self, message: dict[str, Any], ts_recv: int) -> None:
        symbol = self._symbol(message, "snapshot")
        buffer = self._buffer(symbol)
        bids = read_levels(require(message, "bids", "snapshot"), "bids", "snapshot")
        asks = read_levels(require(message, "asks", "snapshot"), "asks", "snapshot")
        buffer.add_snapshot(
            self._estimated_time(ts_recv), ts_recv, self._next_book_id(symbol), bids, asks
        )

    def _add_match(self, message: dict[str, Any], ts_recv: int) -> None:
        kind = str(message["type"])
        symbol = self._symbol(message, kind)
        buffer = self._buffer(symbol)
        ts_event = _time(message, kind)
        trade_id = require(message, "trade_id", kind)
        if type(trade_id) is not int or not 0 <= trade_id < 2**63:
            raise FrameError("invalid_number", f"{kind} 'trade_id' is {trade_id!r:.40}")
        maker_side = require(message, "side", kind)
        if maker_side not in _AGGRESSOR_OF_MAKER:
            raise FrameError("invalid_field", f"{kind} 'side' is {maker_side!r:.40}")
        price = read_number(require(message, "price", kind), f"{kind} 'price'")
        size = read_number(require(message, "size", kind), f"{kind} 'size'")
        if kind == "match":  # a last_match is an old trade replayed on subscription
            self._observe_exchange_time(ts_event, ts_recv)
        buffer.add_trade(
            ts_event, ts_recv, trade_id, price, size, _AGGRESSOR_OF_MAKER[maker_side]
        )

    def _add_ticker(self, message: dict[str, Any], ts_recv: int) -> None:
        symbol = self._symbol(message, "ticker")
        buffer = self._buffer(symbol)
        bid = read_number(require(message, "best_bid", "ticker"), "ticker 'best_bid'")
        ask = read_number(require(message, "best_ask", "ticker"), "ticker 'best_ask'")
        bid_size = message.get("best_bid_size")
        ask_size = message.get("best_ask_size")
        bid_qty = math.nan if bid_size is None else read_number(bid_size, "ticker 'best_bid_size'")
        ask_qty = math.nan if ask_size is None else read_number(ask_size, "ticker 'best_ask_size'")
        sequence = message.get("sequence", -1)
        if type(sequence) is not int or not -1 <= sequence < 2**63:
            raise FrameError("invalid_number", f"ticker 'sequence' is {sequence!r:.40}")
        if "time" in message:
            ts_event = _time(message, "ticker")
        else:
            ts_event = self._estimated_time(ts_recv)
        buffer.add_quote(ts_event, ts_recv, sequence, (bid, bid_qty), (ask, ask_qty))
