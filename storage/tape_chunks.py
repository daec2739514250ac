"""Cutting one symbol's tape tables into `MarketChunk`s of consecutive receive-time ranges,
streaming: each table is read a record batch at a time, so memory stays bounded by a few batches
however long the tape is.

Kept apart from `storage.tape` (the file format) because it is only about reading order and
cutting; the chunks are the same as cutting the whole tables at once would give.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.batches import (
    AggTradeColumns,
    BookDeltaColumns,
    BookSnapshotColumns,
    FeedEventColumns,
    KlineColumns,
    MarketChunk,
    MarkPriceColumns,
    QuoteColumns,
    TradeColumns,
)

_INT64_MAX = 2**63 - 1
READ_BATCH_ROWS = 262_144

# Tape table name -> (MarketChunk attribute, columns container)
CONTAINERS: dict[str, tuple[str, Any]] = {
    "trades": ("trades", TradeColumns),
    "book_deltas": ("deltas", BookDeltaColumns),
    "book_snapshots": ("snapshots", BookSnapshotColumns),
    "best_bid_ask": ("quotes", QuoteColumns),
    "agg_trades": ("agg_trades", AggTradeColumns),
    "mark_prices": ("marks", MarkPriceColumns),
    "venue_klines": ("klines", KlineColumns),
    "feed_events": ("feed_events", FeedEventColumns),  # objects in MarketChunk (see below)
}


class TableStream:
    """One tape table of one symbol, read forward in record batches.

    Keeps the unconsumed rows as NumPy columns plus their cutting keys: ts_recv, or its running
    maximum if ts_recv ever steps back (row order wins, a late row travels with its neighbours).
    """

    def __init__(
        self, file: Path | None, schema: pa.Schema, symbol: str, known_symbols: Sequence[str]
    ) -> None:
        self.names = [name for name in schema.names if name != "symbol"]
        self._empty = {
            name: np.empty(0, dtype=schema.field(name).type.to_pandas_dtype())
            for name in self.names
        }
        self._pieces: list[dict[str, np.ndarray]] = []  # buffered rows, one dict per batch read
        self.keys = np.empty(0, dtype=np.int64)
        self._running_max = -_INT64_MAX
        self._symbol = symbol
        self._known = set(known_symbols)
        self._file = file
        self._batches: Iterator[pa.RecordBatch] | None = None
        if file is not None and file.exists():
            self._batches = pq.ParquetFile(file, read_dictionary=["symbol"]).iter_batches(
                batch_size=READ_BATCH_ROWS, columns=[*self.names, "symbol"]
            )

    @property
    def exhausted(self) -> bool:
        return self._batches is None and len(self.keys) == 0

    def _load(self) -> bool:
        """Append the next record batch; False when the file has no more."""
        if self._batches is None:
            return False
        batch = next(self._batches, None)
        if batch is None:
            self._batches = None
            return False
        symbols = batch.column("symbol")
        unknown = set(pc.unique(symbols).to_pylist()) - self._known
        if unknown:
            raise ValueError(
                f"{self._file}: symbols {sorted(map(str, unknown))} are not listed in the tape's "
                f"metadata {sorted(self._known)}"
            )
        if len(self._known) > 1:
            batch = batch.filter(pc.equal(symbols, self._symbol))
            if batch.num_rows == 0:
                return True
        new = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in self.names}
        received = new["ts_recv"].astype(np.int64, copy=False)
        keys = np.maximum.accumulate(np.maximum(received, self._running_max))
        self._running_max = int(keys[-1])
        self._pieces.append(new)
        self.keys = np.concatenate([self.keys, keys])
        return True

    def fill(self, until_key: int | None = None, rows: int = 1) -> None:
        """Read until at least `rows` rows are buffered and the last key reaches `until_key`."""
        while (len(self.keys) < rows or (until_key is not None and self.keys[-1] < until_key)):
            if not self._load():
                return

    def count_before(self, cut: int) -> int:
        return int(np.searchsorted(self.keys, cut, "left"))

    def take(self, count: int) -> dict[str, np.ndarray]:
        """Remove and return the first `count` rows; only pieces a range spans are joined."""
        parts: list[dict[str, np.ndarray]] = []
        remaining = count
        while remaining > 0:
            piece = self._pieces[0]
            size = len(piece["ts_recv"])
            if size <= remaining:
                parts.append(self._pieces.pop(0))
                remaining -= size
            else:
                parts.append({name: values[:remaining] for name, values in piece.items()})
                self._pieces[0] = {name: values[remaining:] for name, values in piece.items()}
                remaining = 0
        self.keys = self.keys[count:]
        if not parts:
            return dict(self._empty)
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in self.names}


def stream_symbol(
    symbol: str,
    files: Mapping[str, Path | None],
    schemas: Mapping[str, pa.Schema],
    known_symbols: Sequence[str],
    batch_rows: int,
    batch_duration_ns: int,
) -> Iterator[MarketChunk]:
    """Cut one symbol's tables into MarketChunks (see `TapeReader.iter_chunks`).

    Raises ValueError if a table holds a symbol the tape's metadata does not list."""
    streams = {
        name: TableStream(files.get(name), schemas[name], symbol, known_symbols)
        for name in CONTAINERS
    }
    trades = streams["trades"]
    sequence = 0
    while True:
        for stream in streams.values():
            stream.fill()
        remaining = [stream for stream in streams.values() if len(stream.keys)]
        counts = dict.fromkeys(streams, 0)
        if remaining:
            first = min(int(stream.keys[0]) for stream in remaining)
            cut = min(first + batch_duration_ns, _INT64_MAX)
            trades.fill(until_key=cut, rows=batch_rows + 1)
            counts["trades"] = trades.count_before(cut)
            if counts["trades"] > batch_rows:
                counts["trades"] = batch_rows
                cut = int(trades.keys[batch_rows])
            for name, stream in streams.items():
                if name != "trades":
                    stream.fill(until_key=cut)
                    counts[name] = stream.count_before(cut)
        elif sequence > 0:
            return
        parts = {}
        for name, stream in streams.items():
            attribute, container = CONTAINERS[name]
            columns = container(**stream.take(counts[name]))
            parts[attribute] = (columns.events(symbol) if attribute == "feed_events"
                                else columns)
        for stream in streams.values():
            stream.fill()
        done = all(stream.exhausted for stream in streams.values())
        yield MarketChunk(symbol=symbol, sequence=sequence, end_of_stream=done, **parts)
        sequence += 1
        if done:
            return
