"""Columnar book rows cut into updates (or snapshots) with their levels, for the synchronizer.

`BookDeltaColumns` and `BookSnapshotColumns` hold one row per level; the rows of one update
(or snapshot) are adjacent and share its ids and times. `split_levels` finds each run of rows,
keeps its valid levels per side as plain lists and turns each invalid row into an
"invalid_level" dead letter that travels with its update, so letters come out in stream order
however the rows are batched. A `NO_LEVEL` row is the placeholder of an update that changed no
level: neither a level nor invalid. The work per batch is a few NumPy passes plus one slice per
update.

Two adjacent copies of one update that agree on every id and time (a frame delivered twice with
the same receive time) form one run: its levels are applied twice, which changes nothing.
"""

from __future__ import annotations

import numpy as np

from engine.batches import ASK, BID, NO_LEVEL, BookDeltaColumns, BookSnapshotColumns, DeadLetter

_DELTA_HEAD = ("ts_event", "ts_recv", "first_update_id", "final_update_id",
               "prev_final_update_id")
_SNAPSHOT_HEAD = ("ts_event", "ts_recv", "last_update_id")


def split_levels(batch: BookDeltaColumns | BookSnapshotColumns, source: str, stage: str,
                 symbol: str) -> list[tuple]:
    """One tuple per update or snapshot, in row order: its head fields (`_DELTA_HEAD` or
    `_SNAPSHOT_HEAD`), then bid prices and quantities, ask prices and quantities, and the dead
    letters of its invalid rows. A letter's source names the update's ids and the level's place
    in it ("book_deltas first_update_id=.. final_update_id=.. prev_final_update_id=.. level 3"),
    the same however the rows are batched."""
    count = len(batch)
    if count == 0:
        return []
    columns = batch.as_dict()
    head = _DELTA_HEAD if isinstance(batch, BookDeltaColumns) else _SNAPSHOT_HEAD
    change = np.zeros(count - 1, dtype=bool)
    for name in head:
        change |= columns[name][1:] != columns[name][:-1]
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    bounds = np.append(starts, count)
    side, price, qty = batch.side, batch.price, batch.qty
    with np.errstate(invalid="ignore"):
        good = np.isfinite(price) & (price > 0) & np.isfinite(qty) & (qty >= 0)
    is_bid, is_ask = side == BID, side == ASK
    bid_rows, ask_rows = np.flatnonzero(good & is_bid), np.flatnonzero(good & is_ask)
    invalid = ~((good & (is_bid | is_ask)) | (side == NO_LEVEL))
    letters: list[list[DeadLetter]] = [[] for _ in range(len(starts))]
    bad_rows = np.flatnonzero(invalid)
    for row, run in zip(bad_rows.tolist(),
                        (np.searchsorted(starts, bad_rows, side="right") - 1).tolist(),
                        strict=True):
        ids = " ".join(f"{name}={int(columns[name][row])}" for name in head[2:])
        level = f"side={int(side[row])} price={float(price[row])} qty={float(qty[row])}"
        letters[run].append(DeadLetter(
            stage, "invalid_level", f"level {level} is not a valid book level; skipped",
            f"{source} {ids} level {row - int(starts[run])}", symbol, int(batch.ts_event[row]),
            int(batch.ts_recv[row]), level))
    bid_prices, bid_qtys = price[bid_rows].tolist(), qty[bid_rows].tolist()
    ask_prices, ask_qtys = price[ask_rows].tolist(), qty[ask_rows].tolist()
    bid_cuts = np.searchsorted(bid_rows, bounds).tolist()
    ask_cuts = np.searchsorted(ask_rows, bounds).tolist()
    heads = zip(*(columns[name][starts].tolist() for name in head), strict=True)
    return [
        (*fields, bid_prices[bid_cuts[i] : bid_cuts[i + 1]],
         bid_qtys[bid_cuts[i] : bid_cuts[i + 1]], ask_prices[ask_cuts[i] : ask_cuts[i + 1]],
         ask_qtys[ask_cuts[i] : ask_cuts[i + 1]], tuple(letters[i]))
        for i, fields in enumerate(heads)
    ]
