"""Tardis order-book rows as the tape's snapshots and diff-depth updates, with synthetic ids.

The tape's book machinery (`dataflows.book.BookSynchronizer`) follows Binance: a snapshot with
`last_update_id` n, then updates whose ids continue it (spot rule: U == previous u + 1). Tardis
rows carry no update ids, so ids are assigned per symbol, in file order:

- incremental_book_L2: the rows of one update share (timestamp, local_timestamp); a run of
  `is_snapshot` rows is one snapshot that replaces the book. The synchronizer takes rows sharing
  an id and receive time as one snapshot, so every row of a run gets the run's first timestamps.
  The first snapshot of a symbol gets id n = last id + 1, each update the next id: U = u = id,
  and pu = -1 as on spot (a pu >= 0 would make the synchronizer use the futures procedure).
- A later snapshot (after the venue's stream broke, or in the next day's file) must replace a book
  the synchronizer believes in sync, and a snapshot arriving in sync is ignored. So the ids skip
  one: a resync marker (one delta row repeating the snapshot's first level, U = u = last + 2)
  makes a sequence gap, the book goes out of sync as it should, and the snapshot takes id
  last + 2, which covers the marker, so the marker itself is never applied. Markers are counted.
- book_snapshot_N: the first row of a symbol is a snapshot; every later row becomes one update
  holding the levels that changed (new price or new amount) and, with amount 0, the levels that
  left the top N; a row equal to the previous one makes no update. The local book then equals
  each row's top N exactly. Level 0 of every row also becomes a `best_bid_ask` row whose
  `update_id` is the id of the book state it shows.

Everything is vectorised over a block's rows; the state carried between blocks is a few numbers
per symbol (and, for book_snapshot_N, the previous row's levels).
"""

from __future__ import annotations

import numpy as np

from engine.batches import ASK, BID, BookDeltaColumns, BookSnapshotColumns, QuoteColumns

_MAX_COMPARISONS = 4_000_000  # level comparisons per sub-batch: bounds the (rows, N, N) arrays


def _shifted(values: np.ndarray, first: object) -> np.ndarray:
    """`values` moved one row down, with `first` in row 0 (the previous block's last row)."""
    out = np.empty_like(values)
    out[0] = first
    out[1:] = values[:-1]
    return out


class IncrementalBookIds:
    """Synthetic ids for one symbol's incremental_book_L2 rows (see the module docs)."""

    def __init__(self) -> None:
        self.last_id = 0
        self.previous_snapshot = False
        self.previous_times: tuple[int, int] | None = None  # (ts_event, ts_recv) of the last row
        self.snapshot_times = (0, 0)  # first-row times of the snapshot run still open
        self.markers = 0

    def convert(self, is_snapshot: np.ndarray, ts_event: np.ndarray, ts_recv: np.ndarray,
                side: np.ndarray, price: np.ndarray, qty: np.ndarray
                ) -> tuple[BookSnapshotColumns, BookDeltaColumns]:
        """The snapshot rows and the update rows (with any resync markers) of a block."""
        rows = len(is_snapshot)
        if rows == 0:
            return BookSnapshotColumns.empty(), BookDeltaColumns.empty()
        snap = is_snapshot.astype(bool)
        previous_event, previous_recv = self.previous_times or (-1, -1)
        starts = (snap != _shifted(snap, self.previous_snapshot)) | (~snap & (
            (ts_event != _shifted(ts_event, previous_event))
            | (ts_recv != _shifted(ts_recv, previous_recv))))
        if self.previous_times is None:
            starts[0] = True
        steps = np.where(starts, np.where(snap, 2, 1), 0)
        if self.last_id == 0 and starts[0]:
            steps[0] = 1  # the symbol's first id: nothing to resync from
        ids = self.last_id + np.cumsum(steps)
        markers = np.flatnonzero(starts & snap & (steps == 2))

        run_start = np.maximum.accumulate(np.where(starts, np.arange(rows), -1))
        open_run = run_start < 0
        first_row = np.maximum(run_start, 0)
        run_event = np.where(open_run, self.snapshot_times[0], ts_event[first_row])
        run_recv = np.where(open_run, self.snapshot_times[1], ts_recv[first_row])

        snapshots = BookSnapshotColumns(
            ts_event=run_event[snap], ts_recv=run_recv[snap], last_update_id=ids[snap],
            side=side[snap], price=price[snap], qty=qty[snap],
        )
        update = ~snap
        columns = {
            "ts_event": ts_event[update], "ts_recv": ts_recv[update],
            "first_update_id": ids[update], "final_update_id": ids[update],
            "prev_final_update_id": np.full(int(update.sum()), -1, dtype=np.int64),
            "side": side[update],
            "price": price[update], "qty": qty[update],
        }
        if len(markers):
            # Each marker goes before the updates that follow its snapshot.
            positions = np.cumsum(update)[markers]
            marker_values = {
                "ts_event": run_event[markers], "ts_recv": run_recv[markers],
                "first_update_id": ids[markers], "final_update_id": ids[markers],
                "prev_final_update_id": np.full(len(markers), -1, dtype=np.int64),
                "side": side[markers],
                "price": price[markers], "qty": qty[markers],
            }
            columns = {name: np.insert(values, positions, marker_values[name])
                       for name, values in columns.items()}
            self.markers += len(markers)

        self.last_id = int(ids[-1])
        self.previous_snapshot = bool(snap[-1])
        self.previous_times = (int(ts_event[-1]), int(ts_recv[-1]))
        self.snapshot_times = (int(run_event[-1]), int(run_recv[-1]))
        return snapshots, BookDeltaColumns(**columns)


def _pad(levels: np.ndarray, width: int) -> np.ndarray:
    if levels.shape[1] == width:
        return levels
    padded = np.full((levels.shape[0], width), np.nan)
    padded[:, : levels.shape[1]] = levels
    return padded


def _side_changes(prices: np.ndarray, qtys: np.ndarray, previous_prices: np.ndarray,
                  previous_qtys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: levels that are new or changed, and previous levels no longer present."""
    same = prices[:, :, None] == previous_prices[:, None, :]  # NaN (no level) equals nothing
    found = same.any(axis=2)
    previous_qty = np.take_along_axis(previous_qtys, same.argmax(axis=2), axis=1)
    changed = ~np.isnan(prices) & (~found | (qtys != previous_qty))
    removed = ~np.isnan(previous_prices) & ~same.any(axis=1)
    return changed, removed


class TopLevelsBook:
    """book_snapshot_N rows of one symbol as a first snapshot then per-row updates."""

    def __init__(self) -> None:
        self.last_id = 0
        self.previous: tuple[np.ndarray, ...] | None = None  # bid/ask price/qty of the last row

    def convert(self, ts_event: np.ndarray, ts_recv: np.ndarray, bid_price: np.ndarray,
                bid_qty: np.ndarray, ask_price: np.ndarray, ask_qty: np.ndarray
                ) -> tuple[BookSnapshotColumns, BookDeltaColumns, QuoteColumns]:
        """Rows are (rows, N) level arrays, best first, NaN where a level is absent."""
        rows = len(ts_event)
        if rows == 0:
            return BookSnapshotColumns.empty(), BookDeltaColumns.empty(), QuoteColumns.empty()
        snapshot = BookSnapshotColumns.empty()
        first = 0
        if self.previous is None:
            self.last_id += 1
            snapshot = self._snapshot(int(ts_event[0]), int(ts_recv[0]), bid_price[0],
                                      bid_qty[0], ask_price[0], ask_qty[0])
            self.previous = (bid_price[0], bid_qty[0], ask_price[0], ask_qty[0])
            first = 1
        update_ids = np.full(rows, self.last_id, dtype=np.int64)
        parts: list[BookDeltaColumns] = []
        width = max(bid_price.shape[1], self.previous[0].shape[0])
        step = max(1, _MAX_COMPARISONS // (width * width))
        for start in range(first, rows, step):
            stop = min(start + step, rows)
            parts.append(self._updates(ts_event, ts_recv, (bid_price, bid_qty, ask_price,
                                                           ask_qty), start, stop, width,
                                       update_ids))
        self.previous = (bid_price[-1], bid_qty[-1], ask_price[-1], ask_qty[-1])
        quotes = QuoteColumns(
            ts_event=ts_event, ts_recv=ts_recv, update_id=update_ids,
            bid_price=bid_price[:, 0], bid_qty=bid_qty[:, 0],
            ask_price=ask_price[:, 0], ask_qty=ask_qty[:, 0],
        )
        deltas = BookDeltaColumns(**{
            name: np.concatenate([part.as_dict()[name] for part in parts])
            for name in BookDeltaColumns.empty().as_dict()
        }) if parts else BookDeltaColumns.empty()
        return snapshot, deltas, quotes

    def _snapshot(self, ts_event: int, ts_recv: int, bid_price: np.ndarray, bid_qty: np.ndarray,
                  ask_price: np.ndarray, ask_qty: np.ndarray) -> BookSnapshotColumns:
        bids, asks = ~np.isnan(bid_price), ~np.isnan(ask_price)
        count = int(bids.sum() + asks.sum())
        return BookSnapshotColumns(
            ts_event=np.full(count, ts_event, dtype=np.int64),
            ts_recv=np.full(count, ts_recv, dtype=np.int64),
            last_update_id=np.full(count, self.last_id, dtype=np.int64),
            side=np.concatenate([np.full(int(bids.sum()), BID), np.full(int(asks.sum()), ASK)]
                                ).astype(np.int8),
            price=np.concatenate([bid_price[bids], ask_price[asks]]),
            qty=np.concatenate([bid_qty[bids], ask_qty[asks]]),
        )

    def _updates(self, ts_event: np.ndarray, ts_recv: np.ndarray,
                 levels: tuple[np.ndarray, ...], start: int, stop: int, width: int,
                 update_ids: np.ndarray) -> BookDeltaColumns:
        """The updates of rows [start, stop), each against the row before it; fills the rows'
        entries of `update_ids`."""
        assert self.previous is not None
        current = [_pad(values[start:stop], width) for values in levels]
        before = []
        for index, values in enumerate(levels):
            head = self.previous[index][None, :] if start == 0 else values[start - 1:start]
            before.append(np.concatenate([_pad(head, width),
                                          _pad(values[start:stop - 1], width)]))
        bid_changed, bid_removed = _side_changes(current[0], current[1], before[0], before[1])
        ask_changed, ask_removed = _side_changes(current[2], current[3], before[2], before[3])
        rows = stop - start
        zeros = np.zeros((rows, width))
        mask = np.concatenate([bid_removed, bid_changed, ask_removed, ask_changed], axis=1)
        price = np.concatenate([before[0], current[0], before[2], current[2]], axis=1)
        qty = np.concatenate([zeros, current[1], zeros, current[3]], axis=1)
        side = np.repeat(np.array([BID, BID, ASK, ASK], dtype=np.int8), width)
        side = np.broadcast_to(side, (rows, 4 * width))
        counts = mask.sum(axis=1)
        ids = self.last_id + np.cumsum(counts > 0)
        update_ids[start:stop] = ids
        if len(ids):
            self.last_id = int(ids[-1])
        row_ids = np.repeat(ids, counts)
        return BookDeltaColumns(
            ts_event=np.repeat(ts_event[start:stop], counts),
            ts_recv=np.repeat(ts_recv[start:stop], counts),
            first_update_id=row_ids, final_update_id=row_ids,
            prev_final_update_id=np.full(len(row_ids), -1, dtype=np.int64),
            side=side[mask], price=price[mask], qty=qty[mask],
        )
