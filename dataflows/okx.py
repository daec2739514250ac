"""OKX v5 public websocket frames (channels books, trades, tickers) to columns.

Data frames are `{"arg": {"channel": C, "instId": I}, "action"?: A, "data": [item, ...]}`:
- `books` (also `books-l2-tbt`, `books50-l2-tbt`), `action` "snapshot" or "update"; an item is
  {asks, bids, ts, checksum, seqId?, prevSeqId?} with levels [price, size, "0", orders]
  (the third entry is deprecated). Size 0 removes a level.
- `trades` (also `trades-all`): items {instId, tradeId, px, sz, side, ts}; `side` is the
  taker's side, so "buy" is a buyer-initiated trade (+1).
- `tickers`: items {bidPx, bidSz, askPx, askSz, ts, ...} -> best bid/ask quotes (update_id -1).
`ts` is milliseconds, as text.

Control frames, counted and not dead-lettered: `{"event": "subscribe"|"unsubscribe"|"login"|
"channel-conn-count", ...}` and the plain-text "pong"; `{"event": "error", ...}` is a
"venue_error" dead letter with the venue's code and message.

Book continuity: where the venue sends `seqId`/`prevSeqId` the ids are the venue's: a snapshot's
lastUpdateId is its seqId, an update has U = prevSeqId + 1 and u = seqId, so the spot rule
U == previous u + 1 of `dataflows.book.BookSynchronizer` holds; pu is -1 (not prevSeqId), since
the book takes pu >= 0 for Binance's futures procedure. An update with no levels and
seqId == prevSeqId is OKX's keep-alive and is counted as control ("book_keepalive").
Without seqId (feeds before 2022, as in the bundled capture) the parser numbers the book itself
per instrument as described in `dataflows.venue_parser`.

Checksums are not verified here: that needs the book with the venue's text prices, which the
parser does not keep (the synchronized book holds floats). `okx_checksum` computes the venue's
CRC-32 from text levels for a stage that keeps them; the tests check it against the capture.

Symbols: spot pairs lose their separator ("BTC-USDT" -> "BTCUSDT"); derivatives keep what follows
the pair as a suffix so they never collide with spot ("UNI-USD-SWAP" -> "UNIUSD-SWAP",
"BTC-USD-220527" -> "BTCUSD-220527").
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from dataflows.venue_parser import (
    FrameError,
    VenueParser,
    ms_text_to_ns,
    read_levels,
    read_number,
    require,
)
from engine.batches import BUY, SELL

BOOK_CHANNELS = frozenset({"books", "books-l2-tbt", "books50-l2-tbt"})
TRADE_CHANNELS = frozenset({"trades", "trades-all"})
CONTROL_EVENTS = frozenset({"subscribe", "unsubscribe", "login", "channel-conn-count"})
_TAKER_SIDES = {"buy": BUY, "sell": SELL}
_CHECKSUM_LEVELS = 25


def normalize_symbol(inst_id: str) -> str:
    """ATS symbol of an OKX instrument id.

    >>> normalize_symbol("BTC-USDT"), normalize_symbol("UNI-USD-SWAP")
    ('BTCUSDT', 'UNIUSD-SWAP')
    >>> normalize_symbol("BTC-USD-220527")
    'BTCUSD-220527'
    """
    parts = inst_id.upper().split("-")
    return "-".join(["".join(parts[:2]), *parts[2:]])


def okx_checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """OKX's signed CRC-32 of the top 25 levels (bids best first, asks best first), as text.

    The string is bid1:size1:ask1:size1:bid2:... (a missing level on one side is skipped).
    """
    parts: list[str] = []
    for index in range(_CHECKSUM_LEVELS):
        if index < len(bids):
            parts += bids[index]
        if index < len(asks):
            parts += asks[index]
    value = zlib.crc32(":".join(parts).encode())
    return value - 2**32 if value >= 2**31 else value


def _int_or_none(item: dict[str, Any], key: str, what: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if type(value) is not int or not -1 <= value < 2**63:
        raise FrameError("invalid_number", f"{what} {key!r} is {value!r:.40}")
    return value


class OkxParser(VenueParser):
    """Parser of OKX v5 public websocket frames (see the module docstring for the format)."""

    venue = "okx"
    control_texts = frozenset({b"pong"})

    def _parse_message(self, message: Any, ts_recv: int) -> str | None:
        if type(message) is not dict:
            raise FrameError(
                "unknown_stream", f"frame is a JSON {type(message).__name__}, not an object"
            )
        event = message.get("event")
        if event is not None:
            if event in CONTROL_EVENTS:
                return str(event)
            if event == "error":
                raise FrameError(
                    "venue_error",
                    f"error frame: code {message.get('code')!r:.20} {message.get('msg')!r:.200}",
                )
            raise FrameError("unknown_stream", f"unknown event {event!r:.80}")
        arg = message.get("arg")
        if type(arg) is not dict:
            keys = ", ".join(list(message)[:8])
            raise FrameError("unknown_stream", f"frame with keys [{keys}] has no 'arg' object")
        channel = arg.get("channel")
        inst_id = arg.get("instId")
        if type(inst_id) is not str or not inst_id:
            raise FrameError("missing_field", f"{channel!r:.40} frame has no 'instId' in 'arg'")
        if channel not in BOOK_CHANNELS and channel not in TRADE_CHANNELS and channel != "tickers":
            raise FrameError("unknown_stream", f"unknown channel {channel!r:.80}")
        symbol = normalize_symbol(inst_id)
        self._buffer(symbol)
        items = require(message, "data", f"{channel} frame")
        if type(items) is not list or not all(type(item) is dict for item in items):
            raise FrameError("invalid_field", f"{channel} 'data' is {items!r:.80}, not objects")
        if channel in TRADE_CHANNELS:
            self._add_trades(symbol, items, ts_recv)
        elif channel == "tickers":
            self._add_tickers(symbol, items, ts_recv)
        else:
            return self._add_book(symbol, message.get("action"), items, ts_recv)
        return None

    def _add_trades(self, symbol: str, items: list[dict[str, Any]], ts_recv: int) -> None:
        rows = []
        for item in items:
            ts_event = ms_text_to_ns(require(item, "ts", "trade"), "trade 'ts'")
            trade_text = require(item, "tradeId", "trade")
            if type(trade_text) is not str or not trade_text.isdigit() or len(trade_text) > 18:
                raise FrameError("invalid_number", f"trade 'tradeId' is {trade_text!r:.40}")
            side = require(item, "side", "trade")
            if side not in _TAKER_SIDES:
                raise FrameError("invalid_field", f"trade 'side' is {side!r:.40}")
            price = read_number(require(item, "px", "trade"), "trade 'px'")
            size = read_number(require(item, "sz", "trade"), "trade 'sz'")
            rows.append((ts_event, int(trade_text), price, size, _TAKER_SIDES[side]))
        buffer = self._buffer(symbol)
        for ts_event, trade_id, price, size, aggressor in rows:
            self._observe_exchange_time(ts_event, ts_recv)
            buffer.add_trade(ts_event, ts_recv, trade_id, price, size, aggressor)

    def _add_tickers(self, symbol: str, items: list[dict[str, Any]], ts_recv: int) -> None:
        rows = []
        for item in items:
            ts_event = ms_text_to_ns(require(item, "ts", "ticker"), "ticker 'ts'")
            bid = tuple(
                read_number(require(item, key, "ticker"), f"ticker {key!r}")
                for key in ("bidPx", "bidSz")
            )
            ask = tuple(
                read_number(require(item, key, "ticker"), f"ticker {key!r}")
                for key in ("askPx", "askSz")
            )
            rows.append((ts_event, (bid[0], bid[1]), (ask[0], ask[1])))
        buffer = self._buffer(symbol)
        for ts_event, bid_pair, ask_pair in rows:
            buffer.add_quote(ts_event, ts_recv, -1, bid_pair, ask_pair)

    def _add_book(
        self, symbol: str, action: object, items: list[dict[str, Any]], ts_recv: int
    ) -> str | None:
        if action not in ("snapshot", "update"):
            raise FrameError("invalid_field", f"books 'action' is {action!r:.40}")
        what = f"books {action}"
        parsed = []
        for item in items:
            ts_event = ms_text_to_ns(require(item, "ts", what), f"{what} 'ts'")
            bids = read_levels(require(item, "bids", what), "bids", what)
            asks = read_levels(require(item, "asks", what), "asks", what)
            sequence = _int_or_none(item, "seqId", what)
            previous = _int_or_none(item, "prevSeqId", what)
            parsed.append((ts_event, bids, asks, sequence, previous))
        buffer = self._buffer(symbol)
        keepalives = 0
        for ts_event, bids, asks, sequence, previous in parsed:
            self._observe_exchange_time(ts_event, ts_recv)
            if action == "snapshot":
                snapshot_id = sequence if sequence is not None else self._next_book_id(symbol)
                buffer.add_snapshot(ts_event, ts_recv, snapshot_id, bids, asks)
                continue
            if sequence is not None and previous is not None:
                if sequence == previous and not bids[0] and not asks[0]:
                    keepalives += 1
                    continue
                ids = (previous + 1, sequence, -1)
            else:
                update_id = self._next_book_id(symbol)
                ids = (update_id, update_id, -1)
            buffer.add_delta(ts_event, ts_recv, ids, bids, asks)
        return "book_keepalive" if keepalives and keepalives == len(parsed) else None
