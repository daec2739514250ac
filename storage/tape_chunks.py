"""Cutting one symbol's tape columns into `MarketChunk`s of consecutive receive-time ranges.

Kept apart from `storage.tape` (the file format) because it is pure NumPy: columns stay the
zero-copy views of their Arrow chunks and chunks are slices of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from engine.batches import (
    BookDeltaColumns,
    BookSnapshotColumns,
    MarketChunk,
    QuoteColumns,
    TradeColumns,
)

_INT64_MAX = 2**63 - 1

# Tape table name -> (MarketChunk attribute, columns container)
CONTAINERS: dict[str, tuple[str, Any]] = {
    "trades": ("trades", TradeColumns),
    "book_deltas": ("deltas", BookDeltaColumns),
    "book_snapshots": ("snapshots", BookSnapshotColumns),
    "best_bid_ask": ("quotes", QuoteColumns),
}


class PiecewiseColumn:
    """A column kept as the zero-copy NumPy views of its Arrow chunks (one per row group).

    Slicing returns a view when the range lies inside one piece and concatenates only the
    pieces a range straddles, so reading a tape does not copy whole columns.
    """

    def __init__(self, pieces: list[np.ndarray], dtype: np.dtype | None = None) -> None:
        self.pieces = [piece for piece in pieces if len(piece)]
        self.dtype = pieces[0].dtype if pieces else dtype
        self.bounds = np.cumsum([0] + [len(piece) for piece in self.pieces])

    @staticmethod
    def from_arrow(column: pa.ChunkedArray) -> PiecewiseColumn:
        pieces = [chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks]
        return PiecewiseColumn(pieces, np.dtype(column.type.to_pandas_dtype()))

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def whole(self) -> np.ndarray:
        if len(self.pieces) == 1:
            return self.pieces[0]
        if not self.pieces:
            return np.empty(0, dtype=self.dtype)
        return np.concatenate(self.pieces)

    def slice(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        first = int(np.searchsorted(self.bounds, start, "right")) - 1
        last = int(np.searchsorted(self.bounds, stop, "left")) - 1
        if first == last:
            offset = int(self.bounds[first])
            return self.pieces[first][start - offset : stop - offset]
        parts = [
            self.pieces[index][
                max(start - int(self.bounds[index]), 0) : stop - int(self.bounds[index])
            ]
            for index in range(first, last + 1)
        ]
        return np.concatenate(parts)


def chunk_symbol(
    symbol: str,
    tables: dict[str, dict[str, PiecewiseColumn]],
    batch_rows: int,
    batch_duration_ns: int,
) -> Iterator[MarketChunk]:
    """Cut one symbol's columns into MarketChunks (see `TapeReader.iter_chunks`)."""
    keys: dict[str, np.ndarray] = {}
    for name, columns in tables.items():
        received = columns["ts_recv"].whole()
        if len(received) > 1 and bool(np.any(received[1:] < received[:-1])):
            received = np.maximum.accumulate(received)
        keys[name] = received
    starts = dict.fromkeys(tables, 0)
    sequence = 0
    trade_keys = keys["trades"]
    while True:
        remaining = [name for name in tables if starts[name] < len(keys[name])]
        if not remaining and sequence > 0:
            return
        ends = dict(starts)
        if remaining:
            first = min(int(keys[name][starts[name]]) for name in remaining)
            cut = min(first + batch_duration_ns, _INT64_MAX)
            trade_end = int(np.searchsorted(trade_keys, cut, "left"))
            if trade_end - starts["trades"] > batch_rows:
                trade_end = starts["trades"] + batch_rows
                cut = int(trade_keys[trade_end])
            for name in tables:
                ends[name] = int(np.searchsorted(keys[name], cut, "left"))
            ends["trades"] = trade_end
        done = all(ends[name] >= len(keys[name]) for name in tables)
        parts = {}
        for name, columns in tables.items():
            attribute, container = CONTAINERS[name]
            parts[attribute] = container(
                **{key: value.slice(starts[name], ends[name]) for key, value in columns.items()}
            )
        yield MarketChunk(symbol=symbol, sequence=sequence, end_of_stream=done, **parts)
        sequence += 1
        starts = ends
        if done:
            return
