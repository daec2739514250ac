"""A minimal, independent reader of the bundled Binance spot capture, for the dataflow tests.

Each line of data/binance-spot/*.gz is `<receive time ns> <JSON frame>`. This reader is kept
deliberately naive (a loop over lines with `json`) so that tests do not lean on the project's own
parser. It returns the frames in file order, which is arrival order.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.batches import BookDeltaColumns, BookSnapshotColumns, TradeColumns

CAPTURE_DIR = Path(__file__).resolve().parents[2] / "data" / "binance-spot"
CAPTURE_FILES = (CAPTURE_DIR / "btcusdt_20240808.gz", CAPTURE_DIR / "btcusdt_20240809.gz")
MS = 1_000_000


@dataclass
class DepthFrame:
    """One diff-depth event as the exchange sent it."""

    ts_event: int
    ts_recv: int
    first_id: int
    final_id: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


@dataclass
class SnapshotFrame:
    ts_recv: int
    last_update_id: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


@dataclass
class Capture:
    """Frames of one capture file in arrival order (depth and snapshot interleaved)."""

    book_frames: list[DepthFrame | SnapshotFrame]
    trades: TradeColumns


def _levels(rows: list[list[str]]) -> list[tuple[float, float]]:
    return [(float(price), float(qty)) for price, qty in rows]


@functools.cache
def read_capture(path: Path) -> Capture:
    """Parse one capture file (cached: tests must not modify what it returns)."""
    book_frames: list[DepthFrame | SnapshotFrame] = []
    trade_rows: list[tuple[int, int, int, float, float, int]] = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            recv_text, _, body = line.partition(" ")
            recv = int(recv_text)
            frame = json.loads(body)
            if "lastUpdateId" in frame:
                book_frames.append(SnapshotFrame(recv, frame["lastUpdateId"],
                                                 _levels(frame["bids"]), _levels(frame["asks"])))
                continue
            stream, data = frame["stream"], frame["data"]
            if stream.endswith("@trade"):
                side = -1 if data["m"] else 1  # buyer is maker: the seller hit the bid
                trade_rows.append((data["T"] * MS, recv, data["t"], float(data["p"]),
                                   float(data["q"]), side))
            elif "@depth" in stream:
                book_frames.append(DepthFrame(data["E"] * MS, recv, data["U"], data["u"],
                                              _levels(data["b"]), _levels(data["a"])))
    columns = list(zip(*trade_rows, strict=True))
    trades = TradeColumns(
        ts_event=np.array(columns[0], np.int64), ts_recv=np.array(columns[1], np.int64),
        trade_id=np.array(columns[2], np.int64), price=np.array(columns[3], np.float64),
        qty=np.array(columns[4], np.float64), side=np.array(columns[5], np.int8),
    )
    return Capture(book_frames, trades)


def deltas_of(frames: list[DepthFrame]) -> BookDeltaColumns:
    """Columnar rows of depth frames, bids then asks within a frame."""
    rows = [
        (f.ts_event, f.ts_recv, f.first_id, f.final_id, -1, side, price, qty)
        for f in frames
        for side, levels in ((1, f.bids), (-1, f.asks))
        for price, qty in levels
    ]
    if not rows:
        return BookDeltaColumns.empty()
    columns = list(zip(*rows, strict=True))
    ints = [np.array(column, np.int64) for column in columns[:5]]
    return BookDeltaColumns(*ints, np.array(columns[5], np.int8),
                            np.array(columns[6], np.float64), np.array(columns[7], np.float64))


def snapshots_of(frames: list[SnapshotFrame]) -> BookSnapshotColumns:
    """Columnar rows of snapshots; a REST snapshot has no event time, so ts_event = ts_recv."""
    rows = [
        (f.ts_recv, f.ts_recv, f.last_update_id, side, price, qty)
        for f in frames
        for side, levels in ((1, f.bids), (-1, f.asks))
        for price, qty in levels
    ]
    if not rows:
        return BookSnapshotColumns.empty()
    columns = list(zip(*rows, strict=True))
    ints = [np.array(column, np.int64) for column in columns[:3]]
    return BookSnapshotColumns(*ints, np.array(columns[3], np.int8),
                               np.array(columns[4], np.float64), np.array(columns[5], np.float64))


def split_frames(frames: list[DepthFrame | SnapshotFrame]) -> tuple[BookDeltaColumns,
                                                                     BookSnapshotColumns]:
    depth = [f for f in frames if isinstance(f, DepthFrame)]
    snapshots = [f for f in frames if isinstance(f, SnapshotFrame)]
    return deltas_of(depth), snapshots_of(snapshots)
