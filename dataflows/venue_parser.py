"""What every venue frame parser shares: the frame loop, per-symbol buffers, dead letters.

A venue parser turns a `CaptureChunk` (raw frames with their receive times) into one columnar
`MarketChunk` per symbol, as `dataflows.binance.BinanceParser` does for Binance. `VenueParser`
holds the loop and the bookkeeping so that a venue only writes how one decoded frame maps onto
trades, book snapshots, book deltas and quotes (`_parse_message`):

- JSON is decoded frame by frame (orjson); a frame that is not JSON is a "malformed_json" dead
  letter, except the plain-text control frames a venue lists in `control_texts` (OKX "pong").
- Two frame kinds that the live feed itself writes into every stream are handled here for all
  venues: feed events `{"feed": kind, "symbol": S, "detail": text}` become `FeedEvent`s, and REST
  envelopes `{"rest": path, "symbol": S, "data": ...}` go to `_parse_rest` (by default an
  "unknown_stream" dead letter naming the endpoint: only venues that define REST shapes take
  them).
- `_parse_message` returns None for a market-data frame or a short name for a control frame
  (subscription acknowledgements, heartbeats, system status, pongs). Control frames are counted
  in `control_counts`, never dead-lettered; `stats` counts frames by outcome, so that market,
  control and dead-lettered frames add up to the frames given.
- A bad frame raises `FrameError(reason, detail)` inside the hook; the loop turns it into a
  `DeadLetter` naming the source and line, attached to the frame's symbol when the hook had
  already named it (`_buffer`) and returned beside the chunks otherwise. A hook validates a whole
  frame before appending anything, so a dead-lettered frame leaves no partial rows behind.
- Times are int nanoseconds. Frames without an exchange time (Coinbase and Kraken book
  snapshots, Kraken tickers, feed events) get `ts_recv` plus the latest observed
  (exchange time - receive time) offset of this parser, 0 before any exchange time was seen.
- Book continuity for venues without update ids: `_next_book_id` gives per-symbol synthetic ids
  (a snapshot takes the next id n as its lastUpdateId, each later update U = u = n + 1, ...), so
  the Binance spot rule U == previous u + 1 of `dataflows.book.BookSynchronizer` holds; a new
  snapshot continues the counter. Updates of these venues carry pu = -1, so that the book, which
  picks its procedure from the first update (pu >= 0 is Binance futures), takes the spot one.

The helpers that read exact times (`decimal_seconds_to_ns`, `iso8601_to_ns`, `ms_text_to_ns`)
never go through floats.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, ClassVar

import orjson

from dataflows.capture import (
    INT64_MAX,
    CaptureChunk,
    ParseResult,
    StreamParser,
    SymbolBuffers,
    payload_text,
)
from engine.batches import DeadLetter, FeedEvent

PARSE_STAGE = "parse_frames"
NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000
FEED_EVENT_KINDS = frozenset({
    "connected", "disconnected", "rollover", "stale", "fresh", "rest_fallback_started",
    "rest_fallback_stopped", "gap_filled", "gap_unfilled", "resync_snapshot",
})
_DECIMAL_SECONDS = re.compile(r"(\d{1,11})(?:\.(\d{1,18}))?")
_ISO8601 = re.compile(
    r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)
_EPOCH = dt.date(1970, 1, 1)


class FrameError(Exception):
    """A frame is bad: carries the dead-letter reason and detail (parser control flow)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------ exact number readers


def decimal_seconds_to_ns(text: str) -> int:
    """Unix time in decimal seconds ("1618678133.366461") as int ns, without float rounding.

    Digits past the ninth decimal are cut (they are below a nanosecond).

    >>> decimal_seconds_to_ns("1618678133.366461")
    1618678133366461000
    >>> decimal_seconds_to_ns("1652459224")
    1652459224000000000
    """
    match = _DECIMAL_SECONDS.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r:.40} is not a decimal unix time in seconds")
    seconds, fraction = match.groups()
    return int(seconds) * NS_PER_SECOND + int((fraction or "")[:9].ljust(9, "0"))


def iso8601_to_ns(text: str) -> int:
    """An ISO-8601 UTC time ("2021-04-17T16:43:37.075687Z") as int ns, exactly.

    >>> iso8601_to_ns("2021-04-17T16:43:37.075687Z")
    1618677817075687000
    >>> iso8601_to_ns("1970-01-01T01:00:00+01:00")
    0
    """
    match = _ISO8601.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r:.40} is not an ISO-8601 time like 2021-04-17T16:43:37.07Z")
    date_text, hours, minutes, seconds, fraction, zone = match.groups()
    days = (dt.date.fromisoformat(date_text) - _EPOCH).days
    if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 60:
        raise ValueError(f"{text!r:.40} has an impossible time of day")
    total = ((days * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        total -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return total * NS_PER_SECOND + int((fraction or "").ljust(9, "0"))


def ms_text_to_ns(value: object, name: str) -> int:
    """A millisecond unix time given as JSON text or integer ("1652459225464") as int ns.

    Raises `FrameError("invalid_number")` naming the field when it is anything else.
    """
    if type(value) is str and value.isdigit() and len(value) <= 13:
        return int(value) * NS_PER_MS
    if type(value) is int and 0 <= value <= INT64_MAX // NS_PER_MS:
        return value * NS_PER_MS
    raise FrameError("invalid_number", f"{name} is {value!r:.40}, not a millisecond time")


def read_number(value: object, name: str) -> float:
    """A JSON number or decimal text as float; `FrameError("invalid_number")` otherwise.

    NaN and negative values pass: `dataflows.validate` and the book judge them.
    """
    if type(value) is bool:
        raise FrameError("invalid_number", f"{name} is {value!r}, not a number")
    try:
        return float(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise FrameError("invalid_number", f"{name} is {value!r:.40}, not a number") from None


def read_levels(
    levels: object, name: str, what: str, min_width: int = 2
) -> tuple[list[float], list[float]]:
    """Prices and sizes of a `[[price, size, ...], ...]` list (extra entries are ignored)."""
    if type(levels) is not list:
        raise FrameError(
            "invalid_field", f"{what}: {name!r} is {type(levels).__name__}, not a list of levels"
        )
    if all(type(level) is list and len(level) >= min_width for level in levels):
        try:  # fast path; the loop below finds and names what is wrong
            return [float(level[0]) for level in levels], [float(level[1]) for level in levels]
        except (ValueError, TypeError):
            pass
    prices: list[float] = []
    sizes: list[float] = []
    for position, level in enumerate(levels):
        if type(level) is not list or len(level) < min_width:
            raise FrameError(
                "invalid_field",
                f"{what}: {name!r} level {position} is {level!r:.80}, not [price, size, ...]",
            )
        prices.append(read_number(level[0], f"{what}: {name!r} level {position} price"))
        sizes.append(read_number(level[1], f"{what}: {name!r} level {position} size"))
    return prices, sizes


def require(data: dict[str, Any], key: str, what: str) -> Any:
    """`data[key]`, or `FrameError("missing_field")` naming the key and the frame kind."""
    try:
        return data[key]
    except KeyError:
        raise FrameError("missing_field", f"{what} has no {key!r}") from None


# ------------------------------------------------------------------ buffers and base parser


class VenueBuffers(SymbolBuffers):
    """`SymbolBuffers` plus feed events and appenders that keep the column lists aligned."""

    def __init__(self) -> None:
        super().__init__()
        self.feed_events: list[FeedEvent] = []

    def add_trade(
        self, ts_event: int, ts_recv: int, trade_id: int, price: float, qty: float, side: int
    ) -> None:
        self.trade_event.append(ts_event)
        self.trade_recv.append(ts_recv)
        self.trade_id.append(trade_id)
        self.trade_price.append(price)
        self.trade_qty.append(qty)
        self.trade_side.append(side)

    def add_delta(
        self,
        ts_event: int,
        ts_recv: int,
        ids: tuple[int, int, int],
        bids: tuple[list[float], list[float]],
        asks: tuple[list[float], list[float]],
    ) -> None:
        """One book update: `ids` is (U, u, pu); rows are its bids then its asks."""
        self.delta_event.append(ts_event)
        self.delta_recv.append(ts_recv)
        self.delta_first.append(ids[0])
        self.delta_final.append(ids[1])
        self.delta_prev.append(ids[2])
        self.delta_bid_counts.append(len(bids[0]))
        self.delta_ask_counts.append(len(asks[0]))
        self.delta_price += bids[0]
        self.delta_price += asks[0]
        self.delta_qty += bids[1]
        self.delta_qty += asks[1]

    def add_snapshot(
        self,
        ts_event: int,
        ts_recv: int,
        last_update_id: int,
        bids: tuple[list[float], list[float]],
        asks: tuple[list[float], list[float]],
    ) -> None:
        self.snapshot_event.append(ts_event)
        self.snapshot_recv.append(ts_recv)
        self.snapshot_id.append(last_update_id)
        self.snapshot_bid_counts.append(len(bids[0]))
        self.snapshot_ask_counts.append(len(asks[0]))
        self.snapshot_price += bids[0]
        self.snapshot_price += asks[0]
        self.snapshot_qty += bids[1]
        self.snapshot_qty += asks[1]

    def add_quote(
        self,
        ts_event: int,
        ts_recv: int,
        update_id: int,
        bid: tuple[float, float],
        ask: tuple[float, float],
    ) -> None:
        """A best bid/ask: `bid` and `ask` are (price, size); an unknown size is NaN."""
        self.quote_event.append(ts_event)
        self.quote_recv.append(ts_recv)
        self.quote_update_id.append(update_id)
        self.quote_bid.append(bid[0])
        self.quote_bid_qty.append(bid[1])
        self.quote_ask.append(ask[0])
        self.quote_ask_qty.append(ask[1])


class VenueParser(StreamParser):
    """Stateful parser of one venue's frames into per-symbol columnar `MarketChunk`s.

    One instance parses one stream (a capture, or one live connection) in arrival order;
    `sequence` of the chunks increases by one per symbol across calls. Subclasses implement
    `_parse_message` (and `_parse_rest` if the venue has REST shapes). Dead-letter reasons used
    here: "malformed_json", "unknown_stream", "missing_field", "invalid_number", "invalid_field";
    venues add their own ("venue_error" for error frames the venue sends).
    """

    venue: ClassVar[str] = ""
    control_texts: ClassVar[frozenset[bytes]] = frozenset()

    def __init__(self, symbol_hint: str | None = None) -> None:
        self.symbol_hint = symbol_hint.upper() if symbol_hint else None
        self.offset_ns = 0  # latest observed exchange time - receive time
        self.symbols_seen: dict[str, None] = {}  # insertion-ordered set
        self.stats: dict[str, int] = dict.fromkeys(
            ("frames", "market_frames", "control_frames", "dead_letters"), 0
        )
        self.control_counts: dict[str, int] = {}
        self._sequences: dict[str, int] = {}
        self._book_ids: dict[str, int] = {}
        self._live_frames = 0
        self._buffers: dict[str, VenueBuffers] = {}
        self._frame_symbol: str | None = None

    # ---------------------------------------------------------------- public

    def parse_lines(self, lines: CaptureChunk, source_name: str | None = None) -> ParseResult:
        """Parse a chunk of lines into one `MarketChunk` per symbol (in order of appearance).

        Dead letters name their line as "<source_name or lines.source>:line N".
        """
        source = source_name or lines.source
        self._buffers = {}
        orphans: list[DeadLetter] = []
        stats = self.stats
        frames, receive_times, numbers = lines.frames, lines.ts_recv, lines.line_numbers
        for index in range(len(frames)):
            raw = frames[index]
            ts_recv = receive_times[index]
            self._frame_symbol = None
            stats["frames"] += 1
            try:
                control = self._parse_raw(raw, ts_recv)
            except FrameError as error:
                stats["dead_letters"] += 1
                letter = DeadLetter(
                    stage=PARSE_STAGE,
                    reason=error.reason,
                    detail=f"{source} line {numbers[index]}: {error.detail}",
                    source=f"{source}:line {numbers[index]}",
                    symbol=self._frame_symbol,
                    ts_recv=ts_recv,
                    payload=payload_text(raw),
                )
                if self._frame_symbol is None:
                    orphans.append(letter)
                else:
                    self._buffer(self._frame_symbol).dead_letters.append(letter)
                continue
            if control is None:
                stats["market_frames"] += 1
            else:
                stats["control_frames"] += 1
                self.control_counts[control] = self.control_counts.get(control, 0) + 1
        buffers, self._buffers = self._buffers, {}
        return ParseResult(
            chunks=[self._chunk(symbol, buffer) for symbol, buffer in buffers.items()],
            dead_letters=orphans,
        )

    # ---------------------------------------------------------------- hooks

    def _parse_message(self, message: Any, ts_recv: int) -> str | None:
        """Handle one decoded venue frame: None for market data, a control name otherwise."""
        raise NotImplementedError

    def _parse_rest(self, endpoint: str, symbol: str, data: Any, ts_recv: int) -> str | None:
        """Handle one REST envelope; venues without REST shapes dead-letter it."""
        raise FrameError(
            "unknown_stream", f"{self.venue} parser takes no REST responses ({endpoint!r:.80})"
        )

    # ---------------------------------------------------------------- helpers for hooks

    def _buffer(self, symbol: str) -> VenueBuffers:
        """The buffer of `symbol` in this call; also attributes a later dead letter to it."""
        self._frame_symbol = symbol
        buffer = self._buffers.get(symbol)
        if buffer is None:
            buffer = self._buffers[symbol] = VenueBuffers()
            self.symbols_seen[symbol] = None
        return buffer

    def _observe_exchange_time(self, ts_event: int, ts_recv: int) -> None:
        self.offset_ns = ts_event - ts_recv

    def _estimated_time(self, ts_recv: int) -> int:
        return ts_recv + self.offset_ns

    def _next_book_id(self, symbol: str) -> int:
        """The next synthetic book update id of `symbol` (1, 2, ...; see module docs)."""
        value = self._book_ids.get(symbol, 0) + 1
        self._book_ids[symbol] = value
        return value

    # ---------------------------------------------------------------- internals

    def _parse_raw(self, raw: bytes, ts_recv: int) -> str | None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            text = raw.strip()
            if text in self.control_texts:
                return text.decode()
            raise FrameError("malformed_json", f"invalid JSON: {error}") from None
        if type(message) is dict:
            if "feed" in message:
                self._add_feed_event(message, ts_recv)
                return None
            if "rest" in message:
                endpoint = message["rest"]
                symbol = message.get("symbol")
                if type(endpoint) is not str or type(symbol) is not str or not symbol:
                    raise FrameError(
                        "missing_field", "REST envelope needs string 'rest' and 'symbol'"
                    )
                return self._parse_rest(endpoint, symbol.upper(), message.get("data"), ts_recv)
        return self._parse_message(message, ts_recv)

    def _add_feed_event(self, message: dict[str, Any], ts_recv: int) -> None:
        kind = message["feed"]
        symbol = message.get("symbol")
        detail = message.get("detail", "")
        if type(symbol) is not str or not symbol:
            raise FrameError("missing_field", f"feed event {kind!r:.40} has no 'symbol'")
        self._frame_symbol = symbol.upper()
        if kind not in FEED_EVENT_KINDS:
            raise FrameError("invalid_field", f"feed event kind {kind!r:.40} is not known")
        if type(detail) is not str:
            raise FrameError("invalid_field", f"feed event 'detail' is {detail!r:.40}")
        event = FeedEvent(symbol.upper(), self._estimated_time(ts_recv), ts_recv, kind, detail)
        self._buffer(symbol.upper()).feed_events.append(event)
