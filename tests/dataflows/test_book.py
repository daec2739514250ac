"""BookSynchronizer against the independent reference of tests/dataflows/book_reference.py.

Real captures (Binance spot, both files as one stream, and USD-M futures): after every update
the synchronizer applies, its full book equals the reference's; every 1-second sample equals the
reference book's features at that time; and cutting the stream into batches anywhere changes
nothing. Small hand-made streams then walk each branch of the procedure. Faults injected into
the real captures are in test_book_faults.py.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from book_reference import (
    MS,
    Depth,
    Frame,
    Lockstep,
    Snapshot,
    assert_same_outputs,
    assert_sides_consistent,
    joined,
    kinds,
    read_book_frames,
    reasons,
    reference_samples,
    run_in_cuts,
    to_columns,
    true_books,
)

from dataflows.binance import BinanceParser, CaptureChunk, read_capture
from dataflows.book import BookSynchronizer, BookTrack
from dataflows.steps import StagedChunk, sync_book
from engine.batches import BookDeltaColumns, BookSnapshotColumns, MarketChunk, TradeColumns

SECOND = 1_000_000_000
VENUES = [pytest.param("spot", False, id="spot"), pytest.param("usdm", True, id="usdm")]


@pytest.fixture(scope="module")
def captures(spot_captures: list[Path], usdm_captures: list[Path]) -> dict[str, list[Frame]]:
    return {"spot": read_book_frames(spot_captures), "usdm": read_book_frames(usdm_captures)}


# ---------------------------------------------------------------- the real captures


@pytest.mark.slow
@pytest.mark.parametrize(("venue", "futures"), VENUES)
def test_book_equals_reference_after_every_update(
        captures: dict[str, list[Frame]], venue: str, futures: bool) -> None:
    frames = captures[venue]
    lockstep = Lockstep(frames, futures)
    book = lockstep.book = BookSynchronizer("BTCUSDT")  # the procedure comes from the data
    half = len(frames) // 2
    first = book.apply(*to_columns(frames[:half]), observer=lockstep)
    book = lockstep.book = pickle.loads(pickle.dumps(book))  # carries on after a pickle trip
    second = book.apply(*to_columns(frames[half:]), observer=lockstep)
    assert book.procedure == ("futures" if futures else "spot")
    assert kinds(first, second) == ["synced"] and second.in_sync and not second.needs_snapshot
    assert reasons(first, second) == []
    truth = sum(1 for _ in true_books(frames, futures))
    assert truth > 6_000 and len(lockstep.checks) == truth == book.stats["applied"]
    assert book.stats["resyncs"] == book.stats["gaps"] == book.stats["crossed"] == 0
    assert_sides_consistent(book)


@pytest.mark.slow
@pytest.mark.parametrize(("venue", "futures"), VENUES)
def test_samples_equal_reference_features_at_every_boundary(
        captures: dict[str, list[Frame]], venue: str, futures: bool) -> None:
    frames = captures[venue]
    result = BookSynchronizer("BTCUSDT", depth_levels=20).apply(*to_columns(frames))
    track, depth = result.track, result.depth
    assert (np.diff(track.ts_event) == SECOND).all() and len(track) > 300
    (synced,) = result.events
    in_sync = track.ts_event > synced.ts_event
    assert np.isnan(track.spread[~in_sync]).all() and in_sync.sum() >= len(track) - 2
    np.testing.assert_array_equal(depth.ts_event, track.ts_event[in_sync])
    expected = reference_samples(frames, futures, track.ts_event[in_sync].tolist(), 20)
    rows = np.column_stack([track.as_dict()[name] for name in list(track.as_dict())[1:]])
    for row, (features, _) in zip(rows[in_sync], expected, strict=True):
        assert tuple(row.tolist()) == features  # exact: fsum is correctly rounded
    for array, index in ((depth.bid_price, 0), (depth.bid_qty, 1), (depth.ask_price, 2),
                         (depth.ask_qty, 3)):
        np.testing.assert_array_equal(array, [top[index] for _, top in expected])


@pytest.mark.slow
@pytest.mark.parametrize(("venue", "futures"), VENUES)
def test_batch_cuts_change_nothing(captures: dict[str, list[Frame]], venue: str,
                                   futures: bool) -> None:
    frames = captures[venue]
    whole_book, whole = run_in_cuts(BookSynchronizer("BTCUSDT"), frames, [])
    reference = joined(whole)
    for seed, count in ((0, 40), (1, 400)):
        cuts = sorted(random.Random(seed).sample(range(1, len(frames)), count))
        book, parts = run_in_cuts(BookSynchronizer("BTCUSDT"), frames, cuts)
        assert_same_outputs(joined(parts), reference)
        assert book.levels() == whole_book.levels() and book.stats == whole_book.stats
    # Without watermarks the samples come from the updates alone: the same again.
    cut_book = BookSynchronizer("BTCUSDT")
    parts = [cut_book.apply(*to_columns(frames[i : i + 251])) for i in range(0, len(frames), 251)]
    assert_same_outputs(joined(parts), reference)


@pytest.mark.slow
def test_sync_book_step_picks_the_procedure_from_the_data(usdm_captures: list[Path]) -> None:
    """The dataflow step on the parsed USD-M capture follows the pu chain (it used to apply the
    spot rule, which reads every futures update as a gap)."""
    parser = BinanceParser()
    state: BookSynchronizer | None = None
    tracks, events = [], []
    for lines, _ in read_capture(usdm_captures[0]):
        for chunk in parser.parse_lines(lines).chunks:
            state, staged = sync_book(state, StagedChunk(chunk=chunk))
            tracks.append(staged.book_track)
            events += staged.book_events
            assert staged.dead_letters == ()
    assert state is not None and state.procedure == "futures"
    assert [event.kind for event in events] == ["synced"] and state.stats["gaps"] == 0
    assert state.stats["applied"] > 6_000
    track = BookTrack.concat(tracks)
    after_sync = track.ts_event > events[0].ts_event
    assert after_sync.sum() > 300 and not np.isnan(track.spread[after_sync]).any()


def test_an_explicit_procedure_that_contradicts_the_data_is_dead_lettered(
        captures: dict[str, list[Frame]]) -> None:
    frames = captures["usdm"][:200]
    book = BookSynchronizer("BTCUSDT", futures=False)
    result = book.apply(*to_columns(frames))
    depth_frames = sum(isinstance(f, Depth) for f in frames)
    assert reasons(result) == ["procedure_mismatch"] * depth_frames
    assert "futures update, but BTCUSDT follows the spot procedure (set by the futures " \
        "argument)" in result.dead_letters[0].detail
    assert book.stats["applied"] == 0 and kinds(result) == [] and not result.in_sync


# ---------------------------------------------------------------- branches, on small streams


def depth(ts_ms: int, first: int, final: int, bids: Sequence[tuple[float, float]] = (),
          asks: Sequence[tuple[float, float]] = (), previous: int = -1) -> Depth:
    return Depth(ts_ms * MS, ts_ms * MS, first, final, previous, tuple(bids), tuple(asks))


def snapshot(ts_ms: int, last_update_id: int, bids: Sequence[tuple[float, float]],
             asks: Sequence[tuple[float, float]]) -> Snapshot:
    return Snapshot(ts_ms * MS, ts_ms * MS, last_update_id, tuple(bids), tuple(asks))


BOOK = snapshot(1, 10, [(99.0, 1.0), (98.0, 2.0)], [(101.0, 1.0), (102.0, 2.0)])


def test_buffered_updates_covered_bridge_and_continuity_spot() -> None:
    frames: list[Frame] = [
        depth(0, 8, 9, bids=[(99.0, 7.0)]),  # covered by the snapshot (u <= 10)
        depth(2, 10, 10, bids=[(97.0, 1.0)]),  # covered (u == lastUpdateId)
        depth(3, 11, 13, bids=[(99.0, 5.0)]),  # bridges: U <= 11 <= u
        snapshot(3, 10, BOOK.bids, BOOK.asks),  # received with the update above, after it
        depth(4, 14, 15, asks=[(101.0, 0.0)]),  # continues: U == 13 + 1
        depth(5, 15, 16, asks=[(103.0, 1.0)]),  # overlaps u=15: applied, quantities are absolute
    ]
    book = BookSynchronizer("X")
    result = book.apply(*to_columns(frames))
    assert kinds(result) == ["synced"] and result.in_sync and book.procedure == "spot"
    assert "bridged by update U=11 u=13" in result.events[0].detail
    assert book.levels() == ({99.0: 5.0, 98.0: 2.0}, {102.0: 2.0, 103.0: 1.0})
    assert book.stats["covered"] == 2 and book.stats["applied"] == 3


def test_futures_bridge_and_pu_chain() -> None:
    snap = snapshot(1, 100, [(99.0, 1.0)], [(101.0, 1.0)])
    frames: list[Frame] = [
        depth(0, 90, 99, bids=[(98.0, 1.0)], previous=85),  # covered: u < lastUpdateId
        depth(2, 95, 100, bids=[(97.0, 1.0)], previous=99),  # bridges: U <= 100 <= u
        dataclasses.replace(snap, ts_recv=2 * MS),  # received after the two updates
        depth(3, 104, 110, asks=[(102.0, 3.0)], previous=100),  # pu == last u, ids not contiguous
        depth(4, 111, 120, bids=[(99.0, 0.0)], previous=109),  # pu != 110: gap
    ]
    book = BookSynchronizer("X")
    result = book.apply(*to_columns(frames))
    assert book.procedure == "futures" and book.stats["covered"] == 1
    assert kinds(result) == ["synced", "gap", "resync_requested"]
    assert result.events[1].detail == "after u=110 expected pu=110, got U=111 u=120 pu=109"
    assert result.resync_requested and result.needs_snapshot and not result.in_sync
    assert book.levels() == ({99.0: 1.0, 97.0: 1.0}, {101.0: 1.0, 102.0: 3.0})


def test_gap_then_fresh_snapshot_resyncs_and_samples_are_nan_meanwhile() -> None:
    frames: list[Frame] = [
        BOOK,
        depth(500, 11, 11, bids=[(99.0, 3.0)]),
        depth(1_500, 13, 13, bids=[(99.0, 4.0)]),  # 12 is missing: gap
        depth(2_500, 14, 14, bids=[(99.0, 5.0)]),  # buffered
        snapshot(3_200, 14, [(99.0, 5.0)], [(101.0, 1.0)]),  # covers 13 and 14
        depth(3_500, 15, 15, asks=[(101.0, 2.0)]),  # bridges
        depth(4_500, 16, 16, asks=[(101.0, 3.0)]),
    ]
    book = BookSynchronizer("X")
    first = book.apply(*to_columns(frames[:4]))
    assert kinds(first) == ["synced", "gap", "resync_requested"]
    assert first.events[1].detail == "after u=11 expected U <= 12; update ids 12..12 missed, " \
        "got U=13 u=13"
    assert first.resync_requested and first.needs_snapshot and not first.in_sync
    second = book.apply(*to_columns(frames[4:]), watermark=5_000 * MS)
    assert kinds(second) == ["synced"] and second.in_sync and not second.resync_requested
    times = np.concatenate([first.track.ts_event, second.track.ts_event]) // SECOND
    spread = np.concatenate([first.track.spread, second.track.spread])
    assert times.tolist() == [1, 2, 3, 4, 5]
    # 1 s: in sync (the gap shows at 1.5 s); 2 and 3 s: out of sync; 4 and 5 s: in sync again.
    np.testing.assert_array_equal(spread, [2.0, np.nan, np.nan, 2.0, 2.0])
    depth_times = np.concatenate([first.depth.ts_event, second.depth.ts_event]) // SECOND
    assert depth_times.tolist() == [1, 4, 5]
    assert book.stats["gaps"] == book.stats["resyncs"] == 1 and book.stats["syncs"] == 2


def test_snapshot_before_any_update_then_stale_and_fresh_snapshots() -> None:
    old = snapshot(0, 5, [(99.0, 1.0)], [(101.0, 1.0)])
    frames: list[Frame] = [
        old,  # nothing buffered yet: waits for its bridge
        depth(1, 9, 12, bids=[(98.0, 1.0)]),  # U=9 > 5 + 1: the snapshot is stale
        depth(2, 13, 14, bids=[(97.0, 1.0)]),
        snapshot(3, 13, [(99.0, 2.0), (98.0, 1.0)], [(101.0, 1.0)]),  # bridged by 13..14
    ]
    book = BookSynchronizer("X")
    result = book.apply(*to_columns(frames))
    assert kinds(result) == ["stale_snapshot", "resync_requested", "synced"]
    assert "needs U <= 6" in result.events[0].detail
    assert book.levels() == ({99.0: 2.0, 98.0: 1.0, 97.0: 1.0}, {101.0: 1.0})
    assert book.stats["stale_snapshots"] == 1 and result.in_sync


def test_several_snapshots_in_one_batch_and_snapshots_while_in_sync() -> None:
    frames: list[Frame] = [
        snapshot(0, 20, [(99.0, 1.0)], [(101.0, 1.0)]),
        snapshot(1, 15, [(50.0, 1.0)], [(150.0, 1.0)]),  # older than the one waiting: ignored
        snapshot(2, 25, [(99.0, 2.0)], [(101.0, 2.0)]),  # newer: replaces it
        depth(3, 21, 25, bids=[(98.0, 1.0)]),  # covered by 25
        depth(4, 26, 26, bids=[(97.0, 1.0)]),  # bridges 25
        snapshot(5, 26, [(10.0, 1.0)], [(500.0, 1.0)]),  # in sync, not newer: ignored
    ]
    book = BookSynchronizer("X")
    result = book.apply(*to_columns(frames))
    assert kinds(result) == ["synced"] and "lastUpdateId=25" in result.events[0].detail
    assert book.levels() == ({99.0: 2.0, 97.0: 1.0}, {101.0: 2.0})
    assert book.stats["ignored_snapshots"] == 2
    # A newer snapshot in sync (a reconnect; Coinbase resending its book with the next synthetic
    # id) is loaded and bridged by the next update, without a resync request.
    reset = [snapshot(6, 27, [(90.0, 1.0)], [(110.0, 1.0)]), depth(7, 28, 28, [(91.0, 2.0)])]
    reloaded = book.apply(*to_columns(reset))
    assert kinds(reloaded) == ["synced"] and not reloaded.resync_requested
    assert book.levels() == ({90.0: 1.0, 91.0: 2.0}, {110.0: 1.0})
    assert book.stats["reloaded_snapshots"] == 1 and book.stats["resyncs"] == 0


def test_unsynced_buffer_is_bounded_and_its_overflow_reported_once() -> None:
    updates: list[Frame] = [depth(100 * i, 10 + i, 10 + i, bids=[(99.0, float(i + 1))])
                            for i in range(10)]
    book = BookSynchronizer("X", max_buffered_updates=4)
    result = book.apply(*to_columns(updates[:7]))
    more = book.apply(*to_columns(updates[7:]))
    assert reasons(result, more) == ["unsynced_buffer_overflow"]
    assert "dropping the oldest, from update U=10 u=10 on" in result.dead_letters[0].detail
    assert book.stats["overflowed"] == 6 and more.needs_snapshot
    # Updates 16..19 are kept: a snapshot older than them is stale, a fitting one bridges.
    stale = book.apply(*to_columns([snapshot(1_000, 12, [(98.0, 1.0)], [(101.0, 1.0)])]))
    assert kinds(stale) == ["stale_snapshot", "resync_requested"]
    fresh = book.apply(*to_columns([snapshot(1_001, 16, [(98.0, 1.0)], [(101.0, 1.0)])]))
    assert kinds(fresh) == ["synced"] and book.levels() == ({98.0: 1.0, 99.0: 10.0},
                                                            {101.0: 1.0})


def test_an_update_without_levels_keeps_the_chain() -> None:
    frames: list[Frame] = [BOOK, depth(1, 11, 12), depth(2, 13, 13, bids=[(99.0, 4.0)])]
    deltas, snapshots = to_columns(frames)
    assert deltas.side.tolist()[0] == 0  # the placeholder row of the empty update
    book = BookSynchronizer("X")
    result = book.apply(deltas, snapshots)
    assert kinds(result) == ["synced"] and book.stats["applied"] == 2
    assert book.levels()[0] == {99.0: 4.0, 98.0: 2.0}


def test_an_update_without_levels_survives_the_parser() -> None:
    lines = [
        '{"lastUpdateId":10,"bids":[["99.0","1.0"]],"asks":[["101.0","1.0"]]}',
        '{"stream":"xyzusdt@depth@100ms","data":{"e":"depthUpdate","E":1000,"s":"XYZUSDT",'
        '"U":11,"u":12,"b":[],"a":[]}}',
        '{"stream":"xyzusdt@depth@100ms","data":{"e":"depthUpdate","E":1100,"s":"XYZUSDT",'
        '"U":13,"u":13,"b":[["99.0","2.0"]],"a":[]}}',
    ]
    chunk = CaptureChunk("test", [1, 2, 3], [1, 2, 3], [line.encode() for line in lines])
    (market,) = BinanceParser(symbol_hint="XYZUSDT").parse_lines(chunk).chunks
    book = BookSynchronizer("XYZUSDT")
    result = book.apply(market.deltas, market.snapshots)
    assert kinds(result) == ["synced"] and book.levels() == ({99.0: 2.0}, {101.0: 1.0})


def test_invalid_levels_in_an_update_lose_sync_and_in_a_snapshot_reject_it() -> None:
    bad_update = depth(3, 12, 12, bids=[(float("nan"), 1.0), (98.5, 1.0)])
    frames: list[Frame] = [BOOK, depth(2, 11, 11, bids=[(99.0, 3.0)]), bad_update]
    book = BookSynchronizer("X")
    result = book.apply(*to_columns(frames))
    assert kinds(result) == ["synced", "invalid_update", "resync_requested"]
    assert reasons(result) == ["invalid_level"]
    assert result.dead_letters[0].source == ("book_deltas first_update_id=12 final_update_id=12 "
                                             "prev_final_update_id=-1 level 0")
    assert not result.in_sync and book.stats["invalid_updates"] == 1
    bad_snapshot = snapshot(4, 12, [(99.0, -1.0)], [(101.0, 1.0)])
    rejected = book.apply(*to_columns([bad_snapshot]))
    assert kinds(rejected) == ["invalid_snapshot", "resync_requested"]
    assert reasons(rejected) == ["invalid_level"] and rejected.needs_snapshot
    good = snapshot(5, 12, [(99.0, 3.0)], [(101.0, 1.0)])
    assert kinds(book.apply(*to_columns([good, depth(6, 13, 13)]))) == ["synced"]


def test_crossed_book_requests_resync_and_stale_updates_are_dead_lettered() -> None:
    frames: list[Frame] = [
        BOOK,
        depth(2, 11, 11, bids=[(99.5, 1.0)]),
        depth(3, 11, 11, bids=[(99.5, 1.0)]),  # a repeat: stale
        depth(4, 12, 12, bids=[(101.5, 1.0)]),  # bid above the best ask
    ]
    book = BookSynchronizer("X")
    result = book.apply(*to_columns(frames))
    assert reasons(result) == ["stale_delta"]
    assert result.dead_letters[0].detail == ("update U=11 u=11 is not newer than the last "
                                             "applied u=11; skipped")
    assert kinds(result) == ["synced", "crossed", "resync_requested"]
    assert result.events[1].detail.startswith("best bid 101.5 >= best ask 101.0 after u=12")
    assert not result.in_sync and book.stats["crossed"] == 1


def test_a_spot_update_on_a_futures_symbol_is_dead_lettered() -> None:
    frames: list[Frame] = [
        depth(0, 5, 11, bids=[(99.0, 1.0)], previous=4),
        snapshot(1, 10, [(99.0, 1.0)], [(101.0, 1.0)]),
        depth(2, 12, 12, bids=[(98.0, 1.0)]),  # no pu
        depth(3, 12, 13, bids=[(97.0, 1.0)], previous=11),
    ]
    book = BookSynchronizer("X")
    result = book.apply(*to_columns(frames))
    assert book.procedure == "futures" and reasons(result) == ["procedure_mismatch"]
    assert "set by the first update (U=5 u=11 pu=4)" in result.dead_letters[0].detail
    assert kinds(result) == ["synced"] and book.levels()[0] == {99.0: 1.0, 97.0: 1.0}


def test_depth_samples_pad_missing_levels_with_nan() -> None:
    frames: list[Frame] = [
        snapshot(0, 10, [(99.0, 1.0)], [(101.0, 2.0), (102.0, 1.0)]),
        depth(1_500, 11, 11, bids=[(98.0, 3.0)]),
        depth(2_100, 12, 12, asks=[(101.0, 0.0)]),
    ]
    result = BookSynchronizer("X", depth_levels=3).apply(*to_columns(frames))
    assert kinds(result) == ["synced"]
    np.testing.assert_array_equal(result.depth.ts_event, [2 * SECOND])
    np.testing.assert_array_equal(result.depth.bid_price[0], [99.0, 98.0, np.nan])
    np.testing.assert_array_equal(result.depth.ask_qty[0], [2.0, 1.0, np.nan])
    assert result.track.spread[0] == 2.0
    assert result.track.top_imbalance[0] == pytest.approx((1.0 - 2.0) / 3.0)
    assert result.track.depth_bid_5pct[0] == 4.0  # 99 and 98 are within 5% of mid 100


def test_empty_batches_and_bad_arguments() -> None:
    book = BookSynchronizer("X")
    result = book.apply(BookDeltaColumns.empty(), BookSnapshotColumns.empty(), watermark=10**12)
    assert len(result.track) == 0 and result.needs_snapshot and not result.resync_requested
    with pytest.raises(ValueError, match="max_buffered_updates"):
        BookSynchronizer("X", max_buffered_updates=0)
    staged = StagedChunk(chunk=MarketChunk("X", 0, TradeColumns.empty()))
    state, out = sync_book(None, staged, futures=True)
    assert state.procedure == "futures" and out.book_events == () and len(out.book_track) == 0
