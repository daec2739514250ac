"""An independent reference for the order book tests: raw frames and a book rebuilt from them.

The captures (data/binance-spot, data/binance-usdm) hold lines `<receive time ns> <JSON frame>`.
`read_book_frames` reads their depth updates and REST snapshots with plain `gzip` and `json`,
and `ReferenceBook` rebuilds the book with Binance's documented procedure ("How to manage a local
order book correctly", spot and USD-M futures), written from scratch with a dict per side. It
shares no code with dataflows/book*.py, so the two can only agree by both being right.

`to_columns` turns frames into the columnar batches the synchronizer takes (a frame that changed
no level becomes one NO_LEVEL placeholder row, the project's convention); `rest_snapshot` and
`snapshots_after` build the answer the REST depth endpoint would give for the true book, for
resync tests. `Lockstep` compares the synchronizer's book with the reference after each update
it applies; `reference_samples` gives the true book's features at sample times. The harness at
the end drives a synchronizer passed in, typed loosely, so this module never imports it.
"""

from __future__ import annotations

import gzip
import heapq
import itertools
import json
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.batches import NO_LEVEL, BookDeltaColumns, BookSnapshotColumns

MS = 1_000_000
Levels = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Depth:
    """One diff-depth frame as sent; `prev_final_id` is pu, -1 on spot (no pu)."""

    ts_event: int
    ts_recv: int
    first_id: int
    final_id: int
    prev_final_id: int
    bids: Levels
    asks: Levels


@dataclass(frozen=True)
class Snapshot:
    """A REST depth snapshot; `ts_event` is its E (futures) or the receive time (spot)."""

    ts_event: int
    ts_recv: int
    last_update_id: int
    bids: Levels
    asks: Levels


Frame = Depth | Snapshot


def _levels(rows: list[list[str]]) -> Levels:
    return tuple((float(price), float(qty)) for price, qty in rows)


def read_book_frames(paths: Iterable[Path]) -> list[Frame]:
    """Depth frames and snapshots of the capture files, in file order (arrival order)."""
    frames: list[Frame] = []
    for path in paths:
        with gzip.open(path, "rt") as handle:
            for line in handle:
                recv_text, _, body = line.partition(" ")
                recv = int(recv_text)
                message = json.loads(body)
                if "lastUpdateId" in message:
                    event = message["E"] * MS if "E" in message else recv
                    frames.append(Snapshot(event, recv, message["lastUpdateId"],
                                           _levels(message["bids"]), _levels(message["asks"])))
                elif "@depth" in message.get("stream", ""):
                    data = message["data"]
                    frames.append(Depth(data["E"] * MS, recv, data["U"], data["u"],
                                        data.get("pu", -1), _levels(data["b"]),
                                        _levels(data["a"])))
    return frames


class ReferenceGapError(AssertionError):
    """The reference met a stream its procedure cannot follow (it is fed clean streams only)."""


class ReferenceBook:
    """Binance's documented procedure over plain dicts.

    Spot: buffer; on the snapshot drop u <= lastUpdateId; the first update applied has
    U <= lastUpdateId + 1 <= u; each next one U == previous u + 1. Futures: drop u < lastUpdateId;
    the first has U <= lastUpdateId <= u; each next one pu == previous u.
    """

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.update_id: int | None = None  # None until a snapshot is loaded
        self.synced = False
        self.buffered: list[Depth] = []

    def feed(self, frame: Frame) -> list[Depth]:
        """Take one frame; return the updates now due, in order, for `take` (the buffered ones
        when a snapshot arrives, the frame itself once a snapshot is loaded)."""
        if isinstance(frame, Snapshot):
            if self.update_id is not None:
                return []  # already has a snapshot: later ones add nothing on a clean stream
            self.bids = {price: qty for price, qty in frame.bids if qty != 0}
            self.asks = {price: qty for price, qty in frame.asks if qty != 0}
            self.update_id = frame.last_update_id
            buffered, self.buffered = self.buffered, []
            return buffered
        if self.update_id is None:
            self.buffered.append(frame)
            return []
        return [frame]

    def take(self, update: Depth) -> bool:
        """Apply one due update; False when the snapshot already covers it."""
        assert self.update_id is not None
        snapshot_id = self.update_id
        if not self.synced:
            covered_to = snapshot_id - 1 if self.futures else snapshot_id
            if update.final_id <= covered_to:
                return False  # the snapshot covers it
            bridge = snapshot_id if self.futures else snapshot_id + 1
            if not update.first_id <= bridge <= update.final_id:
                raise ReferenceGapError(f"snapshot {snapshot_id} not bridged by {update}")
            self.synced = True
        elif self.futures and update.prev_final_id != self.update_id:
            raise ReferenceGapError(f"pu chain broken after u={self.update_id}: {update}")
        elif not self.futures and update.first_id != self.update_id + 1:
            raise ReferenceGapError(f"U chain broken after u={self.update_id}: {update}")
        for book, levels in ((self.bids, update.bids), (self.asks, update.asks)):
            for price, qty in levels:
                if qty == 0:
                    book.pop(price, None)
                else:
                    book[price] = qty
        self.update_id = update.final_id
        return True


class Cursor:
    """A reference book moved along a clean stream, one update at a time, on demand."""

    def __init__(self, clean: list[Frame], futures: bool) -> None:
        self.reference = ReferenceBook(futures)
        self.frames = iter(clean)
        self.due: deque[Depth] = deque()
        self.last: Depth | None = None  # the last update applied

    def _next_due(self) -> Depth | None:
        while not self.due:
            frame = next(self.frames, None)
            if frame is None:
                return None
            self.due.extend(self.reference.feed(frame))
        return self.due[0]

    def step(self) -> Depth | None:
        """Apply the next update the procedure applies; None at the end of the stream."""
        while (update := self._next_due()) is not None:
            self.due.popleft()
            if self.reference.take(update):
                self.last = update
                return update
        return None

    def before(self, ts_event: int) -> ReferenceBook:
        """The reference after every update with a ts_event before `ts_event`."""
        while (update := self._next_due()) is not None and update.ts_event < ts_event:
            self.due.popleft()
            if self.reference.take(update):
                self.last = update
        return self.reference


def true_books(frames: list[Frame], futures: bool) -> Iterator[tuple[Depth, ReferenceBook]]:
    """Each update the reference applies, with the reference right after it (the same object,
    moved on: copy what you keep)."""
    cursor = Cursor(frames, futures)
    while (update := cursor.step()) is not None:
        yield update, cursor.reference


def rest_snapshot(reference: ReferenceBook, ts_event: int, ts_recv: int) -> Snapshot:
    """What the REST depth endpoint would answer for the reference book now (every level)."""
    assert reference.update_id is not None
    return Snapshot(ts_event, ts_recv, reference.update_id,
                    tuple(sorted(reference.bids.items(), reverse=True)),
                    tuple(sorted(reference.asks.items())))


def to_columns(frames: Iterable[Frame]) -> tuple[BookDeltaColumns, BookSnapshotColumns]:
    """Columnar rows of the frames (bids then asks within a frame), deltas and snapshots apart."""
    delta_rows: list[tuple[int, int, int, int, int, int, float, float]] = []
    snapshot_rows: list[tuple[int, int, int, int, float, float]] = []
    for frame in frames:
        if isinstance(frame, Depth):
            ids = (frame.ts_event, frame.ts_recv, frame.first_id, frame.final_id,
                   frame.prev_final_id)
            rows = [(*ids, side, price, qty)
                    for side, levels in ((1, frame.bids), (-1, frame.asks))
                    for price, qty in levels]
            delta_rows += rows or [(*ids, NO_LEVEL, float("nan"), float("nan"))]
        else:
            head = (frame.ts_event, frame.ts_recv, frame.last_update_id)
            snapshot_rows += [(*head, side, price, qty)
                              for side, levels in ((1, frame.bids), (-1, frame.asks))
                              for price, qty in levels]
    deltas = BookDeltaColumns.empty()
    if delta_rows:
        columns = list(zip(*delta_rows, strict=True))
        deltas = BookDeltaColumns(*(np.array(c, np.int64) for c in columns[:5]),
                                  np.array(columns[5], np.int8), np.array(columns[6], np.float64),
                                  np.array(columns[7], np.float64))
    snapshots = BookSnapshotColumns.empty()
    if snapshot_rows:
        columns = list(zip(*snapshot_rows, strict=True))
        snapshots = BookSnapshotColumns(*(np.array(c, np.int64) for c in columns[:3]),
                                        np.array(columns[3], np.int8),
                                        np.array(columns[4], np.float64),
                                        np.array(columns[5], np.float64))
    return deltas, snapshots


class Lockstep:
    """Observer for `BookSynchronizer.apply`: after each update the book applies, it moves the
    reference along the clean stream to the same u and compares the two full books.

    The book must apply the clean stream's updates in order, skipping none while in sync (it
    may skip only when it bridges a new snapshot). Updates in `tainted` (content injected by a
    test) are recorded but not compared. `checks` keeps (u, the book's event-time clock).
    """

    def __init__(self, clean: list[Frame], futures: bool,
                 tainted: frozenset[int] = frozenset()) -> None:
        self.cursor = Cursor(clean, futures)
        self.tainted = tainted
        self.book: Any = None
        self.checks: list[tuple[int, int]] = []
        self.applied: list[tuple[int, int]] = []  # (u, ts_event) of every update applied

    def __call__(self, final_id: int) -> None:
        skipped = []
        while (update := self.cursor.step()) is not None and update.final_id != final_id:
            skipped.append(update.final_id)
        if update is None:
            raise AssertionError(f"u={final_id} is no later update of the clean stream")
        assert not skipped or not self.book.in_sync, (
            f"in sync, the book applied u={final_id} but skipped {skipped[:5]}")
        self.applied.append((final_id, update.ts_event))
        if final_id in self.tainted:
            return
        reference = self.cursor.reference
        for name, ours, theirs in (("bids", self.book.bids.levels, reference.bids),
                                   ("asks", self.book.asks.levels, reference.asks)):
            if ours != theirs:
                wrong = sorted(set(ours.items()) ^ set(theirs.items()))[:6]
                raise AssertionError(f"{name} differ after u={final_id}: {wrong}")
        self.checks.append((final_id, self.book.clock))


def book_features(bids: dict[float, float], asks: dict[float, float],
                  depth_levels: int) -> tuple[tuple[float, ...], tuple[list[float], ...]]:
    """The sample of a book by definition: (bid, bid qty, ask, ask qty, spread, imbalance,
    quantity on bids >= 0.95 mid, on asks <= 1.05 mid) and the best `depth_levels` levels."""
    bid, ask = max(bids), min(asks)
    bid_qty, ask_qty = bids[bid], asks[ask]
    mid = (bid + ask) / 2.0
    features = (bid, bid_qty, ask, ask_qty, ask - bid, (bid_qty - ask_qty) / (bid_qty + ask_qty),
                math.fsum(qty for price, qty in bids.items() if price >= 0.95 * mid),
                math.fsum(qty for price, qty in asks.items() if price <= 1.05 * mid))
    best_bids = heapq.nlargest(depth_levels, bids.items())
    best_asks = heapq.nsmallest(depth_levels, asks.items())
    top = ([p for p, _ in best_bids], [q for _, q in best_bids],
           [p for p, _ in best_asks], [q for _, q in best_asks])
    return features, top


def reference_samples(clean: list[Frame], futures: bool, boundaries: list[int],
                      depth_levels: int) -> list[tuple[tuple[float, ...], tuple[list[float], ...]]]:
    """`book_features` of the true book at each boundary B (ascending, each after the clean
    stream's snapshot): the book after every update with ts_event < B."""
    cursor = Cursor(clean, futures)
    samples = []
    for boundary in boundaries:
        reference = cursor.before(boundary)
        samples.append(book_features(reference.bids, reference.asks, depth_levels))
    return samples


def reference_after(clean: list[Frame], futures: bool, final_ids: list[int], depth_levels: int,
                    ) -> list[tuple[tuple[float, ...], tuple[list[float], ...]]]:
    """`book_features` of the true book right after each update u of `final_ids` (ascending)."""
    cursor, samples = Cursor(clean, futures), []
    for final_id in final_ids:
        while cursor.last is None or cursor.last.final_id < final_id:
            assert cursor.step() is not None, f"no update u={final_id}"
        assert cursor.last.final_id == final_id, f"no update u={final_id}"
        reference = cursor.reference
        samples.append(book_features(reference.bids, reference.asks, depth_levels))
    return samples


def snapshots_after(clean: list[Frame], futures: bool,
                    stamps: dict[int, tuple[int, int]]) -> dict[int, Snapshot]:
    """For each u in `stamps`, the REST snapshot of the true book right after update u, stamped
    with the given (ts_event, ts_recv)."""
    cursor, found = Cursor(clean, futures), {}
    while len(found) < len(stamps) and (update := cursor.step()) is not None:
        if update.final_id in stamps:
            found[update.final_id] = rest_snapshot(cursor.reference, *stamps[update.final_id])
    assert len(found) == len(stamps), f"no update u in {set(stamps) - set(found)}"
    return found


# ---------------------------------------------------------------- harness for the synchronizer
# (typed loosely: this module does not import dataflows.book)


def kinds(*results: Any) -> list[str]:
    """The BookEvent kinds of `BookUpdateResult`s, in order."""
    return [event.kind for result in results for event in result.events]


def reasons(*results: Any) -> list[str]:
    """The dead-letter reasons of `BookUpdateResult`s, in order."""
    return [letter.reason for result in results for letter in result.dead_letters]


def assert_sides_consistent(book: Any) -> None:
    """The sorted keys sampling reads agree with the level dicts the comparisons read."""
    for side in (book.bids, book.asks):
        assert side.keys == sorted(side.sign * price for price in side.levels)


def run_in_cuts(book: Any, frames: list[Frame], cuts: Sequence[int]) -> tuple[Any, list[Any]]:
    """Apply `frames` to `book` in batches cut before each index in `cuts`, each batch with the
    watermark its source could promise: the earliest ts_event of the frames not yet given."""
    pending: list[int | None] = [None] * (len(frames) + 1)
    for index in range(len(frames) - 1, -1, -1):
        following = pending[index + 1]
        time = frames[index].ts_event
        pending[index] = time if following is None else min(time, following)
    results = []
    for start, stop in itertools.pairwise([0, *cuts, len(frames)]):
        results.append(book.apply(*to_columns(frames[start:stop]), watermark=pending[stop]))
    return book, results


def joined(results: list[Any]) -> dict[str, Any]:
    """Everything `apply` calls produced, concatenated, to compare two ways of cutting."""
    track = {name: np.concatenate([r.track.as_dict()[name] for r in results])
             for name in results[0].track.as_dict()}
    depth = {name: np.concatenate([getattr(r.depth, name) for r in results])
             for name in ("ts_event", "bid_price", "bid_qty", "ask_price", "ask_qty")}
    return {"track": track, "depth": depth,
            "events": [e for r in results for e in r.events],
            "dead_letters": [d for r in results for d in r.dead_letters]}


def assert_same_outputs(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Samples (NaN equal to NaN), depth, events and dead letters are identical."""
    for part in ("track", "depth"):
        for name, values in first[part].items():
            np.testing.assert_array_equal(second[part][name], values, err_msg=f"{part}.{name}")
    assert first["events"] == second["events"]
    assert first["dead_letters"] == second["dead_letters"]
