"""Raw capture files and the per-symbol column buffers that venue parsers fill.

A raw capture holds one frame per line, `<local receive time ns> <frame>`, gzip or plain text, as
recorded off the socket. `read_capture` cuts a file into `CaptureChunk`s of raw lines (live mode
builds the same chunks from socket frames); a venue parser such as `dataflows.binance` turns each
chunk into columnar `MarketChunk`s, appending frame by frame to `SymbolBuffers` that become NumPy
columns once per chunk (never one Python object per event downstream).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from engine.batches import (
    NO_LEVEL,
    AggTradeColumns,
    BookDeltaColumns,
    BookSnapshotColumns,
    DeadLetter,
    FeedEvent,
    KlineColumns,
    MarketChunk,
    MarkPriceColumns,
    QuoteColumns,
    TradeColumns,
)

READ_STAGE = "read_capture"
PAYLOAD_LIMIT = 2000
DEFAULT_CHUNK_LINES = 20_000
INT64_MAX = 2**63 - 1


def payload_text(raw: bytes) -> str:
    """The raw frame as text, truncated to `PAYLOAD_LIMIT` characters for a dead letter."""
    return raw[: PAYLOAD_LIMIT * 4].decode("utf-8", "replace")[:PAYLOAD_LIMIT]


@dataclass
class CaptureChunk:
    """Consecutive raw lines of one capture file: line numbers, receive times and frame bytes.

    `source` is the file's base name, used in dead-letter sources ("<source>:line N"). Live mode
    builds the same object from socket frames (with a source such as "live:btcusdt").
    """

    source: str
    line_numbers: list[int] = field(default_factory=list)
    ts_recv: list[int] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)


def open_capture(path: Path) -> Any:
    """Open a capture as binary, gunzipping when the file starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_capture(
    path: str | Path, chunk_lines: int = DEFAULT_CHUNK_LINES
) -> Iterator[tuple[CaptureChunk, list[DeadLetter]]]:
    """Yield (chunk of at most `chunk_lines` frames, dead letters of the same lines) from a raw
    capture file, gzip or plain.

    A line whose text before the first space is not a non-negative integer nanosecond time
    becomes a dead letter ("invalid_timestamp") beside its chunk; blank lines are skipped. A gzip
    file cut short (a recorder that crashed) ends with a "truncated_file" dead letter instead of
    an exception, after every complete line has been yielded.
    """
    if chunk_lines < 1:
        raise ValueError(f"read_capture({path}): chunk_lines must be >= 1, got {chunk_lines}")
    path = Path(path)
    name = path.name
    chunk = CaptureChunk(source=name)
    letters: list[DeadLetter] = []
    line_number = 0
    with open_capture(path) as handle:
        try:
            for line_number, line in enumerate(handle, start=1):
                line = line.rstrip(b"\r\n")
                space = line.find(b" ")
                head = line[:space] if space > 0 else b""
                if head.isdigit() and len(head) <= 19 and int(head) <= INT64_MAX:
                    chunk.line_numbers.append(line_number)
                    chunk.ts_recv.append(int(head))
                    chunk.frames.append(line[space + 1 :])
                elif line.strip():
                    letters.append(
                        DeadLetter(
                            stage=READ_STAGE,
                            reason="invalid_timestamp",
                            detail=(
                                f"{name} line {line_number}: expected '<receive time ns> <frame>',"
                                f" found {payload_text(line[:40])!r}"
                            ),
                            source=f"{name}:line {line_number}",
                            payload=payload_text(line),
                        )
                    )
                if len(chunk.frames) >= chunk_lines:
                    yield chunk, letters
                    chunk, letters = CaptureChunk(source=name), []
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            letters.append(
                DeadLetter(
                    stage=READ_STAGE,
                    reason="truncated_file",
                    detail=f"{name}: unreadable after line {line_number}: {error}",
                    source=f"{name}:line {line_number + 1}",
                )
            )
    if chunk.frames or letters:
        yield chunk, letters


class ParseResult(NamedTuple):
    """One `MarketChunk` per symbol seen in the parsed lines, plus unattributable dead letters.

    A tuple, so `chunks, dead_letters = parser.parse_lines(lines)` works.
    """

    chunks: list[MarketChunk]
    dead_letters: list[DeadLetter]


class StreamParser:
    """What every venue parser shares: one instance parses one stream in arrival order, each
    symbol's chunks numbered on from 0, and live frames parsed as if they were capture lines.
    Subclasses implement `parse_lines` and set `_sequences = {}` and `_live_frames = 0`."""

    _sequences: dict[str, int]
    _live_frames: int

    def parse_lines(self, lines: CaptureChunk, source_name: str | None = None) -> ParseResult:
        raise NotImplementedError

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
            agg_trades=buffer.agg_trades(),
            marks=buffer.marks(),
            klines=buffer.klines(),
            feed_events=tuple(buffer.feed_events),
            dead_letters=tuple(buffer.dead_letters),
        )


class SymbolBuffers:
    """Per-symbol lists filled frame by frame, turned into NumPy columns once per chunk.

    Feed events are rare and stay Python objects (`engine.batches.FeedEvent`).
    """

    def __init__(self) -> None:
        self.dead_letters: list[DeadLetter] = []
        self.trade_event: list[int] = []
        self.trade_recv: list[int] = []
        self.trade_id: list[int] = []
        self.trade_price: list[float] = []
        self.trade_qty: list[float] = []
        self.trade_side: list[int] = []
        # depth updates: one entry per frame, levels flattened as bids then asks per frame
        self.delta_event: list[int] = []
        self.delta_recv: list[int] = []
        self.delta_first: list[int] = []
        self.delta_final: list[int] = []
        self.delta_prev: list[int] = []
        self.delta_bid_counts: list[int] = []
        self.delta_ask_counts: list[int] = []
        self.delta_price: list[float] = []
        self.delta_qty: list[float] = []
        self.snapshot_event: list[int] = []
        self.snapshot_recv: list[int] = []
        self.snapshot_id: list[int] = []
        self.snapshot_bid_counts: list[int] = []
        self.snapshot_ask_counts: list[int] = []
        self.snapshot_price: list[float] = []
        self.snapshot_qty: list[float] = []
        self.quote_event: list[int] = []
        self.quote_recv: list[int] = []
        self.quote_update_id: list[int] = []
        self.quote_bid: list[float] = []
        self.quote_bid_qty: list[float] = []
        self.quote_ask: list[float] = []
        self.quote_ask_qty: list[float] = []
        self.agg_event: list[int] = []
        self.agg_recv: list[int] = []
        self.agg_id: list[int] = []
        self.agg_first_id: list[int] = []
        self.agg_last_id: list[int] = []
        self.agg_price: list[float] = []
        self.agg_qty: list[float] = []
        self.agg_side: list[int] = []
        self.mark_event: list[int] = []
        self.mark_recv: list[int] = []
        self.mark_price: list[float] = []
        self.mark_index: list[float] = []
        self.mark_settle: list[float] = []
        self.mark_funding: list[float] = []
        self.mark_next_funding: list[int] = []
        self.kline_event: list[int] = []
        self.kline_recv: list[int] = []
        self.kline_open_time: list[int] = []
        self.kline_close_time: list[int] = []
        self.kline_interval: list[int] = []
        self.kline_values: list[list[float]] = []  # open, high, low, close, volume, quote, taker
        self.kline_trade_count: list[int] = []
        self.kline_closed: list[bool] = []
        self.feed_events: list[FeedEvent] = []

    def trades(self) -> TradeColumns:
        if not self.trade_event:
            return TradeColumns.empty()
        return TradeColumns(
            ts_event=np.array(self.trade_event, dtype=np.int64),
            ts_recv=np.array(self.trade_recv, dtype=np.int64),
            trade_id=np.array(self.trade_id, dtype=np.int64),
            price=np.array(self.trade_price, dtype=np.float64),
            qty=np.array(self.trade_qty, dtype=np.float64),
            side=np.array(self.trade_side, dtype=np.int8),
        )

    def deltas(self) -> BookDeltaColumns:
        if not self.delta_event:
            return BookDeltaColumns.empty()
        rows = np.add(self.delta_bid_counts, self.delta_ask_counts)
        side = _level_sides(self.delta_bid_counts, self.delta_ask_counts)
        price = np.array(self.delta_price, dtype=np.float64)
        qty = np.array(self.delta_qty, dtype=np.float64)
        empty = rows == 0
        if empty.any():  # an update that changed no level keeps its ids in a placeholder row
            at = (np.cumsum(rows) - rows)[empty]
            side = np.insert(side, at, NO_LEVEL)
            price, qty = np.insert(price, at, np.nan), np.insert(qty, at, np.nan)
            rows = np.maximum(rows, 1)
        return BookDeltaColumns(
            ts_event=np.repeat(np.array(self.delta_event, dtype=np.int64), rows),
            ts_recv=np.repeat(np.array(self.delta_recv, dtype=np.int64), rows),
            first_update_id=np.repeat(np.array(self.delta_first, dtype=np.int64), rows),
            final_update_id=np.repeat(np.array(self.delta_final, dtype=np.int64), rows),
            prev_final_update_id=np.repeat(np.array(self.delta_prev, dtype=np.int64), rows),
            side=side,
            price=price,
            qty=qty,
        )

    def snapshots(self) -> BookSnapshotColumns:
        if not self.snapshot_event:
            return BookSnapshotColumns.empty()
        rows = np.add(self.snapshot_bid_counts, self.snapshot_ask_counts)
        return BookSnapshotColumns(
            ts_event=np.repeat(np.array(self.snapshot_event, dtype=np.int64), rows),
            ts_recv=np.repeat(np.array(self.snapshot_recv, dtype=np.int64), rows),
            last_update_id=np.repeat(np.array(self.snapshot_id, dtype=np.int64), rows),
            side=_level_sides(self.snapshot_bid_counts, self.snapshot_ask_counts),
            price=np.array(self.snapshot_price, dtype=np.float64),
            qty=np.array(self.snapshot_qty, dtype=np.float64),
        )

    def quotes(self) -> QuoteColumns:
        if not self.quote_event:
            return QuoteColumns.empty()
        return QuoteColumns(
            ts_event=np.array(self.quote_event, dtype=np.int64),
            ts_recv=np.array(self.quote_recv, dtype=np.int64),
            update_id=np.array(self.quote_update_id, dtype=np.int64),
            bid_price=np.array(self.quote_bid, dtype=np.float64),
            bid_qty=np.array(self.quote_bid_qty, dtype=np.float64),
            ask_price=np.array(self.quote_ask, dtype=np.float64),
            ask_qty=np.array(self.quote_ask_qty, dtype=np.float64),
        )

    def agg_trades(self) -> AggTradeColumns:
        if not self.agg_event:
            return AggTradeColumns.empty()
        return AggTradeColumns(
            ts_event=np.array(self.agg_event, dtype=np.int64),
            ts_recv=np.array(self.agg_recv, dtype=np.int64),
            agg_id=np.array(self.agg_id, dtype=np.int64),
            first_trade_id=np.array(self.agg_first_id, dtype=np.int64),
            last_trade_id=np.array(self.agg_last_id, dtype=np.int64),
            price=np.array(self.agg_price, dtype=np.float64),
            qty=np.array(self.agg_qty, dtype=np.float64),
            side=np.array(self.agg_side, dtype=np.int8),
        )

    def marks(self) -> MarkPriceColumns:
        if not self.mark_event:
            return MarkPriceColumns.empty()
        return MarkPriceColumns(
            ts_event=np.array(self.mark_event, dtype=np.int64),
            ts_recv=np.array(self.mark_recv, dtype=np.int64),
            mark_price=np.array(self.mark_price, dtype=np.float64),
            index_price=np.array(self.mark_index, dtype=np.float64),
            estimated_settle_price=np.array(self.mark_settle, dtype=np.float64),
            funding_rate=np.array(self.mark_funding, dtype=np.float64),
            next_funding_time=np.array(self.mark_next_funding, dtype=np.int64),
        )

    def klines(self) -> KlineColumns:
        if not self.kline_event:
            return KlineColumns.empty()
        values = np.array(self.kline_values, dtype=np.float64).reshape(-1, 7)
        return KlineColumns(
            ts_event=np.array(self.kline_event, dtype=np.int64),
            ts_recv=np.array(self.kline_recv, dtype=np.int64),
            ts_open=np.array(self.kline_open_time, dtype=np.int64),
            ts_close=np.array(self.kline_close_time, dtype=np.int64),
            interval_ns=np.array(self.kline_interval, dtype=np.int64),
            open=values[:, 0].copy(),
            high=values[:, 1].copy(),
            low=values[:, 2].copy(),
            close=values[:, 3].copy(),
            volume=values[:, 4].copy(),
            quote_volume=values[:, 5].copy(),
            taker_buy_volume=values[:, 6].copy(),
            trade_count=np.array(self.kline_trade_count, dtype=np.int64),
            closed=np.array(self.kline_closed, dtype=np.bool_),
        )


def _level_sides(bid_counts: list[int], ask_counts: list[int]) -> np.ndarray:
    """Side column for frames whose rows are their bids followed by their asks."""
    counts = np.column_stack([bid_counts, ask_counts]).ravel()
    pattern = np.tile(np.array([1, -1], dtype=np.int8), len(bid_counts))
    return np.repeat(pattern, counts)
