"""Binance raw capture reader and frame parser (the same parser serves live mode and replay).

A raw capture file holds one frame per line, `<local receive time ns> <JSON frame>`, gzip or
plain text. Frames are Binance combined-stream envelopes (`{"stream": "btcusdt@trade",
"data": {...}}`) for `@trade`, `@depth[@100ms|@0ms|...]` and `@bookTicker`, bare frames keyed on
their `e` field (spot `bookTicker` has no `e`, it is recognised by its `u,s,b,B,a,A` keys), and
bare REST depth snapshots `{"lastUpdateId": ..., "bids": [...], "asks": [...]}`.

`read_capture` (from `dataflows.capture`, re-exported here) cuts a file into `CaptureChunk`s of
raw lines; `BinanceParser.parse_lines` turns one chunk into one columnar `MarketChunk` per
symbol. JSON has to be decoded frame by frame, so the loop
over frames is Python, but it only appends to per-symbol lists that become NumPy arrays once per
chunk. Bad lines never raise and are never dropped: they become `DeadLetter`s, attached to the
symbol's `MarketChunk` when the symbol is known and returned beside the chunks otherwise.
Prices or sizes that parse as numbers but are NaN or negative pass through: `validate.py`
judges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from dataflows.capture import (
    DEFAULT_CHUNK_LINES,
    INT64_MAX,
    PAYLOAD_LIMIT,
    READ_STAGE,
    CaptureChunk,
    SymbolBuffers,
    payload_text,
    read_capture,
)
from engine.batches import DeadLetter, MarketChunk

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
]

PARSE_STAGE = "parse_frames"
NS_PER_MS = 1_000_000
_MS_MAX = INT64_MAX // NS_PER_MS  # largest millisecond time that fits in int64 nanoseconds

_TRADE = "trade"
_DEPTH = "depth"
_QUOTE = "bookTicker"
_SNAPSHOT = "snapshot"
_DEPTH_SPEEDS = frozenset({"", "@0ms", "@100ms", "@250ms", "@500ms", "@1000ms"})
_BARE_KINDS = {"trade": _TRADE, "depthUpdate": _DEPTH, "bookTicker": _QUOTE}


def _is_int64(value: object) -> bool:
    """True for a JSON integer (not a bool) that fits a signed 64-bit column."""
    return type(value) is int and -INT64_MAX <= value <= INT64_MAX


def _is_ms_time(value: object) -> bool:
    """True for an integer millisecond time whose nanosecond value fits int64."""
    return type(value) is int and 0 <= value <= _MS_MAX




class _FrameError(Exception):
    """A frame is bad: carries the dead-letter reason and detail (internal control flow)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _parse_levels(levels: object, name: str, what: str) -> tuple[list[float], list[float]]:
    """Prices and quantities of a `[[price, qty], ...]` list; `_FrameError` says what is wrong."""
    if type(levels) is not list:
        raise _FrameError(
            "invalid_field", f"{what}: {name!r} is {type(levels).__name__}, not a list of levels"
        )
    try:
        return [float(level[0]) for level in levels], [float(level[1]) for level in levels]
    except (ValueError, TypeError, IndexError, KeyError):
        pass
    for position, level in enumerate(levels):
        if type(level) is not list or len(level) != 2:
            raise _FrameError(
                "invalid_field", f"{what}: {name!r} level {position} is {level!r:.80}, not [p, q]"
            )
        for value in level:
            try:
                float(value)
            except (ValueError, TypeError):
                raise _FrameError(
                    "invalid_number",
                    f"{what}: {name!r} level {position} has {value!r:.80}, not a number",
                ) from None
    raise _FrameError("invalid_field", f"{what}: {name!r} could not be read")  # pragma: no cover


class ParseResult(NamedTuple):
    """One `MarketChunk` per symbol seen in the parsed lines, plus unattributable dead letters.

    A tuple, so `chunks, dead_letters = parser.parse_lines(lines)` works.
    """

    chunks: list[MarketChunk]
    dead_letters: list[DeadLetter]


class BinanceParser:
    """Stateful parser of Binance frames into columnar per-symbol `MarketChunk`s.

    One instance parses one stream (one capture, or one live connection) in arrival order:
    - `sequence` of the chunks increases by one per symbol across calls to `parse_lines`;
    - trades take `ts_event` from `T` (trade time), depth updates and futures book tickers from
      `E` (event time), all milliseconds turned into nanoseconds;
    - spot `bookTicker` frames and spot REST snapshots carry no exchange time: their `ts_event` is
      `ts_recv` plus the latest observed clock offset `E_ns - ts_recv` of any earlier frame of this
      instance (0 before the first frame with `E`), so they line up with exchange time. The offset
      jitters by a few milliseconds from frame to frame, which would make about 1% of the
      estimated quote times step backwards on clean data; so an estimated quote time is raised to
      the previous estimated quote time of its symbol when below it (never goes backwards);
    - a REST snapshot carries no symbol: it belongs to `symbol_hint` when given, else to the only
      symbol seen so far; with none or several it is dead-lettered ("snapshot_symbol_unknown");
    - trade `m` (buyer is maker) true means a seller-initiated trade: side -1, else +1.

    Dead-letter reasons: "malformed_json", "unknown_stream", "missing_field", "invalid_number"
    (a numeric field that is not a number or does not fit int64), "invalid_field" (a non-numeric
    field of the wrong type, such as `m` not a bool or a level not `[price, qty]`) and
    "snapshot_symbol_unknown".
    """

    def __init__(self, symbol_hint: str | None = None) -> None:
        self.symbol_hint = symbol_hint.upper() if symbol_hint else None
        self.offset_ns = 0  # latest observed E_ns - ts_recv
        self.symbols_seen: dict[str, None] = {}  # insertion-ordered set
        self._sequences: dict[str, int] = {}
        self._stream_kinds: dict[str, tuple[str | None, str]] = {}
        self._last_estimated_quote_ns: dict[str, int] = {}
        self._live_frames = 0

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
        for index in range(len(frames)):
            raw = frames[index]
            ts_recv = receive_times[index]
            symbol: str | None = None
            try:
                try:
                    message = orjson.loads(raw)
                except orjson.JSONDecodeError as error:
                    raise _FrameError("malformed_json", f"invalid JSON: {error}") from None
                kind, symbol, data = self._classify(message)
                event_ms = data.get("E")
                if event_ms is not None:
                    if not _is_ms_time(event_ms):
                        raise _FrameError("invalid_number", f"'E' is {event_ms!r:.40}")
                    self.offset_ns = event_ms * NS_PER_MS - ts_recv
                if symbol is None:
                    symbol = self._snapshot_symbol()
                buffer = buffers.get(symbol)
                if buffer is None:
                    buffer = buffers[symbol] = SymbolBuffers()
                    self.symbols_seen[symbol] = None
                if kind == _TRADE:
                    self._add_trade(buffer, data, ts_recv)
                elif kind == _QUOTE:
                    self._add_quote(buffer, data, ts_recv, symbol)
                elif kind == _DEPTH:
                    self._add_depth(buffer, data, ts_recv)
                else:
                    self._add_snapshot(buffer, data, ts_recv)
            except _FrameError as error:
                letter = DeadLetter(
                    stage=PARSE_STAGE,
                    reason=error.reason,
                    detail=f"{source} line {lines.line_numbers[index]}: {error.detail}",
                    source=f"{source}:line {lines.line_numbers[index]}",
                    symbol=symbol,
                    ts_recv=ts_recv,
                    payload=payload_text(raw),
                )
                if symbol is None:
                    orphans.append(letter)
                else:
                    buffer = buffers.get(symbol)
                    if buffer is None:
                        buffer = buffers[symbol] = SymbolBuffers()
                    buffer.dead_letters.append(letter)
        return ParseResult(
            chunks=[self._chunk(symbol, buffer) for symbol, buffer in buffers.items()],
            dead_letters=orphans,
        )

    def parse_frames(
        self, frames: list[bytes], ts_recv: list[int], source: str = "live"
    ) -> ParseResult:
        """Live mode: parse frames as received from a socket, with their receive times.

        Dead letters name the frame as "<source>:line N", N counting the frames this parser has
        been given through this method (from 1), as if the stream were being recorded.
        """
        first = self._live_frames + 1
        self._live_frames += len(frames)
        numbers = list(range(first, first + len(frames)))
        return self.parse_lines(CaptureChunk(source, numbers, list(ts_recv), list(frames)))

    # ---------------------------------------------------------------- frame kinds

    def _classify(self, message: object) -> tuple[str, str | None, dict[str, Any]]:
        """(kind, symbol or None for snapshots, data dict) of a decoded frame."""
        if type(message) is not dict:
            raise _FrameError(
                "unknown_stream", f"frame is a JSON {type(message).__name__}, not an object"
            )
        stream = message.get("stream")
        if stream is not None:
            data = message.get("data")
            if type(data) is not dict:
                raise _FrameError(
                    "missing_field", f"envelope of {stream!r:.60} has no 'data' object"
                )
            known = self._stream_kinds.get(stream) if type(stream) is str else None
            if known is None:
                known = self._stream_kind(stream)
            kind, stream_symbol = known
            if kind is None:
                raise _FrameError("unknown_stream", f"unknown stream {stream!r:.80}")
            symbol = data.get("s", stream_symbol)
        else:
            data = message
            event = data.get("e")
            if event is not None:
                bare_kind = _BARE_KINDS.get(event) if type(event) is str else None
                if bare_kind is None:
                    raise _FrameError("unknown_stream", f"unknown event type 'e'={event!r:.80}")
                kind = bare_kind
            elif "lastUpdateId" in data:
                return _SNAPSHOT, None, data
            elif "u" in data and "b" in data and "A" in data:
                kind = _QUOTE
            else:
                keys = ", ".join(list(data)[:8])
                raise _FrameError("unknown_stream", f"frame with keys [{keys}] is no known event")
            symbol = data.get("s")
        if type(symbol) is not str or not symbol:
            raise _FrameError("missing_field", f"{kind} frame has no symbol 's'")
        return kind, symbol.upper(), data

    def _stream_kind(self, stream: object) -> tuple[str | None, str]:
        """Classify a combined-stream name such as 'btcusdt@depth@100ms' (cached per name)."""
        if type(stream) is not str:
            return None, ""
        symbol, _, rest = stream.partition("@")
        kind: str | None = None
        if rest == "trade":
            kind = _TRADE
        elif rest == "bookTicker":
            kind = _QUOTE
        elif rest.startswith("depth") and rest[5:] in _DEPTH_SPEEDS:
            kind = _DEPTH
        result = (kind, symbol.upper())
        self._stream_kinds[stream] = result
        return result

    def _snapshot_symbol(self) -> str:
        if self.symbol_hint:
            return self.symbol_hint
        if len(self.symbols_seen) == 1:
            return next(iter(self.symbols_seen))
        seen = ", ".join(self.symbols_seen) or "none"
        raise _FrameError(
            "snapshot_symbol_unknown",
            f"depth snapshot has no symbol and no symbol_hint was given; symbols seen: {seen}",
        )

    # ---------------------------------------------------------------- per kind

    @staticmethod
    def _add_trade(buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
        try:
            trade_ms = data["T"]
            trade_id = data["t"]
            price_text = data["p"]
            qty_text = data["q"]
            buyer_is_maker = data["m"]
        except KeyError as missing:
            raise _FrameError("missing_field", f"trade frame has no {missing.args[0]!r}") from None
        if not _is_ms_time(trade_ms):
            raise _FrameError("invalid_number", f"trade time 'T' is {trade_ms!r:.40}")
        if not _is_int64(trade_id):
            raise _FrameError("invalid_number", f"trade id 't' is {trade_id!r:.40}")
        try:
            price = float(price_text)
            qty = float(qty_text)
        except (ValueError, TypeError):
            raise _FrameError(
                "invalid_number", f"trade price/qty {price_text!r:.40}/{qty_text!r:.40}"
            ) from None
        if type(buyer_is_maker) is not bool:
            raise _FrameError("invalid_field", f"trade 'm' is {buyer_is_maker!r:.40}, not a bool")
        buffer.trade_event.append(trade_ms * NS_PER_MS)
        buffer.trade_recv.append(ts_recv)
        buffer.trade_id.append(trade_id)
        buffer.trade_price.append(price)
        buffer.trade_qty.append(qty)
        buffer.trade_side.append(-1 if buyer_is_maker else 1)

    def _add_quote(
        self, buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int, symbol: str
    ) -> None:
        try:
            update_id = data["u"]
            texts = (data["b"], data["B"], data["a"], data["A"])
        except KeyError as missing:
            raise _FrameError(
                "missing_field", f"bookTicker frame has no {missing.args[0]!r}"
            ) from None
        if not _is_int64(update_id):
            raise _FrameError("invalid_number", f"bookTicker update id 'u' is {update_id!r:.40}")
        try:
            bid, bid_qty, ask, ask_qty = (float(text) for text in texts)
        except (ValueError, TypeError):
            raise _FrameError("invalid_number", f"bookTicker b/B/a/A are {texts!r:.120}") from None
        event_ms = data.get("E")
        if event_ms is not None:
            buffer.quote_event.append(event_ms * NS_PER_MS)
        else:
            estimate = max(ts_recv + self.offset_ns, self._last_estimated_quote_ns.get(symbol, 0))
            self._last_estimated_quote_ns[symbol] = estimate
            buffer.quote_event.append(estimate)
        buffer.quote_recv.append(ts_recv)
        buffer.quote_update_id.append(update_id)
        buffer.quote_bid.append(bid)
        buffer.quote_bid_qty.append(bid_qty)
        buffer.quote_ask.append(ask)
        buffer.quote_ask_qty.append(ask_qty)

    @staticmethod
    def _add_depth(buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
        try:
            event_ms = data["E"]
            first_id = data["U"]
            final_id = data["u"]
            bids = data["b"]
            asks = data["a"]
        except KeyError as missing:
            raise _FrameError("missing_field", f"depth frame has no {missing.args[0]!r}") from None
        previous_id = data.get("pu", -1)
        for name, value in (("U", first_id), ("u", final_id), ("pu", previous_id)):
            if not _is_int64(value):
                raise _FrameError("invalid_number", f"depth update id {name!r} is {value!r:.40}")
        what = f"depth update {first_id}..{final_id}"
        bid_prices, bid_qtys = _parse_levels(bids, "b", what)
        ask_prices, ask_qtys = _parse_levels(asks, "a", what)
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

    def _add_snapshot(self, buffer: SymbolBuffers, data: dict[str, Any], ts_recv: int) -> None:
        last_update_id = data["lastUpdateId"]
        if not _is_int64(last_update_id):
            raise _FrameError(
                "invalid_number", f"snapshot 'lastUpdateId' is {last_update_id!r:.40}"
            )
        if "bids" not in data or "asks" not in data:
            raise _FrameError("missing_field", "depth snapshot lacks 'bids' or 'asks'")
        what = f"depth snapshot {last_update_id}"
        bid_prices, bid_qtys = _parse_levels(data["bids"], "bids", what)
        ask_prices, ask_qtys = _parse_levels(data["asks"], "asks", what)
        event_ms = data.get("E")
        buffer.snapshot_event.append(
            event_ms * NS_PER_MS if event_ms is not None else ts_recv + self.offset_ns
        )
        buffer.snapshot_recv.append(ts_recv)
        buffer.snapshot_id.append(last_update_id)
        buffer.snapshot_bid_counts.append(len(bid_prices))
        buffer.snapshot_ask_counts.append(len(ask_prices))
        buffer.snapshot_price += bid_prices
        buffer.snapshot_price += ask_prices
        buffer.snapshot_qty += bid_qtys
        buffer.snapshot_qty += ask_qtys

    def _chunk(self, symbol: str, buffer: SymbolBuffers) -> MarketChunk:
        sequence = self._sequences.get(symbol, 0)
        self._sequences[symbol] = sequence + 1
        return MarketChunk(
            symbol=symbol,
            sequence=sequence,
            trades=buffer.trades(),
            deltas=buffer.deltas(),
            snapshots=buffer.snapshots(),
            quotes=buffer.quotes(),
            dead_letters=tuple(buffer.dead_letters),
        )


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
