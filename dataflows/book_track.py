"""Samples of a local order book: top-of-book features (`BookTrack`) and top-n depth.

The synchronizer (dataflows/book.py) samples its book once per grid boundary of event time; this
module turns a book into a sample row and collects rows into columnar arrays. Bars take their
book features from `BookTrack`; the paper matcher walks `DepthSamples`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dataflows.book_side import BookSide
from engine.batches import DepthSamples

TRACK_FIELDS = ("bid_price", "bid_qty", "ask_price", "ask_qty", "spread", "top_imbalance",
                "depth_bid_5pct", "depth_ask_5pct")


@dataclass(frozen=True)
class BookTrack:
    """Top-of-book features of the synced book, one row per sample time (see dataflows/book.py).

    `spread` is ask - bid in price units, `top_imbalance` is (bid_qty - ask_qty) / (bid_qty +
    ask_qty) at the best levels, `depth_bid_5pct` the base quantity on bid levels priced at or
    above 0.95 * mid and `depth_ask_5pct` on ask levels at or below 1.05 * mid. Every feature is
    NaN at a sample time when the book was not in sync.
    """

    ts_event: np.ndarray  # int64, the sample boundary
    bid_price: np.ndarray  # float64 from here on
    bid_qty: np.ndarray
    ask_price: np.ndarray
    ask_qty: np.ndarray
    spread: np.ndarray
    top_imbalance: np.ndarray
    depth_bid_5pct: np.ndarray
    depth_ask_5pct: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_event)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"ts_event": self.ts_event, **{name: getattr(self, name) for name in TRACK_FIELDS}}

    def take(self, index: np.ndarray | slice) -> BookTrack:
        return BookTrack(**{name: values[index] for name, values in self.as_dict().items()})

    @staticmethod
    def from_rows(ts_event: list[int], rows: list[tuple[float, ...]]) -> BookTrack:
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(TRACK_FIELDS))
        columns = {name: values[:, i].copy() for i, name in enumerate(TRACK_FIELDS)}
        return BookTrack(ts_event=np.array(ts_event, dtype=np.int64), **columns)

    @staticmethod
    def empty() -> BookTrack:
        return BookTrack.from_rows([], [])

    @staticmethod
    def concat(parts: list[BookTrack]) -> BookTrack:
        if not parts:
            return BookTrack.empty()
        columns = [part.as_dict() for part in parts]
        return BookTrack(**{key: np.concatenate([c[key] for c in columns]) for key in columns[0]})


def track_row(bids: BookSide, asks: BookSide) -> tuple[float, ...]:
    """The `TRACK_FIELDS` of a book (NaN when a side is empty)."""
    bid, ask = bids.best(), asks.best()
    if bid is None or ask is None:
        return (math.nan,) * len(TRACK_FIELDS)
    (bid_price, bid_qty), (ask_price, ask_qty) = bid, ask
    mid = (bid_price + ask_price) / 2.0
    return (bid_price, bid_qty, ask_price, ask_qty, ask_price - bid_price,
            (bid_qty - ask_qty) / (bid_qty + ask_qty),
            bids.depth_to(0.95 * mid), asks.depth_to(1.05 * mid))


def depth_samples(times: list[int], rows: list[tuple[list[float], ...]],
                  levels: int) -> DepthSamples:
    """Rows of (bid prices, bid quantities, ask prices, ask quantities), best first, as
    (samples, levels) arrays; missing levels are NaN."""
    shape = (len(rows), levels)
    arrays = [np.full(shape, np.nan) for _ in range(4)]
    for row, top in enumerate(rows):
        for array, values in zip(arrays, top, strict=True):
            array[row, : len(values)] = values
    return DepthSamples(np.array(times, dtype=np.int64), *arrays)
