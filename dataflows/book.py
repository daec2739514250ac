"""Local L2 order book of one symbol, kept in sync with Binance's diff-depth stream.

The procedure is Binance's "How to manage a local order book correctly": for spot, the Spot API
docs, WebSocket Streams (developers.binance.com/docs/binance-spot-api-docs/web-socket-streams);
for USD-M futures, developers.binance.com/docs/derivatives/usds-margined-futures/
websocket-market-streams/How-to-manage-a-local-order-book-correctly. U and u are an update's
first and final update ids, pu (futures only) the u of the update before it.

1. Buffer the updates until a REST snapshot (lastUpdateId) arrives.
2. Drop buffered updates the snapshot covers: spot u <= lastUpdateId, futures u < lastUpdateId.
3. The first update left must bridge the snapshot: spot U <= lastUpdateId + 1 <= u, futures
   U <= lastUpdateId <= u. If its U is later, the snapshot is stale: fetch another.
4. Every later update must continue the last applied one: spot U <= last u + 1 (normally equal;
   an update that overlaps the last one is applied, quantities being absolute), futures
   pu == last u. Otherwise updates were missed (a gap): discard the book, start again at 1.
5. Each level carries the absolute quantity; 0 removes the level (absent levels are no error).

The procedure is chosen per symbol: from the `futures` argument, or else by the first update
(pu >= 0 is futures; spot frames have no pu, parsed as -1). An update of the other kind later is
dead-lettered ("procedure_mismatch") and never applied: a symbol does not switch procedure.

Out of sync (a gap, a crossed book after an update, a stale or invalid snapshot, an update with
invalid levels) the book journals a `BookEvent` of that kind with a detail naming the ids or
prices involved, then "resync_requested", counts both in `stats`, and is never used until a
snapshot bridges the stream again ("synced"). Live mode learns it must fetch a snapshot from
`BookUpdateResult.resync_requested` / `needs_snapshot` (or the "resync_requested" events); a
replay waits for the next snapshot on the tape, buffering updates meanwhile (bounded: past
`max_buffered_updates` the oldest are dropped, counted, and the episode dead-lettered once as
"unsynced_buffer_overflow"). Buffered updates are applied in order of u, so updates reordered
while out of sync are healed by the next snapshot.
A snapshot no newer than the book (in sync: lastUpdateId <= last applied u; waiting for a bridge:
<= the loaded snapshot's) is ignored, counted: the book is at least as new. A newer snapshot
arriving in sync (after a reconnect, or a venue that resends its book, such as Coinbase's and
Kraken's with synthetic ids) is loaded and bridged like the first: the book is unused until the
next update bridges it, without a resync request. Updates older than the book (u <= last
applied u: duplicates, late reordered frames) are dead-lettered as "stale_delta"; invalid rows
(NaN, infinite or negative price or size, unknown side) as "invalid_level". An update that
changed no level arrives as one `NO_LEVEL` placeholder row: its ids count, it moves no level.

Snapshots and updates of a batch are taken in arrival order: updates in the order given, each
snapshot before the first update received after it (a snapshot received at the same ts_recv as an
update comes after that update).

The book is sampled on a fixed grid of `sample_interval_ns` in event time. The sample stamped B
is the book after every update with ts_event < B, taken when an update with ts_event >= B arrives
or when the batch's watermark reaches B (every event before B delivered), so that samples do not
depend on how batches are cut. `BookTrack` has a row at every boundary crossed, NaN unless the
book was in sync then; `DepthSamples` has rows only while in sync. "In sync" is what the stream
delivered before B shows: an update lost in transit is, like one still in flight, missing from
the sample before B, and the update that reveals the gap turns every later sample NaN. (NaN for
the samples before the revealing update too would make samples depend on batch cuts.)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from dataflows.book_rows import split_levels
from dataflows.book_side import BookSide
from dataflows.book_track import TRACK_FIELDS, BookTrack, depth_samples, track_row
from engine.batches import (
    ASK,
    BID,
    BookDeltaColumns,
    BookEvent,
    BookSnapshotColumns,
    DeadLetter,
    DepthSamples,
)

__all__ = ["IN_SYNC", "TRACK_FIELDS", "WAITING_FOR_BRIDGE", "WAITING_FOR_SNAPSHOT",
           "BookSynchronizer", "BookTrack", "BookUpdateResult"]

STAGE = "sync_book"
WAITING_FOR_SNAPSHOT = "waiting_for_snapshot"
WAITING_FOR_BRIDGE = "waiting_for_bridge"  # snapshot loaded, first continuing update not seen
IN_SYNC = "in_sync"
_NAN_ROW = (math.nan,) * len(TRACK_FIELDS)
_STATS = ("applied", "stale", "covered", "gaps", "crossed", "stale_snapshots", "invalid_updates",
          "invalid_snapshots", "ignored_snapshots", "reloaded_snapshots", "invalid_levels",
          "overflowed", "procedure_mismatches", "resyncs", "syncs")


@dataclass(frozen=True)
class BookUpdateResult:
    """What one `BookSynchronizer.apply` call produced.

    `resync_requested`: this call lost sync and asked for a new snapshot. `needs_snapshot`: the
    book ends the call waiting for a snapshot (from the start, or after a resync request); live
    mode fetches one from the venue's REST depth endpoint, a replay waits for the tape's next.
    """

    track: BookTrack
    depth: DepthSamples
    events: list[BookEvent]
    dead_letters: list[DeadLetter]
    in_sync: bool
    resync_requested: bool = False
    needs_snapshot: bool = False


class _Update(NamedTuple):
    """One diff-depth update: its ids, its valid levels per side and the dead letters of its
    invalid rows."""

    ts_event: int
    ts_recv: int
    first_id: int
    final_id: int
    prev_final_id: int
    bid_prices: list[float]
    bid_qtys: list[float]
    ask_prices: list[float]
    ask_qtys: list[float]
    invalid: tuple[DeadLetter, ...]

    def ids(self) -> str:
        previous = f" pu={self.prev_final_id}" if self.prev_final_id >= 0 else ""
        return f"U={self.first_id} u={self.final_id}{previous}"


class _Snapshot(NamedTuple):
    """One REST snapshot: its id, its valid levels per side and the dead letters of its invalid
    rows."""

    ts_event: int
    ts_recv: int
    last_update_id: int
    bid_prices: list[float]
    bid_qtys: list[float]
    ask_prices: list[float]
    ask_qtys: list[float]
    invalid: tuple[DeadLetter, ...]


class BookSynchronizer:
    """The local book of one symbol; feed it deltas and snapshots with `apply`.

    `futures`: True for the USD-M procedure (pu chain), False for spot, None to take it from the
    first update. State is plain dicts, lists and ints, so the synchronizer pickles (Bytewax
    recovery snapshots it).
    """

    def __init__(self, symbol: str, sample_interval_ns: int = 1_000_000_000,
                 depth_levels: int = 20, futures: bool | None = None,
                 max_buffered_updates: int = 10_000) -> None:
        if sample_interval_ns <= 0 or depth_levels < 1 or max_buffered_updates < 1:
            raise ValueError("sample_interval_ns must be positive, depth_levels and "
                             "max_buffered_updates at least 1")
        self.symbol = symbol
        self.sample_interval_ns = sample_interval_ns
        self.depth_levels = depth_levels
        self.futures = futures
        self.procedure_origin = "the futures argument" if futures is not None else ""
        self.max_buffered_updates = max_buffered_updates
        self.bids = BookSide(BID)
        self.asks = BookSide(ASK)
        self.state = WAITING_FOR_SNAPSHOT
        self.snapshot_id = -1  # lastUpdateId of the last snapshot loaded
        self.last_update_id = -1  # u of the last applied update
        self.buffer: deque[_Update] = deque()
        self.overflowing = False  # the buffer dropped updates since the last snapshot
        self.clock = -1  # latest ts_event seen, stamps events
        self.next_sample = -1  # next boundary to sample; -1 until the first update
        self.stats = dict.fromkeys(_STATS, 0)
        # Per-call outputs, reset by `apply`.
        self._events: list[BookEvent] = []
        self._dead: list[DeadLetter] = []
        self._sample_times: list[int] = []
        self._sample_rows: list[tuple[float, ...]] = []
        self._depth_times: list[int] = []
        self._depth_rows: list[tuple[list[float], ...]] = []
        self._observer: Callable[[int], None] | None = None

    @property
    def in_sync(self) -> bool:
        return self.state == IN_SYNC

    @property
    def needs_snapshot(self) -> bool:
        """True while no usable snapshot is loaded: live mode should fetch one."""
        return self.state == WAITING_FOR_SNAPSHOT

    @property
    def procedure(self) -> str:
        """The procedure followed: futures, spot, or undecided (before the first update, when no
        `futures` argument was given)."""
        return "undecided" if self.futures is None else "futures" if self.futures else "spot"

    def levels(self) -> tuple[dict[float, float], dict[float, float]]:
        """Copies of the current bid and ask levels, price -> quantity."""
        return self.bids.as_dict(), self.asks.as_dict()

    def apply(self, deltas: BookDeltaColumns, snapshots: BookSnapshotColumns,
              watermark: int | None = None,
              observer: Callable[[int], None] | None = None) -> BookUpdateResult:
        """Take a batch of updates and snapshots in arrival order; return samples and events.

        With `watermark` (every event with ts_event < watermark delivered), the grid boundaries up
        to it are sampled too. `observer`, for tests and debugging, is called with u after every
        applied update.
        """
        self._events, self._dead = [], []
        self._sample_times, self._sample_rows = [], []
        self._depth_times, self._depth_rows = [], []
        self._observer = observer
        resyncs = self.stats["resyncs"]
        updates = [_Update(*row) for row in split_levels(deltas, "book_deltas", STAGE,
                                                         self.symbol)]
        snapshot_list = [_Snapshot(*row) for row in split_levels(snapshots, "book_snapshots",
                                                                 STAGE, self.symbol)]
        next_snapshot = 0
        for update in updates:
            while (next_snapshot < len(snapshot_list)
                   and snapshot_list[next_snapshot].ts_recv < update.ts_recv):
                self._on_snapshot(snapshot_list[next_snapshot])
                next_snapshot += 1
            self._on_update(update)
        for snapshot in snapshot_list[next_snapshot:]:
            self._on_snapshot(snapshot)
        if watermark is not None and self.next_sample >= 0 and watermark >= self.next_sample:
            self._sample_until(watermark)
        self._observer = None
        return BookUpdateResult(
            BookTrack.from_rows(self._sample_times, self._sample_rows),
            depth_samples(self._depth_times, self._depth_rows, self.depth_levels),
            self._events, self._dead, self.in_sync,
            resync_requested=self.stats["resyncs"] > resyncs, needs_snapshot=self.needs_snapshot)

    # ------------------------------------------------------------ the sync procedure

    def _on_snapshot(self, snapshot: _Snapshot) -> None:
        self.clock = max(self.clock, snapshot.ts_event)
        described = f"snapshot lastUpdateId={snapshot.last_update_id}"
        if snapshot.invalid:
            self.stats["invalid_levels"] += len(snapshot.invalid)
            self._dead.extend(snapshot.invalid)
            self.stats["invalid_snapshots"] += 1
            self._event("invalid_snapshot", f"{described} has {len(snapshot.invalid)} invalid "
                        "level(s) (dead-lettered as invalid_level); a book loaded from it would "
                        "be wrong, so it is rejected")
            if self.state == WAITING_FOR_SNAPSHOT:
                self._lose_sync("invalid snapshot")
            return
        newest = self.last_update_id if self.state == IN_SYNC else self.snapshot_id
        if self.state != WAITING_FOR_SNAPSHOT and snapshot.last_update_id <= newest:
            self.stats["ignored_snapshots"] += 1  # the book is at least as new
            return
        if self.state == IN_SYNC:  # newer than the book: a reconnect, or a venue's fresh book
            self.stats["reloaded_snapshots"] += 1
        self.bids.load(snapshot.bid_prices, snapshot.bid_qtys)
        self.asks.load(snapshot.ask_prices, snapshot.ask_qtys)
        self.snapshot_id = snapshot.last_update_id
        self.state = WAITING_FOR_BRIDGE
        self.overflowing = False
        buffered = sorted(self.buffer, key=lambda update: update.final_id)
        self.buffer = deque()
        for update in buffered:
            self._process(update)

    def _on_update(self, update: _Update) -> None:
        if update.invalid:
            self.stats["invalid_levels"] += len(update.invalid)
            self._dead.extend(update.invalid)
        is_futures = update.prev_final_id >= 0
        if self.futures is None:
            self.futures = is_futures
            self.procedure_origin = f"the first update ({update.ids()})"
        elif is_futures != self.futures:
            self.stats["procedure_mismatches"] += 1
            self._dead_letter("procedure_mismatch", f"update {update.ids()} is a "
                              f"{'futures' if is_futures else 'spot'} update, but {self.symbol} "
                              f"follows the {self.procedure} procedure (set by "
                              f"{self.procedure_origin}); skipped",
                              "book_deltas", update.ts_event, update.ts_recv)
            return
        self.clock = max(self.clock, update.ts_event)
        if self.next_sample < 0:
            interval = self.sample_interval_ns
            self.next_sample = (update.ts_event // interval + 1) * interval
        elif update.ts_event >= self.next_sample:
            self._sample_until(update.ts_event)
        self._process(update)

    def _process(self, update: _Update) -> None:
        if self.state == IN_SYNC:
            self._continue(update)
        elif self.state == WAITING_FOR_BRIDGE:
            self._bridge(update)
        else:
            self._buffer(update)

    def _buffer(self, update: _Update) -> None:
        if len(self.buffer) >= self.max_buffered_updates:
            dropped = self.buffer.popleft()
            self.stats["overflowed"] += 1
            if not self.overflowing:  # one dead letter per episode; stats count every update
                self.overflowing = True
                self._dead_letter("unsynced_buffer_overflow", f"buffer of "
                                  f"{self.max_buffered_updates} updates full while waiting for a "
                                  f"snapshot: dropping the oldest, from update {dropped.ids()} "
                                  "on, until a snapshot arrives (counted in stats['overflowed'])",
                                  "book_deltas", dropped.ts_event, dropped.ts_recv)
        self.buffer.append(update)

    def _bridge(self, update: _Update) -> None:
        snapshot_id = self.snapshot_id
        covered = update.final_id < snapshot_id if self.futures else update.final_id <= snapshot_id
        if covered:
            self.stats["covered"] += 1
            return
        first_allowed = snapshot_id if self.futures else snapshot_id + 1
        if update.first_id > first_allowed:
            self.stats["stale_snapshots"] += 1
            self._event("stale_snapshot", f"snapshot lastUpdateId={snapshot_id} is older than "
                        f"the first update it must continue ({update.ids()}, needs "
                        f"U <= {first_allowed}): updates between them are missing")
            self._lose_sync("stale snapshot", update)
            return
        if update.invalid:
            self._reject_invalid(update)
            return
        self._apply_levels(update)
        self.state = IN_SYNC
        self.stats["syncs"] += 1
        self._event("synced", f"snapshot lastUpdateId={snapshot_id} bridged by update "
                    f"{update.ids()} ({self.procedure} procedure)")
        self._check_crossed()

    def _continues(self, update: _Update) -> bool:
        if self.futures:
            return update.prev_final_id == self.last_update_id
        return update.first_id <= self.last_update_id + 1

    def _continue(self, update: _Update) -> None:
        last = self.last_update_id
        if update.final_id <= last:
            self.stats["stale"] += 1
            self._dead_letter("stale_delta", f"update {update.ids()} is not newer than the last "
                              f"applied u={last}; skipped", "book_deltas", update.ts_event,
                              update.ts_recv)
            return
        if not self._continues(update):
            self.stats["gaps"] += 1
            if self.futures:
                expected = f"pu={last}"
            else:
                expected = f"U <= {last + 1}; update ids {last + 1}..{update.first_id - 1} missed"
            self._event("gap", f"after u={last} expected {expected}, got {update.ids()}")
            self._lose_sync("sequence gap", update)
            return
        if update.invalid:
            self._reject_invalid(update)
            return
        self._apply_levels(update)
        self._check_crossed()

    def _reject_invalid(self, update: _Update) -> None:
        self.stats["invalid_updates"] += 1
        self._event("invalid_update", f"update {update.ids()} has {len(update.invalid)} invalid "
                    "level(s) (dead-lettered as invalid_level): the book no longer knows those "
                    "levels")
        self._lose_sync("invalid update", update)

    def _apply_levels(self, update: _Update) -> None:
        self.bids.apply(update.bid_prices, update.bid_qtys)
        self.asks.apply(update.ask_prices, update.ask_qtys)
        self.last_update_id = update.final_id
        self.stats["applied"] += 1
        if self._observer is not None:
            self._observer(update.final_id)

    def _check_crossed(self) -> None:
        bid, ask = self.bids.best(), self.asks.best()
        if bid is not None and ask is not None and bid[0] >= ask[0]:
            self.stats["crossed"] += 1
            self._event("crossed", f"best bid {bid[0]} >= best ask {ask[0]} after "
                        f"u={self.last_update_id}: an update was missed or corrupt")
            self._lose_sync("crossed book")

    def _lose_sync(self, reason: str, update: _Update | None = None) -> None:
        """Mark the book unusable, request a snapshot and keep `update` for the next bridge."""
        self.state = WAITING_FOR_SNAPSHOT
        self.stats["resyncs"] += 1
        self._event("resync_requested", f"{reason}: book unused until a snapshot newer than "
                    f"u={self.last_update_id} is bridged (live: fetch one; replay: the tape's "
                    "next snapshot)")
        if update is not None:
            self._buffer(update)

    # ------------------------------------------------------------ sampling

    def _sample_until(self, time: int) -> None:
        """Sample at every grid boundary from `next_sample` up to and including `time`; NaN (and
        no depth) unless the book is in sync."""
        interval = self.sample_interval_ns
        last = time // interval * interval
        boundaries = list(range(self.next_sample, last + 1, interval))
        self.next_sample = last + interval
        usable = self.in_sync
        row = track_row(self.bids, self.asks) if usable else _NAN_ROW
        self._sample_times.extend(boundaries)
        self._sample_rows.extend([row] * len(boundaries))
        if usable:
            bid_prices, bid_qtys = self.bids.top(self.depth_levels)
            ask_prices, ask_qtys = self.asks.top(self.depth_levels)
            top = (bid_prices, bid_qtys, ask_prices, ask_qtys)
            self._depth_times.extend(boundaries)
            self._depth_rows.extend([top] * len(boundaries))

    # ------------------------------------------------------------ events and dead letters

    def _event(self, kind: str, detail: str) -> None:
        self._events.append(BookEvent(self.symbol, self.clock, kind, detail))

    def _dead_letter(self, reason: str, detail: str, source: str, ts_event: int | None,
                     ts_recv: int | None) -> None:
        self._dead.append(DeadLetter(STAGE, reason, detail, source, self.symbol, ts_event,
                                     ts_recv))
