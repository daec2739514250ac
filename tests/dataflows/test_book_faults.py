"""Faults injected into the real captures (Binance spot and USD-M futures), against the reference.

A fault goes into a copy of a capture's frames at a chosen update: dropped updates (a gap), a
duplicated update, two adjacent updates swapped, an update that crosses the book, an update with
an invalid level, or a gap answered first by a stale snapshot. After each fault that breaks
sync, a resync snapshot is built from the true book (tests/dataflows/book_reference.py) right
after a later update, as the REST depth endpoint would return it, and delivered a few updates
later still (its fetch latency). The tests assert that every fault is detected (event kinds,
dead letters, `stats`), that the book says it is out of sync and its samples are NaN, without
depth, until it resyncs, that from the bridging update on it equals the reference again at
every update, and that this happens well within 2 s of event time after the resync snapshot.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from book_reference import (
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
    reference_after,
    run_in_cuts,
    snapshots_after,
    to_columns,
    true_books,
)

from dataflows.book import BookSynchronizer, BookUpdateResult
from engine.batches import BookEvent

VENUES = [pytest.param("spot", False, id="spot"), pytest.param("usdm", True, id="usdm")]
RESYNC = ["resync_requested", "synced"]
EXPECTED = {  # fault -> (BookEvent kinds, dead-letter reasons)
    "drop": (["gap", *RESYNC], []),
    "drop_three": (["gap", *RESYNC], []),
    "swap": (["gap", *RESYNC], []),
    "duplicate": ([], ["stale_delta"]),
    "cross": (["crossed", *RESYNC], []),
    "invalid": (["invalid_update", *RESYNC], ["invalid_level"]),
    "stale_snapshot": (["gap", "resync_requested", "stale_snapshot", *RESYNC], []),
}
STATS = {  # fault -> the `stats` counters it moves
    "drop": ("gaps",), "drop_three": ("gaps",), "swap": ("gaps",), "duplicate": ("stale",),
    "cross": ("crossed",), "invalid": ("invalid_updates", "invalid_levels"),
    "stale_snapshot": ("gaps", "stale_snapshots"),
}
LEVELS = 20


@dataclass(frozen=True)
class Fault:
    """`kind` at the `at`-th update the clean stream applies; the resync snapshot is the true
    book after `taken` more updates, delivered after `delay` more."""

    at: int
    kind: str
    taken: int = 10
    delay: int = 2


@dataclass
class Faulty:
    """A capture with faults: the frames as delivered and what the book must report."""

    frames: list[Frame]
    faults: list[Fault] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    tainted: set[int] = field(default_factory=set)  # updates whose content was changed
    resyncs: list[Snapshot] = field(default_factory=list)  # the good resync snapshots


def inject(clean: list[Frame], futures: bool, faults: list[Fault]) -> Faulty:
    applied = [update for update, _ in true_books(clean, futures)]
    stamps: dict[int, tuple[int, int]] = {}  # u -> (ts_event, ts_recv) of a snapshot after u
    for fault in faults:
        if fault.kind != "duplicate":
            taken = applied[fault.at + fault.taken]
            stamps[taken.final_id] = (taken.ts_event,
                                      applied[fault.at + fault.taken + fault.delay].ts_recv)
        if fault.kind == "stale_snapshot":
            old = applied[fault.at - 5]
            stamps[old.final_id] = (old.ts_event, applied[fault.at + 2].ts_recv)
    snapshots = snapshots_after(clean, futures, stamps)
    replaced: dict[int, list[Frame]] = {}  # id of a clean frame -> the frames sent instead
    after: dict[int, list[Frame]] = {}  # id of a clean frame -> snapshots sent after it
    faulty = Faulty([], faults)
    for fault in sorted(faults, key=lambda fault: fault.at):
        update = applied[fault.at]
        kinds_, reasons_ = EXPECTED[fault.kind]
        faulty.kinds += kinds_
        faulty.reasons += reasons_
        if fault.kind in ("drop", "stale_snapshot"):
            replaced[id(update)] = []
        elif fault.kind == "drop_three":
            for lost in applied[fault.at : fault.at + 3]:
                replaced[id(lost)] = []
        elif fault.kind == "swap":
            following = applied[fault.at + 1]
            assert clean.index(following) == clean.index(update) + 1
            replaced[id(update)] = [dataclasses.replace(following, ts_recv=update.ts_recv)]
            replaced[id(following)] = [dataclasses.replace(update, ts_recv=following.ts_recv)]
        elif fault.kind == "duplicate":
            replaced[id(update)] = [update, dataclasses.replace(update, ts_recv=update.ts_recv + 1)]
        elif fault.kind == "cross":
            replaced[id(update)] = [dataclasses.replace(update, bids=(*update.bids, (1e7, 1.0)))]
            faulty.tainted.add(update.final_id)
        elif fault.kind == "invalid":
            replaced[id(update)] = [dataclasses.replace(update,
                                                        bids=(*update.bids, (1.0, math.nan)))]
        if fault.kind == "stale_snapshot":
            stale = snapshots[applied[fault.at - 5].final_id]
            after.setdefault(id(applied[fault.at + 2]), []).append(stale)
        if fault.kind != "duplicate":
            resync = snapshots[applied[fault.at + fault.taken].final_id]
            after.setdefault(id(applied[fault.at + fault.taken + fault.delay]), []).append(resync)
            faulty.resyncs.append(resync)
    for frame in clean:
        faulty.frames += replaced.get(id(frame), [frame]) + after.get(id(frame), [])
    return faulty


def head(clean: list[Frame], futures: bool, updates: int) -> list[Frame]:
    """The clean stream up to its `updates`-th applied update."""
    last = next(itertools.islice(true_books(clean, futures), updates - 1, None))[0]
    return clean[: next(i for i, frame in enumerate(clean) if frame is last) + 1]


def out_of_sync(boundaries: np.ndarray, events: list[BookEvent]) -> np.ndarray:
    """Where samples must be NaN: before the first "synced", and from each loss of sync
    (the "resync_requested" of a book in sync) to the next "synced" (exclusive, inclusive]."""
    result = np.zeros(len(boundaries), dtype=bool)
    lost_at, in_sync = -(2**62), False
    for event in events:
        if event.kind == "synced":
            result |= (boundaries > lost_at) & (boundaries <= event.ts_event)
            in_sync = True
        elif event.kind == "resync_requested" and in_sync:
            lost_at, in_sync = event.ts_event, False
    if not in_sync:
        result |= boundaries > lost_at
    return result


def check_run(clean: list[Frame], futures: bool, faulty: Faulty,
              max_buffered_updates: int = 10_000) -> tuple[list[int], int]:
    """Run the faulty stream, cut before each injected snapshot, and assert everything the
    module docstring promises. Returns the event-time latencies (ns) from each resync snapshot
    to the book being equal to the reference again, and the number of NaN samples after the
    first."""
    lockstep = Lockstep(clean, futures, frozenset(faulty.tainted))
    book = lockstep.book = BookSynchronizer("BTCUSDT", depth_levels=LEVELS,
                                            max_buffered_updates=max_buffered_updates)
    clean_ids = {id(frame) for frame in clean}
    cuts = [i for i, frame in enumerate(faulty.frames)
            if isinstance(frame, Snapshot) and id(frame) not in clean_ids]
    results: list[BookUpdateResult] = []
    for start, stop in itertools.pairwise([0, *cuts, len(faulty.frames)]):
        results.append(book.apply(*to_columns(faulty.frames[start:stop]), observer=lockstep))
    for result in results[:-1]:  # each cut is right before an injected snapshot
        assert not result.in_sync and result.needs_snapshot
    assert results[-1].in_sync
    events = [event for result in results for event in result.events]
    assert kinds(*results) == ["synced", *faulty.kinds]
    assert reasons(*results) == faulty.reasons
    moved = [stat for fault in faulty.faults for stat in STATS[fault.kind]]
    for stat in {stat for stats in STATS.values() for stat in stats}:
        assert book.stats[stat] == moved.count(stat), stat
    assert book.stats["resyncs"] == faulty.kinds.count("resync_requested")
    assert book.stats["syncs"] == 1 + len(faulty.resyncs)
    assert_sides_consistent(book)

    # After each resync the book equals the reference from the bridging update on (Lockstep
    # compares every update and forbids skipping one while in sync); the bridge is checked.
    synced = [event for event in events if event.kind == "synced"][1:]
    checked = {final_id for final_id, _ in lockstep.checks}
    latencies = []
    for event, snapshot in zip(synced, faulty.resyncs, strict=True):
        bridge = int(event.detail.split(" u=")[1].split()[0])
        assert bridge in checked
        latencies.append(event.ts_event - snapshot.ts_event)
    assert all(0 <= latency < 1_000_000_000 for latency in latencies), latencies

    # Samples: NaN exactly while out of sync; elsewhere the true book after the last update
    # applied before the sample time. Depth rows exist exactly where the samples are not NaN.
    track = [result.track for result in results]
    boundaries = np.concatenate([t.ts_event for t in track])
    values = np.column_stack([np.concatenate([getattr(t, name) for t in track]) for name in
                              ("bid_price", "bid_qty", "ask_price", "ask_qty", "spread",
                               "top_imbalance", "depth_bid_5pct", "depth_ask_5pct")])
    nan = out_of_sync(boundaries, events)
    assert (~nan).sum() > len(boundaries) // 2
    assert np.isnan(values[nan]).all() and not np.isnan(values[~nan]).any()
    depth_times = np.concatenate([result.depth.ts_event for result in results])
    np.testing.assert_array_equal(depth_times, boundaries[~nan])
    applied_u = [final_id for final_id, _ in lockstep.applied]
    applied_ts = [ts_event for _, ts_event in lockstep.applied]
    last_before = [applied_u[bisect.bisect_left(applied_ts, b) - 1] for b in boundaries[~nan]]
    expected = reference_after(clean, futures, last_before, LEVELS)
    for row, (features, _) in zip(values[~nan], expected, strict=True):
        assert tuple(row.tolist()) == features
    bid_prices = np.concatenate([result.depth.bid_price for result in results])
    np.testing.assert_array_equal(bid_prices, [top[0] for _, top in expected])
    return latencies, int(nan[1:].sum())


@pytest.fixture(scope="module")
def captures(spot_captures: list[Path], usdm_captures: list[Path]) -> dict[str, list[Frame]]:
    return {"spot": read_book_frames(spot_captures), "usdm": read_book_frames(usdm_captures)}


@pytest.mark.parametrize(("venue", "futures"), VENUES)
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_each_fault_is_detected_and_healed(captures: dict[str, list[Frame]], venue: str,
                                           futures: bool, kind: str) -> None:
    clean = head(captures[venue], futures, 320)
    faulty = inject(clean, futures, [Fault(at=150, kind=kind, taken=40, delay=3)])
    _, nan_samples = check_run(clean, futures, faulty)
    assert nan_samples > 0 or kind == "duplicate"


@pytest.mark.slow
@pytest.mark.parametrize(("venue", "futures"), VENUES)
def test_seeded_faults_across_the_whole_capture(captures: dict[str, list[Frame]], venue: str,
                                                futures: bool) -> None:
    clean = captures[venue]
    faults = seeded_faults(clean, futures, seed=7)
    assert {fault.kind for fault in faults} == set(EXPECTED)
    latencies, _ = check_run(clean, futures, inject(clean, futures, faults))
    assert len(latencies) == sum(fault.kind != "duplicate" for fault in faults)


def seeded_faults(clean: list[Frame], futures: bool, seed: int) -> list[Fault]:
    """One fault every ~250 updates, kinds in a seeded random order, random snapshot timing."""
    rng = random.Random(seed)
    updates = sum(1 for _ in true_books(clean, futures))
    kinds_ = list(EXPECTED) * (updates // 250 // len(EXPECTED) + 1)
    rng.shuffle(kinds_)
    return [Fault(at, kind, taken=rng.randint(3, 40), delay=rng.randint(0, 4))
            for at, kind in zip(range(200, updates - 100, 250), kinds_, strict=False)]


@pytest.mark.slow
@pytest.mark.parametrize(("venue", "futures"), VENUES)
def test_batch_cuts_change_nothing_under_faults(captures: dict[str, list[Frame]], venue: str,
                                                futures: bool) -> None:
    clean = captures[venue]
    frames = inject(clean, futures, seeded_faults(clean, futures, seed=11)).frames
    whole_book, whole = run_in_cuts(BookSynchronizer("BTCUSDT"), frames, [])
    reference = joined(whole)
    assert kinds(*whole).count("synced") > 10
    for seed, count in ((3, 60), (4, 600)):
        cuts = sorted(random.Random(seed).sample(range(1, len(frames)), count))
        book, parts = run_in_cuts(BookSynchronizer("BTCUSDT"), frames, cuts)
        assert_same_outputs(joined(parts), reference)
        assert book.levels() == whole_book.levels() and book.stats == whole_book.stats


@pytest.mark.parametrize(("venue", "futures"), VENUES)
def test_a_stale_first_snapshot_is_reported_and_a_fresh_one_syncs(
        captures: dict[str, list[Frame]], venue: str, futures: bool) -> None:
    clean = head(captures[venue], futures, 200)
    first = next(frame for frame in clean if isinstance(frame, Snapshot))
    first_update = next(frame for frame in clean if isinstance(frame, Depth))
    applied = [update for update, _ in true_books(clean, futures)]
    stale = dataclasses.replace(first, last_update_id=first_update.first_id - 10)
    fresh_at = applied[40]
    fresh = snapshots_after(clean, futures, {fresh_at.final_id: (fresh_at.ts_event,
                                                                 fresh_at.ts_recv)})
    frames = [stale if frame is first else frame for frame in clean]
    frames.insert(frames.index(fresh_at) + 1, fresh[fresh_at.final_id])
    lockstep = Lockstep(clean, futures)
    book = lockstep.book = BookSynchronizer("BTCUSDT")
    result = book.apply(*to_columns(frames), observer=lockstep)
    assert kinds(result) == ["stale_snapshot", "resync_requested", "synced"]
    assert f"lastUpdateId={stale.last_update_id} is older than the first update" in \
        result.events[0].detail
    bridge = 40 if futures else 41  # futures: the update with u == lastUpdateId bridges
    assert result.in_sync and len(lockstep.checks) == len(applied) - bridge
