"""Binance frame parser for spot and USD-M futures (the same parser serves live mode and replay).

A raw capture file holds one frame per line, `<local receive time ns> <JSON frame>`, gzip or
plain text. `read_capture` (from `dataflows.capture`, re-exported here) cuts a file into
`CaptureChunk`s of raw lines; `BinanceParser.parse_lines` turns one chunk into one columnar
`MarketChunk` per symbol. The work is split by concept:
- `dataflows.binance_streams`: which kind a frame is (combined-stream names such as
  `btcusdt@depth@100ms`, bare frames by their `e` field or shape) and its symbol;
- `dataflows.binance_frames`: the fields of each websocket kind (trade, aggTrade, bookTicker,
  depthUpdate, snapshots and partial books, markPriceUpdate, kline);
- `dataflows.binance_rest`: the live feed's own frames, REST envelopes and feed events;
- `dataflows.binance_fields`: checked readers of single fields and the clock estimate.

Partial-book streams (`<sym>@depth<5|10|20>[@speed]`) become book snapshots of the stream's
symbol, one per frame with its update id: each frame is a complete top-N book. A bare futures
partial-book frame (no stream name) cannot be told from a diff-depth update and is read as one,
so record partial books through combined streams. Subscription replies are control frames,
counted and never dead-lettered.

JSON is decoded frame by frame, so the loop over frames is Python, but it only appends to
per-symbol lists that become NumPy arrays once per chunk. Bad lines never raise and are never
dropped: they become `DeadLetter`s, attached to the symbol's `MarketChunk` when the symbol is
known and returned beside the chunks otherwise; a bad item of a list frame (one symbol of
`!markPrice@arr`, one trade of a REST response) is a dead letter of its own and the other items
are kept. `BinanceParser.stats` accounts for every frame: "frames" = "market_frames" +
"control_frames" + "dead_letters" (frames rejected whole); "rejected_items" counts the items
dead-lettered on their own. Prices or sizes that parse as numbers but are NaN or negative pass
through: `validate.py` judges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from dataflows.binance_fields import MS_MAX, NS_PER_MS, ExchangeClock, FrameError
from dataflows.binance_frames import (
    add_agg_trade,
    add_depth,
    add_kline,
    add_mark,
    add_partial_depth,
    add_quote,
    add_snapshot,
    add_trade,
)
from dataflows.binance_rest import add_feed_event, add_rest_item, rest_endpoint, rest_items
from dataflows.binance_streams import (
    AGG_TRADE,
    CONTROL,
    DEPTH,
    FEED,
    KLINE,
    LIST_KINDS,
    MARK,
    PARTIAL_DEPTH,
    QUOTE,
    REST,
    TRADE,
    FrameClassifier,
    stream_kind,
)
from dataflows.capture import (
    DEFAULT_CHUNK_LINES,
    PAYLOAD_LIMIT,
    READ_STAGE,
    CaptureChunk,
    ParseResult,
    StreamParser,
    SymbolBuffers,
    payload_text,
    read_capture,
)
from engine.batches import DeadLetter

__all__ = [
    "DEFAULT_CHUNK_LINES",
    "PARSE_STAGE",
    "PAYLOAD_LIMIT",
    "READ_STAGE",
    "BinanceParser",
    "CaptureChunk",
    "ParseResult",
    "parse_capture",
    "read_capture",
    "stream_kind",
]

PARSE_STAGE = "parse_frames"


class BinanceParser(StreamParser):
    """Stateful parser of Binance frames into columnar per-symbol `MarketChunk`s.

    One instance parses one stream (one capture, or one live connection) in arrival order:
    - `sequence` of the chunks increases by one per symbol across calls to `parse_lines`;
    - trades and agg trades take `ts_event` from `T` (trade time); depth updates, futures book
      tickers, mark prices, klines and futures snapshots from `E` (event time); REST rows from
      their `time`; all milliseconds turned into nanoseconds;
    - frames without exchange time (spot bookTicker, spot snapshots, spot partial books, feed
      events) get `ts_recv` plus the latest observed clock offset `E_ns - ts_recv` of any
      earlier frame of this instance (0 before the first frame with `E`); such quote times
      never step backwards per symbol (see `ExchangeClock`);
    - a bare depth snapshot carries no symbol: it belongs to `symbol_hint` when given, else to
      the only symbol seen so far; with none or several it is dead-lettered
      ("snapshot_symbol_unknown"). Enveloped REST snapshots and partial books name theirs;
    - trade `m` (buyer is maker) true means a seller-initiated trade: side -1, else +1.

    Dead-letter reasons: "malformed_json", "unknown_stream" (an unknown stream, event type, REST
    endpoint or frame shape, named in the detail), "missing_field", "invalid_number" (a numeric
    field that is not a number or does not fit int64), "invalid_field" (a non-numeric field of
    the wrong type or value, such as `m` not a bool, a level not `[price, qty]` or an unknown feed
    event kind), "venue_error" (an error reply, or a REST error body `{"code", "msg"}`) and
    "snapshot_symbol_unknown".
    """

    def __init__(self, symbol_hint: str | None = None) -> None:
        self.symbol_hint = symbol_hint.upper() if symbol_hint else None
        self.clock = ExchangeClock()
        self.symbols_seen: dict[str, None] = {}  # insertion-ordered set
        self.stats: dict[str, int] = dict.fromkeys(
            ("frames", "market_frames", "control_frames", "dead_letters", "rejected_items"), 0
        )
        self.control_counts: dict[str, int] = {}
        self._sequences: dict[str, int] = {}
        self._classifier = FrameClassifier()
        self._live_frames = 0

    @property
    def offset_ns(self) -> int:
        """The latest observed exchange-minus-receive clock offset of the stream."""
        return self.clock.offset_ns

    # ---------------------------------------------------------------- public

    def parse_lines(self, lines: CaptureChunk, source_name: str | None = None) -> ParseResult:
        """Parse a chunk of lines into one `MarketChunk` per symbol (in order of appearance).

        Dead letters name their line as "<source_name or lines.source>:line N".
        """
        source = source_name or lines.source
        buffers: dict[str, SymbolBuffers] = {}
        orphans: list[DeadLetter] = []
        frames = lines.frames
        receive_times = lines.ts_recv
        clock = self.clock
        classify = self._classifier.classify
        control_frames = 0
        dead_frames = 0
        for index in range(len(frames)):
            raw = frames[index]
            ts_recv = receive_times[index]
            symbol: str | None = None
            try:
                try:
                    message = orjson.loads(raw)
                except orjson.JSONDecodeError as error:
                    raise FrameError("malformed_json", f"invalid JSON: {error}") from None
                kind, symbol, data = classify(message)
                if kind in LIST_KINDS:
                    self._parse_list(kind, symbol, data, ts_recv, buffers, orphans,
                                     (source, lines.line_numbers[index], raw))
                    continue
                if kind == CONTROL:
                    control_frames += 1
                    continue
                event_ms = data.get("E")
                if event_ms is not None:  # inline `clock.observe`: most frames carry E
                    if type(event_ms) is not int or not 0 <= event_ms <= MS_MAX:
                        clock.observe(event_ms, ts_recv)  # raises, naming the bad value
                    clock.offset_ns = event_ms * NS_PER_MS - ts_recv
                if symbol is None:
                    symbol = self._snapshot_symbol()
                buffer = buffers.get(symbol)
                if buffer is None:
                    buffer = buffers[symbol] = SymbolBuffers()
                    self.symbols_seen[symbol] = None
                if kind == QUOTE:
                    add_quote(buffer, data, ts_recv, symbol, clock)
                elif kind == TRADE:
                    add_trade(buffer, data, ts_recv)
                elif kind == DEPTH:
                    add_depth(buffer, data, ts_recv)
                elif kind == AGG_TRADE:
                    add_agg_trade(buffer, data, ts_recv)
                elif kind == MARK:
                    add_mark(buffer, data, ts_recv)
                elif kind == KLINE:
                    add_kline(buffer, data, ts_recv)
                elif kind == PARTIAL_DEPTH:
                    add_partial_depth(buffer, data, ts_recv, clock)
                elif kind == FEED:
                    add_feed_event(buffer, data, ts_recv, symbol, clock)
                else:
                    add_snapshot(buffer, data, ts_recv, clock)
            except FrameError as error:
                dead_frames += 1
                where = (source, lines.line_numbers[index], raw)
                self._reject(where, ts_recv, error, symbol, buffers, orphans)
        stats = self.stats
        stats["frames"] += len(frames)
        stats["market_frames"] += len(frames) - control_frames - dead_frames
        stats["control_frames"] += control_frames
        stats["dead_letters"] += dead_frames
        if control_frames:
            replies = self.control_counts.get("subscription_reply", 0)
            self.control_counts["subscription_reply"] = replies + control_frames
        return ParseResult(
            chunks=[self._chunk(symbol, buffer) for symbol, buffer in buffers.items()],
            dead_letters=orphans,
        )

    def _snapshot_symbol(self) -> str:
        if self.symbol_hint:
            return self.symbol_hint
        if len(self.symbols_seen) == 1:
            return next(iter(self.symbols_seen))
        seen = ", ".join(self.symbols_seen) or "none"
        raise FrameError(
            "snapshot_symbol_unknown",
            f"depth snapshot has no symbol and no symbol_hint was given; symbols seen: {seen}",
        )

    # ---------------------------------------------------------------- list frames

    def _parse_list(
        self,
        kind: str,
        symbol: str | None,
        data: Any,
        ts_recv: int,
        buffers: dict[str, SymbolBuffers],
        orphans: list[DeadLetter],
        where: tuple[str, int, bytes],
    ) -> None:
        """Rows of a frame that holds a list (mark price array, REST response), item by item."""
        if kind == REST:
            endpoint = rest_endpoint(data)
            items = rest_items(endpoint, symbol, data)
        else:
            items = [(_mark_symbol(item), item) for item in data]
        for position, (item_symbol, item) in enumerate(items):
            try:
                if item_symbol is None:
                    raise FrameError("missing_field", "the item names no symbol")
                buffer = buffers.get(item_symbol)
                if buffer is None:
                    buffer = buffers[item_symbol] = SymbolBuffers()
                    self.symbols_seen[item_symbol] = None
                if kind == REST:
                    add_rest_item(endpoint, buffer, item, ts_recv, item_symbol, self.clock)
                elif type(item) is dict:  # it names a symbol, so it is an object
                    add_mark(buffer, item, ts_recv)
                    self.clock.observe(item["E"], ts_recv)
            except FrameError as error:
                self.stats["rejected_items"] += 1
                error.detail = f"item {position}: {error.detail}"
                self._reject(where, ts_recv, error, item_symbol, buffers, orphans)

    def _reject(
        self,
        where: tuple[str, int, bytes],
        ts_recv: int,
        error: FrameError,
        symbol: str | None,
        buffers: dict[str, SymbolBuffers],
        orphans: list[DeadLetter],
    ) -> None:
        source, line_number, raw = where
        letter = DeadLetter(
            stage=PARSE_STAGE,
            reason=error.reason,
            detail=f"{source} line {line_number}: {error.detail}",
            source=f"{source}:line {line_number}",
            symbol=symbol,
            ts_recv=ts_recv,
            payload=payload_text(raw),
        )
        if symbol is None:
            orphans.append(letter)
            return
        buffer = buffers.get(symbol)
        if buffer is None:
            buffer = buffers[symbol] = SymbolBuffers()
            self.symbols_seen[symbol] = None
        buffer.dead_letters.append(letter)



def _mark_symbol(item: object) -> str | None:
    named = item.get("s") if type(item) is dict else None
    return named.upper() if type(named) is str and named else None


def parse_capture(
    paths: Iterable[str | Path],
    *,
    symbol_hint: str | None = None,
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    parser: BinanceParser | None = None,
) -> Iterator[ParseResult]:
    """Read and parse capture files in order with one parser (so files join as one stream).

    Reader dead letters (bad timestamps, truncated files) come back in `dead_letters` of the
    result of the chunk they belong to.
    """
    parser = parser or BinanceParser(symbol_hint)
    for path in paths:
        for lines, read_letters in read_capture(path, chunk_lines):
            chunks, parse_letters = parser.parse_lines(lines)
            yield ParseResult(chunks, read_letters + parse_letters)
