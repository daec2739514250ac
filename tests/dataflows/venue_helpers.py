"""Helpers for the venue parser tests: naive readers of the bundled cryptofeed captures, a naive
text-keyed order book, and checks shared by the Coinbase, OKX and Kraken tests.

The naive readers use only `re`, `json`, `decimal` and `datetime`, so the tests do not lean on the
project's own reader and parsers for the expected values.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from dataflows.book import BookSynchronizer
from dataflows.cryptofeed_capture import CryptofeedStats, read_cryptofeed_capture
from dataflows.venue_parser import VenueParser
from engine.batches import (
    BookDeltaColumns,
    BookSnapshotColumns,
    DeadLetter,
    FeedEventColumns,
    MarketChunk,
    QuoteColumns,
    TradeColumns,
)
from storage.tape import TapeReader, TapeWriter
from storage.tape_chunks import CONTAINERS

MULTI_VENUE = Path(__file__).resolve().parents[2] / "data" / "multi-venue"
_RECEIVED = re.compile(r"(\d+)\.(\d+): (.*)")


@dataclass
class NaiveFrame:
    """A received frame as the naive reader sees it."""

    line: int
    ts_recv: int
    message: Any


def naive_frames(path: Path) -> Iterator[NaiveFrame]:
    """The received websocket frames of a cryptofeed capture ('<seconds>.<fraction>: <json>')."""
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            match = _RECEIVED.fullmatch(line.rstrip("\n"))
            if match:
                seconds, fraction, body = match.groups()
                ts_recv = int(seconds) * 10**9 + int(fraction.ljust(9, "0")[:9])
                yield NaiveFrame(number, ts_recv, json.loads(body))


def iso_ns(text: str) -> int:
    """ISO time to ns through datetime arithmetic (exact to the microsecond)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def seconds_ns(text: str) -> int:
    """Decimal seconds text to ns through Decimal."""
    return int(Decimal(text) * 10**9)


@dataclass
class Parsed:
    """Everything a parser produced from one capture."""

    parser: VenueParser
    stats: CryptofeedStats
    chunks: list[MarketChunk]
    orphans: list[DeadLetter]
    reader_letters: list[DeadLetter]

    def dead_letters(self) -> list[DeadLetter]:
        attached = [letter for chunk in self.chunks for letter in chunk.dead_letters]
        return self.reader_letters + self.orphans + attached

    def symbol_columns(self) -> dict[str, dict[str, Any]]:
        """Per symbol, each container concatenated over the chunks (arrival order)."""
        result: dict[str, dict[str, Any]] = {}
        for chunk in self.chunks:
            parts = result.setdefault(chunk.symbol, {"chunks": []})
            parts["chunks"].append(chunk)
        for parts in result.values():
            chunks = parts.pop("chunks")
            parts["trades"] = TradeColumns.concat([c.trades for c in chunks])
            for name, kind in (("deltas", BookDeltaColumns), ("snapshots", BookSnapshotColumns),
                               ("quotes", QuoteColumns)):
                columns = [getattr(c, name).as_dict() for c in chunks]
                parts[name] = kind(**{key: np.concatenate([c[key] for c in columns])
                                      for key in columns[0]})
        return result


def parse_file(path: Path, parser: VenueParser, chunk_lines: int = 20_000) -> Parsed:
    stats = CryptofeedStats()
    chunks: list[MarketChunk] = []
    orphans: list[DeadLetter] = []
    reader_letters: list[DeadLetter] = []
    for lines, letters in read_cryptofeed_capture(path, chunk_lines, stats):
        reader_letters += letters
        result = parser.parse_lines(lines)
        chunks += result.chunks
        orphans += result.dead_letters
    return Parsed(parser, stats, chunks, orphans, reader_letters)


@dataclass
class TextBook:
    """An order book keyed by the venue's price text, for checksums and comparisons."""

    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    values: dict[str, Decimal] = field(default_factory=dict)  # price text -> its value

    def set(self, side: str, price: str, size: str) -> None:
        levels = self.bids if side == "bid" else self.asks
        if Decimal(size) == 0:
            levels.pop(price, None)
        else:
            levels[price] = size
            if price not in self.values:
                self.values[price] = Decimal(price)

    def top(self, count: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(bids best first, asks best first), `count` each, as text pairs."""
        bids = heapq.nlargest(count, self.bids, key=self.values.__getitem__)
        asks = heapq.nsmallest(count, self.asks, key=self.values.__getitem__)
        return [(p, self.bids[p]) for p in bids], [(p, self.asks[p]) for p in asks]


def float_top(book: BookSynchronizer, count: int) -> tuple[list[tuple[float, float]], ...]:
    """Top levels of the synchronized book (public `levels()` only), best first."""
    bids, asks = book.levels()
    top_bids = heapq.nlargest(count, bids)
    top_asks = heapq.nsmallest(count, asks)
    return [(p, bids[p]) for p in top_bids], [(p, asks[p]) for p in top_asks]


def as_floats(levels: list[tuple[str, str]]) -> list[tuple[float, float]]:
    return [(float(price), float(size)) for price, size in levels]


def replay_books(
    path: Path, parser: VenueParser, on_frame: Callable[[int, MarketChunk, BookSynchronizer], None]
) -> dict[str, BookSynchronizer]:
    """Feed a capture one frame per chunk through a BookSynchronizer per symbol (procedure taken
    from the updates, as the dataflow does) and call `on_frame(line, chunk, book)` after each."""
    books: dict[str, BookSynchronizer] = {}
    for lines, _ in read_cryptofeed_capture(path, chunk_lines=1):
        for chunk in parser.parse_lines(lines).chunks:
            book = books.setdefault(chunk.symbol, BookSynchronizer(chunk.symbol))
            book.apply(chunk.deltas, chunk.snapshots)
            on_frame(lines.line_numbers[0], chunk, book)
    return books


def assert_tape_round_trip(chunks: list[MarketChunk], directory: Path) -> dict[str, int]:
    """Write the chunks as a tape, read every table back and compare with the chunks' columns."""
    with TapeWriter(directory, source="test") as writer:
        for chunk in chunks:
            writer.write_chunk(chunk)
    reader = TapeReader(directory)
    rows: dict[str, int] = {}
    for table_name, (attribute, _) in CONTAINERS.items():
        table = reader.read_table(table_name)
        rows[table_name] = table.num_rows
        for symbol in sorted({chunk.symbol for chunk in chunks}):
            mine = [_columns(getattr(c, attribute)).as_dict() for c in chunks
                    if c.symbol == symbol]
            selected = table.filter(np.array(table.column("symbol").to_pylist()) == symbol)
            for name in mine[0]:
                expected = np.concatenate([part[name] for part in mine])
                got = selected.column(name).to_numpy(zero_copy_only=False)
                np.testing.assert_array_equal(got, expected, err_msg=f"{table_name}.{name}")
    return rows


def _columns(value: object) -> object:
    """A chunk's table as columns (feed events are objects in the chunk, columns on the tape)."""
    return FeedEventColumns.from_events(value) if isinstance(value, tuple) else value
