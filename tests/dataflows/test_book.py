"""BookSynchronizer on the real Binance spot capture, against a book rebuilt with plain dicts.

The reference book below applies the exchange's frames as they are (the capture has no gaps),
so after every update the synchroniser applies, its levels must equal the reference's. Faults
are injected into copies of the frame list: a removed, a duplicated and a reordered update, a
crossed book, a stale snapshot and invalid rows.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import pickle
from collections.abc import Iterator

import numpy as np
import pytest
from capture_helpers import (
    CAPTURE_FILES,
    DepthFrame,
    SnapshotFrame,
    deltas_of,
    read_capture,
    split_frames,
)

from dataflows.book import BookSynchronizer, BookUpdateResult
from engine.batches import BookDeltaColumns, BookSnapshotColumns

Frames = list[DepthFrame | SnapshotFrame]


class ReferenceBook:
    """Plain dicts, loaded from a snapshot and moved by frames exactly as sent."""

    def __init__(self, snapshot: SnapshotFrame) -> None:
        self.bids = {price: qty for price, qty in snapshot.bids if qty > 0}
        self.asks = {price: qty for price, qty in snapshot.asks if qty > 0}

    def apply(self, frame: DepthFrame) -> None:
        for levels, rows in ((self.bids, frame.bids), (self.asks, frame.asks)):
            for price, qty in rows:
                if qty == 0:
                    levels.pop(price, None)
                else:
                    levels[price] = qty

    def snapshot(self, last_update_id: int, ts_recv: int) -> SnapshotFrame:
        return SnapshotFrame(ts_recv, last_update_id, sorted(self.bids.items(), reverse=True),
                             sorted(self.asks.items()))

    def features(self) -> tuple[float, ...]:
        bid, ask = max(self.bids), min(self.asks)
        mid = (bid + ask) / 2
        return (
            ask - bid,
            (self.bids[bid] - self.asks[ask]) / (self.bids[bid] + self.asks[ask]),
            math.fsum(qty for price, qty in self.bids.items() if price >= 0.95 * mid),
            math.fsum(qty for price, qty in self.asks.items() if price <= 1.05 * mid),
        )


@pytest.fixture(scope="module")
def frames() -> tuple[Frames, Frames]:
    first, second = (read_capture(path).book_frames for path in CAPTURE_FILES)
    return first, second


def the_snapshot(frames: Frames) -> SnapshotFrame:
    return next(frame for frame in frames if isinstance(frame, SnapshotFrame))


def depth_after_snapshot(frames: Frames) -> list[DepthFrame]:
    """The frames the reference applies: those newer than the capture's snapshot, in order."""
    snapshot = the_snapshot(frames)
    return [f for f in frames
            if isinstance(f, DepthFrame) and f.final_id > snapshot.last_update_id]


class Checker:
    """Observer that compares the synchroniser's levels with the reference after each update."""

    def __init__(self, frames: Frames) -> None:
        self.reference = ReferenceBook(the_snapshot(frames))
        self.pending: Iterator[DepthFrame] = iter(depth_after_snapshot(frames))
        self.book: BookSynchronizer | None = None
        self.checked = 0

    def __call__(self, final_id: int) -> None:
        for frame in self.pending:  # the true book moves on to the update just applied
            self.reference.apply(frame)
            if frame.final_id == final_id:
                break
        assert self.book is not None
        bids, asks = self.book.levels()
        assert bids == self.reference.bids, f"bids differ after u={final_id}"
        assert asks == self.reference.asks, f"asks differ after u={final_id}"
        self.checked += 1


def reference_snapshot_after(frames: Frames, frame: DepthFrame) -> SnapshotFrame:
    """A snapshot of the true book right after `frame`, received together with it."""
    reference = ReferenceBook(the_snapshot(frames))
    for other in depth_after_snapshot(frames):
        reference.apply(other)
        if other is frame:
            return reference.snapshot(frame.final_id, frame.ts_recv)
    raise AssertionError("frame not found")


def run(book_frames: Frames, checker: Checker | None,
        book: BookSynchronizer | None = None) -> tuple[BookSynchronizer, BookUpdateResult]:
    book = book or BookSynchronizer("BTCUSDT")
    if checker is not None:
        checker.book = book
    deltas, snapshots = split_frames(book_frames)
    return book, book.apply(deltas, snapshots, observer=checker)


def kinds(result: BookUpdateResult) -> list[str]:
    return [event.kind for event in result.events]


def nth_applied(frames: Frames, n: int) -> int:
    """Index in `frames` of the n-th depth frame the reference applies."""
    target = depth_after_snapshot(frames)[n]
    return next(i for i, frame in enumerate(frames) if frame is target)


# ---------------------------------------------------------------- the clean capture


def test_syncs_once_and_matches_reference_after_every_update(
        frames: tuple[Frames, Frames]) -> None:
    checker = Checker(frames[0] + frames[1])
    book, first = run(frames[0], checker)
    book = pickle.loads(pickle.dumps(book))  # carries on after a pickle round trip
    book, second = run(frames[1], checker, book)
    assert kinds(first) == ["synced"] and kinds(second) == []
    assert first.in_sync and second.in_sync
    assert first.dead_letters == [] and second.dead_letters == []
    assert checker.checked == len(depth_after_snapshot(frames[0] + frames[1]))
    assert book.stats["gaps"] == 0 and book.stats["applied"] == checker.checked


def test_samples_match_reference_features_at_every_boundary(
        frames: tuple[Frames, Frames]) -> None:
    all_frames = frames[0] + frames[1]
    book = BookSynchronizer("BTCUSDT", depth_levels=20)
    results = [book.apply(*split_frames(part)) for part in frames]
    times = np.concatenate([r.track.ts_event for r in results])
    assert (np.diff(times) == 1_000_000_000).all()  # one row per second, none missing
    depth_times = np.concatenate([r.depth.ts_event for r in results])
    np.testing.assert_array_equal(depth_times, times)

    reference = ReferenceBook(the_snapshot(all_frames))
    pending = iter(depth_after_snapshot(all_frames))
    upcoming = next(pending)
    for result in results:
        track, depth = result.track, result.depth
        for row, boundary in enumerate(track.ts_event.tolist()):
            while upcoming is not None and upcoming.ts_event < boundary:
                reference.apply(upcoming)
                upcoming = next(pending, None)
            spread, imbalance, depth_bid, depth_ask = reference.features()
            assert track.spread[row] == pytest.approx(spread, rel=1e-12)
            assert track.top_imbalance[row] == pytest.approx(imbalance, rel=1e-12, abs=1e-15)
            assert track.depth_bid_5pct[row] == pytest.approx(depth_bid, rel=1e-12)
            assert track.depth_ask_5pct[row] == pytest.approx(depth_ask, rel=1e-12)
            best_bids = heapq.nlargest(20, reference.bids.items())
            best_asks = heapq.nsmallest(20, reference.asks.items())
            np.testing.assert_array_equal(depth.bid_price[row], [p for p, _ in best_bids])
            np.testing.assert_array_equal(depth.bid_qty[row], [q for _, q in best_bids])
            np.testing.assert_array_equal(depth.ask_price[row], [p for p, _ in best_asks])
            np.testing.assert_array_equal(depth.ask_qty[row], [q for _, q in best_asks])


def test_samples_do_not_depend_on_batch_cuts(frames: tuple[Frames, Frames]) -> None:
    whole_book = BookSynchronizer("BTCUSDT")
    whole = whole_book.apply(*split_frames(frames[0]))
    cut_book = BookSynchronizer("BTCUSDT")
    parts = []
    chunk = 97
    for start in range(0, len(frames[0]), chunk):
        part = frames[0][start : start + chunk]
        watermark = min(f.ts_event for f in frames[0][start + chunk :]
                        if isinstance(f, DepthFrame)) if start + chunk < len(frames[0]) else None
        parts.append(cut_book.apply(*split_frames(part), watermark=watermark))
    for name, values in whole.track.as_dict().items():
        joined = np.concatenate([p.track.as_dict()[name] for p in parts])
        np.testing.assert_array_equal(joined, values, err_msg=name)
    np.testing.assert_array_equal(np.concatenate([p.depth.bid_qty for p in parts]),
                                  whole.depth.bid_qty)


def test_depth_samples_pad_missing_levels_with_nan() -> None:
    snapshot = SnapshotFrame(0, 10, [(99.0, 1.0)], [(101.0, 2.0), (102.0, 1.0)])
    update = DepthFrame(1_500_000_000, 1, 11, 11, [(98.0, 3.0)], [])
    later = DepthFrame(2_100_000_000, 2, 12, 12, [], [(101.0, 0.0)])
    book = BookSynchronizer("X", depth_levels=3)
    result = book.apply(deltas_of([update, later]), split_frames([snapshot])[1])
    assert kinds(result) == ["synced"]
    np.testing.assert_array_equal(result.depth.ts_event, [2_000_000_000])
    np.testing.assert_array_equal(result.depth.bid_price[0], [99.0, 98.0, np.nan])
    np.testing.assert_array_equal(result.depth.ask_qty[0], [2.0, 1.0, np.nan])
    assert result.track.spread[0] == 2.0
    assert result.track.top_imbalance[0] == pytest.approx((1.0 - 2.0) / 3.0)
    assert result.track.depth_bid_5pct[0] == 4.0  # 99 and 98 are within 5% of mid 100


def test_unsynced_buffer_is_bounded_and_snapshots_in_sync_are_ignored() -> None:
    updates = [DepthFrame(i * 100_000_000, i, 10 + i, 10 + i, [(99.0, float(i + 1))], [])
               for i in range(10)]
    book = BookSynchronizer("X", max_buffered_updates=4)
    result = book.apply(deltas_of(updates), BookSnapshotColumns.empty())
    assert [letter.reason for letter in result.dead_letters] == ["unsynced_buffer_overflow"]
    assert book.stats["overflowed"] == 6 and not result.in_sync
    # The four kept updates (u = 16..19) bridge a snapshot at lastUpdateId 16.
    snapshot = SnapshotFrame(100, 16, [(98.0, 1.0)], [(101.0, 1.0)])
    result = book.apply(BookDeltaColumns.empty(), split_frames([snapshot])[1])
    assert kinds(result) == ["synced"] and book.levels() == ({98.0: 1.0, 99.0: 10.0},
                                                             {101.0: 1.0})
    again = SnapshotFrame(200, 30, [(50.0, 1.0)], [(150.0, 1.0)])
    result = book.apply(BookDeltaColumns.empty(), split_frames([again])[1])
    assert kinds(result) == [] and book.stats["ignored_snapshots"] == 1
    assert book.levels()[0] == {98.0: 1.0, 99.0: 10.0}


# ---------------------------------------------------------------- injected faults


@pytest.fixture(scope="module")
def head(frames: tuple[Frames, Frames]) -> Frames:
    """The first 1,200 frames of the first file (the snapshot is the 8th): faults go in here."""
    return frames[0][:1200]


def test_removed_update_is_a_gap_then_a_later_snapshot_resyncs(
        head: Frames) -> None:
    faulty = list(head)
    removed = nth_applied(faulty, 100)
    resync_at = faulty[nth_applied(faulty, 150)]
    assert isinstance(resync_at, DepthFrame)
    injected = reference_snapshot_after(head, resync_at)
    faulty.insert(faulty.index(resync_at) + 1, injected)
    del faulty[removed]
    checker = Checker(head)
    _, result = run(faulty, checker)
    assert kinds(result) == ["synced", "gap", "resync_requested", "synced"]
    assert result.in_sync
    # Updates 0..99 before the gap and everything after the injected snapshot were checked.
    assert checker.checked == len(depth_after_snapshot(head)) - 51
    gap_time = result.events[1].ts_event
    resync_time = result.events[3].ts_event
    out_of_sync = (result.track.ts_event > gap_time) & (result.track.ts_event <= resync_time)
    assert out_of_sync.any() and np.isnan(result.track.spread[out_of_sync]).all()
    assert not np.isnan(result.track.spread[~out_of_sync]).any()
    assert not np.isin(result.depth.ts_event, result.track.ts_event[out_of_sync]).any()


def test_duplicated_updates_are_skipped_as_stale(head: Frames) -> None:
    faulty = list(head)
    for n in (300, 200, 10):
        index = nth_applied(faulty, n)
        frame = faulty[index]
        assert isinstance(frame, DepthFrame)
        faulty.insert(index + 1, dataclasses.replace(frame, ts_recv=frame.ts_recv + 1))
    checker = Checker(head)
    _, result = run(faulty, checker)
    assert kinds(result) == ["synced"] and result.in_sync
    assert [letter.reason for letter in result.dead_letters] == ["stale_delta"] * 3
    assert all(letter.stage == "sync_book" for letter in result.dead_letters)
    assert checker.checked == len(depth_after_snapshot(head))


def test_reordered_updates_are_detected(head: Frames) -> None:
    faulty = list(head)
    index = nth_applied(faulty, 50)
    faulty[index], faulty[index + 1] = faulty[index + 1], faulty[index]
    book, result = run(faulty, Checker(head))
    assert kinds(result) == ["synced", "gap", "resync_requested"]
    assert not result.in_sync and book.stats["gaps"] == 1


def test_crossed_book_requests_resync(head: Frames) -> None:
    faulty = list(head)
    index = nth_applied(faulty, 20)
    frame = faulty[index]
    assert isinstance(frame, DepthFrame)
    faulty[index] = dataclasses.replace(frame, bids=[*frame.bids, (1_000_000.0, 1.0)])
    _, result = run(faulty, None)
    assert kinds(result) == ["synced", "crossed", "resync_requested"]
    assert not result.in_sync
    crossed_time = result.events[1].ts_event
    assert np.isnan(result.track.spread[result.track.ts_event > crossed_time]).all()


def test_stale_snapshot_is_reported_and_a_fresh_one_syncs(
        head: Frames) -> None:
    faulty = list(head)
    snapshot_index = faulty.index(the_snapshot(faulty))
    first_depth = faulty[0]
    assert isinstance(first_depth, DepthFrame)
    old = dataclasses.replace(faulty[snapshot_index], last_update_id=first_depth.first_id - 10)
    faulty[snapshot_index] = old
    resync_at = faulty[nth_applied(head, 40)]
    assert isinstance(resync_at, DepthFrame)
    faulty.insert(faulty.index(resync_at) + 1, reference_snapshot_after(head, resync_at))
    checker = Checker(head)
    _, result = run(faulty, checker)
    assert kinds(result) == ["stale_snapshot", "resync_requested", "synced"]
    assert result.in_sync
    assert checker.checked == len(depth_after_snapshot(head)) - 41


def test_invalid_rows_are_dead_lettered_and_the_rest_applied(
        head: Frames) -> None:
    faulty = list(head)
    index = nth_applied(faulty, 30)
    frame = faulty[index]
    assert isinstance(frame, DepthFrame)
    faulty[index] = dataclasses.replace(frame, bids=[(math.nan, 1.0), *frame.bids, (5.0, -1.0)])
    checker = Checker(head)
    _, result = run(faulty, checker)
    assert kinds(result) == ["synced"] and result.in_sync
    assert [letter.reason for letter in result.dead_letters] == ["invalid_level"] * 2
    assert checker.checked == len(depth_after_snapshot(head))


def test_futures_mode_uses_previous_final_id(frames: tuple[Frames, Frames]) -> None:
    def with_pu(book_frames: Frames) -> tuple[BookDeltaColumns, BookSnapshotColumns]:
        deltas, snapshots = split_frames(book_frames)
        # The capture's ids are contiguous, so the previous update's u is U - 1.
        previous = deltas.first_update_id - 1
        columns = deltas.as_dict() | {"prev_final_update_id": previous}
        return BookDeltaColumns(**columns), snapshots

    book = BookSynchronizer("BTCUSDT", futures=True)
    result = book.apply(*with_pu(frames[0]))
    assert kinds(result) == ["synced"] and result.in_sync
    reference = ReferenceBook(the_snapshot(frames[0]))
    for frame in depth_after_snapshot(frames[0]):
        reference.apply(frame)
    assert book.levels() == (reference.bids, reference.asks)

    faulty = list(frames[0])
    del faulty[nth_applied(faulty, 60)]
    result = BookSynchronizer("BTCUSDT", futures=True).apply(*with_pu(faulty))
    assert kinds(result) == ["synced", "gap", "resync_requested"]
