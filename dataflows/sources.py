"""Dataflow sources for replay: a recorded Parquet tape or raw exchange captures.

Each source keeps explicit resume state (the sequence number of the next chunk), so a Bytewax
recovery run resumes where the last snapshot left off. A tape has one partition per symbol, so
several workers read in parallel; a raw capture interleaves symbols in one file and so is one
partition, parsed by the same parser live mode uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.venues import parse_captures
from engine.batches import DeadLetter, MarketChunk, TradeColumns
from storage.tape import TapeReader

ProgressCallback = Callable[[int], None]
Item = TypeVar("Item")


def _noop(_events: int) -> None:
    return None


def events_in(chunk: MarketChunk) -> int:
    """Events as the venue sent them: trades, agg trades, quotes, marks, klines, depth updates
    and snapshots (a depth update or snapshot spans many level rows), and feed events."""
    depth_updates = len(np.unique(chunk.deltas.final_update_id)) if len(chunk.deltas) else 0
    snapshots = len(np.unique(chunk.snapshots.last_update_id)) if len(chunk.snapshots) else 0
    return (len(chunk.trades) + len(chunk.quotes) + depth_updates + snapshots
            + len(chunk.agg_trades) + len(chunk.marks) + len(chunk.klines)
            + len(chunk.feed_events))


class IteratorPartition(StatefulSourcePartition[Item, int]):
    """Emits one item per poll and remembers how many it has emitted; `on_item` sees each one
    (a progress count) before it leaves."""

    def __init__(self, items: Iterator[Item], resume_state: int | None,
                 on_item: Callable[[Item], None] | None = None) -> None:
        self._items = items
        self._emitted = 0
        self._on_item = on_item
        for _ in range(resume_state or 0):
            next(self._items)
            self._emitted += 1

    def next_batch(self) -> list[Item]:
        item = next(self._items)  # StopIteration ends the partition
        self._emitted += 1
        if self._on_item is not None:
            self._on_item(item)
        return [item]

    def snapshot(self) -> int:
        return self._emitted


def _counting(progress: ProgressCallback) -> Callable[[MarketChunk], None]:
    """Reports each chunk's venue events to `progress`."""
    def count(chunk: MarketChunk) -> None:
        progress(events_in(chunk))

    return count


class TapeSource(FixedPartitionedSource[MarketChunk, int]):
    """A recorded tape, one partition per symbol."""

    def __init__(
        self,
        path: Path,
        batch_rows: int,
        batch_duration_ns: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        self._path = path
        self._batch_rows = batch_rows
        self._batch_duration_ns = batch_duration_ns
        self._progress = progress or _noop
        self._symbols = list(TapeReader(path).symbols)

    def list_parts(self) -> list[str]:
        return self._symbols

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> IteratorPartition[MarketChunk]:
        reader = TapeReader(self._path)
        chunks = reader.iter_chunks(
            self._batch_rows, self._batch_duration_ns, symbols=[for_part]
        )
        return IteratorPartition(chunks, resume_state, _counting(self._progress))


def capture_chunks(
    paths: list[Path], chunk_lines: int, symbol_hint: str | None = None,
    venue: str | None = None,
) -> Iterator[MarketChunk]:
    """Parse raw captures in order into per-symbol chunks; the last chunk of each symbol is
    marked end_of_stream. Lines no symbol can claim ride along as dead letters of the next chunk.
    `venue` picks the parser (default: Binance, or a cryptofeed file's own venue).
    """
    orphans: list[DeadLetter] = []
    sequences: dict[str, int] = {}
    for chunks, letters in parse_captures(paths, venue, symbol_hint, chunk_lines):
        orphans.extend(letters)
        for chunk in chunks:
            sequences[chunk.symbol] = chunk.sequence + 1
            if orphans:
                chunk = replace(chunk, dead_letters=chunk.dead_letters + tuple(orphans))
                orphans = []
            yield chunk
    if not sequences:
        raise ValueError(
            f"no market data for any symbol in {', '.join(path.name for path in paths)}"
        )
    for index, (symbol, sequence) in enumerate(sorted(sequences.items())):
        letters = tuple(orphans) if index == 0 else ()
        yield MarketChunk(
            symbol=symbol,
            sequence=sequence,
            trades=TradeColumns.empty(),
            dead_letters=letters,
            end_of_stream=True,
        )


class CaptureSource(FixedPartitionedSource[MarketChunk, int]):
    """Raw captures (the project's `<receive ns> <frame>` or cryptofeed's), replayed through the
    venue's live parser."""

    def __init__(
        self,
        paths: list[Path],
        chunk_lines: int,
        symbol_hint: str | None = None,
        progress: ProgressCallback | None = None,
        venue: str | None = None,
    ) -> None:
        self._paths = paths
        self._chunk_lines = chunk_lines
        self._symbol_hint = symbol_hint
        self._progress = progress or _noop
        self._venue = venue

    def list_parts(self) -> list[str]:
        return ["capture"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> IteratorPartition[MarketChunk]:
        chunks = capture_chunks(self._paths, self._chunk_lines, self._symbol_hint, self._venue)
        return IteratorPartition(chunks, resume_state, _counting(self._progress))
