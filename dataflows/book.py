"""Local L2 order book of one symbol, kept in sync with the venue's diff-depth stream.

Binance's procedure (spot; futures in brackets): buffer the diff-depth updates, take a REST
snapshot, drop buffered updates with u <= lastUpdateId [u < lastUpdateId], apply the first one
only if U <= lastUpdateId + 1 <= u [U <= lastUpdateId <= u], then require every update to continue
the previous one, U == previous u + 1 [pu == previous u]. A break is a gap: the book is marked out
of sync and a new snapshot is awaited; the live feed fetches one when it sees "resync_requested",
a replay waits for the next snapshot on the tape. A crossed book after an update, and a stale
snapshot (older than the first buffered update it must continue), are treated the same way.
Old or repeated updates (u <= last applied u) are skipped and routed to dead letters as
"stale_delta"; bad rows (NaN, infinite or negative price or size, unknown side) as "invalid_level".
Updates already covered by a snapshot are dropped as the procedure says, and counted in `stats`.

Snapshots and updates of a batch are taken in arrival order: updates in the order given, each
snapshot before the first update received after it (a snapshot received at the same ts_recv as an
update comes after that update). A snapshot that arrives while the book is in sync is ignored
(counted): the book it would replace is already exact.

The book is sampled on a fixed grid of `sample_interval_ns` in event time. The sample stamped B
is the book after every update with ts_event < B, taken when an update with ts_event >= B arrives
or when the batch's watermark reaches B, so that samples do not depend on how batches are cut.
`BookTrack` has a row at every boundary crossed, with NaN features while the book is out of sync;
`DepthSamples` has rows only while in sync. Both are small per-boundary rows, not per update.

State is plain lists and ints (picklable): per side, sorted prices with their quantities, so
the best level and the levels within 5% of mid are one bisect away, which is what sampling needs.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.batches import (
    ASK,
    BID,
    BookDeltaColumns,
    BookEvent,
    BookSnapshotColumns,
    DeadLetter,
    DepthSamples,
)

STAGE = "sync_book"
WAITING_FOR_SNAPSHOT = "waiting_for_snapshot"
WAITING_FOR_BRIDGE = "waiting_for_bridge"  # snapshot loaded, first continuing update not seen
IN_SYNC = "in_sync"
TRACK_FIELDS = ("bid_price", "bid_qty", "ask_price", "ask_qty", "spread", "top_imbalance",
                "depth_bid_5pct", "depth_ask_5pct")


@dataclass(frozen=True)
class BookTrack:
    """Top-of-book features of the synced book, one row per sample time (see module docs).

    `spread` is ask - bid in price units, `top_imbalance` is (bid_qty - ask_qty) / (bid_qty +
    ask_qty) at the best levels, `depth_bid_5pct` the base quantity on bid levels priced at or
    above 0.95 * mid and `depth_ask_5pct` on ask levels at or below 1.05 * mid.
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


@dataclass(frozen=True)
class BookUpdateResult:
    """What one `BookSynchronizer.apply` call produced."""

    track: BookTrack
    depth: DepthSamples
    events: list[BookEvent]
    dead_letters: list[DeadLetter]
    in_sync: bool


class _Update(NamedTuple):
    """One diff-depth event: its ids and its (valid) level rows."""

    ts_event: int
    ts_recv: int
    first_id: int
    final_id: int
    prev_final_id: int
    sides: list[int]
    prices: list[float]
    qtys: list[float]


class _Snapshot(NamedTuple):
    ts_event: int
    ts_recv: int
    last_update_id: int
    sides: list[int]
    prices: list[float]
    qtys: list[float]


class _Side:
    """One side of the book: prices ascending and their quantities, in two aligned lists.

    A level is one bisect away, the best level is at an end, and the levels within a price band
    are a slice, which is what sampling needs; the lists pickle as they are.
    """

    def __init__(self) -> None:
        self.prices: list[float] = []
        self.qtys: list[float] = []

    def load(self, levels: dict[float, float]) -> None:
        self.prices = sorted(price for price, qty in levels.items() if qty > 0)
        self.qtys = [levels[price] for price in self.prices]

    def set(self, price: float, qty: float) -> None:
        prices = self.prices
        index = bisect_left(prices, price)
        present = index < len(prices) and prices[index] == price
        if qty == 0.0:
            if present:
                del prices[index]
                del self.qtys[index]
        elif present:
            self.qtys[index] = qty
        else:
            prices.insert(index, price)
            self.qtys.insert(index, qty)

    def as_dict(self) -> dict[float, float]:
        return dict(zip(self.prices, self.qtys, strict=True))

    def depth(self, low: float, high: float) -> float:
        """Total quantity on levels priced in [low, high]."""
        start, stop = bisect_left(self.prices, low), bisect_right(self.prices, high)
        return math.fsum(self.qtys[start:stop])


class BookSynchronizer:
    """The local book of one symbol; feed it deltas and snapshots with `apply`."""

    def __init__(self, symbol: str, sample_interval_ns: int = 1_000_000_000,
                 depth_levels: int = 20, futures: bool = False,
                 max_buffered_updates: int = 100_000) -> None:
        if sample_interval_ns <= 0 or depth_levels < 1:
            raise ValueError("sample_interval_ns must be positive and depth_levels at least 1")
        self.symbol = symbol
        self.sample_interval_ns = sample_interval_ns
        self.depth_levels = depth_levels
        self.futures = futures
        self.max_buffered_updates = max_buffered_updates
        self.bids = _Side()
        self.asks = _Side()
        self.state = WAITING_FOR_SNAPSHOT
        self.snapshot_id = -1  # lastUpdateId of the snapshot being bridged
        self.last_update_id = -1  # u of the last applied update
        self.buffer: deque[_Update] = deque()
        self.clock = -1  # latest ts_event seen, stamps events
        self.next_sample = -1  # next boundary to sample; -1 until the first update
        self.stats = dict.fromkeys(("applied", "stale", "covered", "gaps", "crossed",
                                    "stale_snapshots", "ignored_snapshots", "invalid_levels",
                                    "overflowed"), 0)
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
        overflowed = self.stats["overflowed"]
        snapshot_list = self._split_snapshots(snapshots)
        next_snapshot = 0
        for update in self._split_updates(deltas):
            while (next_snapshot < len(snapshot_list)
                   and snapshot_list[next_snapshot].ts_recv < update.ts_recv):
                self._on_snapshot(snapshot_list[next_snapshot])
                next_snapshot += 1
            self._on_update(update)
        for snapshot in snapshot_list[next_snapshot:]:
            self._on_snapshot(snapshot)
        if watermark is not None and self.next_sample >= 0 and watermark >= self.next_sample:
            self._sample_until(watermark)
        if self.stats["overflowed"] > overflowed:
            count = self.stats["overflowed"] - overflowed
            self._dead_letter("unsynced_buffer_overflow", f"{count} oldest updates dropped while "
                              f"waiting for a snapshot (buffer of {self.max_buffered_updates})",
                              "book_deltas", self.clock, None)
        self._observer = None
        return BookUpdateResult(self._track(), self._depth(), self._events, self._dead,
                                self.in_sync)

    # ------------------------------------------------------------ input splitting

    def _runs(self, batch: BookDeltaColumns | BookSnapshotColumns, keys: tuple[str, ...],
              source: str) -> Iterator[tuple[int, list[int], list[float], list[float]]]:
        """Each run of rows that share `keys` (one update or snapshot): its first row and its
        valid sides, prices and quantities. Invalid rows are routed to dead letters."""
        columns = batch.as_dict()
        change = np.zeros(max(len(batch) - 1, 0), dtype=bool)
        for key in keys:
            change |= columns[key][1:] != columns[key][:-1]
        starts = [0, *(np.flatnonzero(change) + 1).tolist(), len(batch)]
        side, price, qty = batch.side, batch.price, batch.qty
        with np.errstate(invalid="ignore"):
            valid = (np.isfinite(price) & (price > 0) & np.isfinite(qty) & (qty >= 0)
                     & ((side == BID) | (side == ASK)))
        for row in np.flatnonzero(~valid).tolist():
            self.stats["invalid_levels"] += 1
            ids = " ".join(f"{key}={int(columns[key][row])}" for key in keys)
            level = f"side={int(side[row])} price={float(price[row])} qty={float(qty[row])}"
            self._dead_letter("invalid_level", f"level {level} ({ids}) is not a valid book "
                              "level; row skipped", f"{source} row {row}",
                              int(batch.ts_event[row]), int(batch.ts_recv[row]), level)
        sides, prices, qtys = side.tolist(), price.tolist(), qty.tolist()
        for start, stop in itertools.pairwise(starts):
            if valid[start:stop].all():
                yield start, sides[start:stop], prices[start:stop], qtys[start:stop]
            else:
                keep = [row for row in range(start, stop) if valid[row]]
                yield (start, [sides[row] for row in keep], [prices[row] for row in keep],
                       [qtys[row] for row in keep])

    def _split_updates(self, deltas: BookDeltaColumns) -> list[_Update]:
        if len(deltas) == 0:
            return []
        keys = ("first_update_id", "final_update_id", "ts_event", "ts_recv")
        ts_event, ts_recv = deltas.ts_event.tolist(), deltas.ts_recv.tolist()
        first, final = deltas.first_update_id.tolist(), deltas.final_update_id.tolist()
        previous = deltas.prev_final_update_id.tolist()
        return [_Update(ts_event[start], ts_recv[start], first[start], final[start],
                        previous[start], sides, prices, qtys)
                for start, sides, prices, qtys in self._runs(deltas, keys, "book_deltas")]

    def _split_snapshots(self, snapshots: BookSnapshotColumns) -> list[_Snapshot]:
        if len(snapshots) == 0:
            return []
        keys = ("last_update_id", "ts_recv")
        return [_Snapshot(int(snapshots.ts_event[start]), int(snapshots.ts_recv[start]),
                          int(snapshots.last_update_id[start]), sides, prices, qtys)
                for start, sides, prices, qtys in self._runs(snapshots, keys, "book_snapshots")]

    # ------------------------------------------------------------ the sync procedure

    def _on_snapshot(self, snapshot: _Snapshot) -> None:
        self.clock = max(self.clock, snapshot.ts_event)
        if self.state == IN_SYNC:
            self.stats["ignored_snapshots"] += 1
            return
        rows = list(zip(snapshot.sides, snapshot.prices, snapshot.qtys, strict=True))
        self.bids.load({price: qty for side, price, qty in rows if side == BID})
        self.asks.load({price: qty for side, price, qty in rows if side == ASK})
        self.snapshot_id = snapshot.last_update_id
        self.state = WAITING_FOR_BRIDGE
        buffered, self.buffer = self.buffer, deque()
        for update in buffered:
            self._process(update)

    def _on_update(self, update: _Update) -> None:
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
            self.buffer.popleft()
            self.stats["overflowed"] += 1
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
            self._event("stale_snapshot", f"snapshot lastUpdateId={snapshot_id} is older than the "
                        f"first update it should continue (U={update.first_id})")
            self._event("resync_requested", "stale snapshot")
            self.state = WAITING_FOR_SNAPSHOT
            self._buffer(update)
            return
        self._apply_levels(update)
        self.state = IN_SYNC
        self._event("synced", f"snapshot lastUpdateId={snapshot_id}, first update "
                    f"U={update.first_id} u={update.final_id}")
        self._check_crossed()

    def _continue(self, update: _Update) -> None:
        last = self.last_update_id
        if update.final_id <= last:
            self.stats["stale"] += 1
            self._dead_letter("stale_delta", f"update U={update.first_id} u={update.final_id} is "
                              f"not newer than the last applied u={last}; skipped",
                              "book_deltas", update.ts_event, update.ts_recv)
            return
        if self.futures:
            continuous, expected = update.prev_final_id == last, f"pu={last}"
        else:
            continuous, expected = update.first_id == last + 1, f"U={last + 1}"
        if not continuous:
            self.stats["gaps"] += 1
            self._event("gap", f"expected {expected}, got U={update.first_id} "
                        f"u={update.final_id} pu={update.prev_final_id}")
            self._event("resync_requested", "sequence gap")
            self.state = WAITING_FOR_SNAPSHOT
            self._buffer(update)
            return
        self._apply_levels(update)
        self._check_crossed()

    def _apply_levels(self, update: _Update) -> None:
        for side, price, qty in zip(update.sides, update.prices, update.qtys, strict=True):
            (self.bids if side == BID else self.asks).set(price, qty)
        self.last_update_id = update.final_id
        self.stats["applied"] += 1
        if self._observer is not None:
            self._observer(update.final_id)

    def _check_crossed(self) -> None:
        if self.bids.prices and self.asks.prices and self.bids.prices[-1] >= self.asks.prices[0]:
            self.stats["crossed"] += 1
            self._event("crossed", f"best bid {self.bids.prices[-1]} >= best ask "
                        f"{self.asks.prices[0]} after u={self.last_update_id}")
            self._event("resync_requested", "crossed book")
            self.state = WAITING_FOR_SNAPSHOT

    # ------------------------------------------------------------ sampling

    def _sample_until(self, time: int) -> None:
        """Sample at every grid boundary from `next_sample` up to and including `time`."""
        interval = self.sample_interval_ns
        last = time // interval * interval
        boundaries = list(range(self.next_sample, last + 1, interval))
        self.next_sample = last + interval
        row = self._features()
        self._sample_times.extend(boundaries)
        self._sample_rows.extend([row] * len(boundaries))
        if self.in_sync:
            top = self._top_levels()
            self._depth_times.extend(boundaries)
            self._depth_rows.extend([top] * len(boundaries))

    def _features(self) -> tuple[float, ...]:
        if not (self.in_sync and self.bids.prices and self.asks.prices):
            return (math.nan,) * len(TRACK_FIELDS)
        bid, ask = self.bids.prices[-1], self.asks.prices[0]
        bid_qty, ask_qty = self.bids.qtys[-1], self.asks.qtys[0]
        mid = (bid + ask) / 2.0
        return (bid, bid_qty, ask, ask_qty, ask - bid, (bid_qty - ask_qty) / (bid_qty + ask_qty),
                self.bids.depth(0.95 * mid, math.inf), self.asks.depth(-math.inf, 1.05 * mid))

    def _top_levels(self) -> tuple[list[float], ...]:
        levels = self.depth_levels
        return (self.bids.prices[: -levels - 1 : -1], self.bids.qtys[: -levels - 1 : -1],
                self.asks.prices[:levels], self.asks.qtys[:levels])

    def _track(self) -> BookTrack:
        return BookTrack.from_rows(self._sample_times, self._sample_rows)

    def _depth(self) -> DepthSamples:
        shape = (len(self._depth_rows), self.depth_levels)
        arrays = [np.full(shape, np.nan) for _ in range(4)]
        for row, top in enumerate(self._depth_rows):
            for array, values in zip(arrays, top, strict=True):
                array[row, : len(values)] = values
        return DepthSamples(np.array(self._depth_times, dtype=np.int64), *arrays)

    # ------------------------------------------------------------ events and dead letters

    def _event(self, kind: str, detail: str) -> None:
        self._events.append(BookEvent(self.symbol, self.clock, kind, detail))

    def _dead_letter(self, reason: str, detail: str, source: str, ts_event: int | None,
                     ts_recv: int | None, payload: str = "") -> None:
        self._dead.append(DeadLetter(STAGE, reason, detail, source, self.symbol, ts_event,
                                     ts_recv, payload[:2000]))
