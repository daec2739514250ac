"""Tardis book imports replay through BookSynchronizer exactly like the real capture's book."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from importer_inputs import (
    INCREMENTAL_HEADER,
    Top,
    merge_by_receive_time,
    only_tops,
    replay_book,
    replay_tape_book,
    table_columns,
    take,
    tardis_book_line,
    tardis_book_rows,
    top,
    write_lines,
)

from dataflows.book import BookSynchronizer
from engine.batches import BookDeltaColumns, BookSnapshotColumns
from storage.importers import import_tardis
from storage.tape import TapeReader

DEPTH = 25


class Reference:
    """A capture's book replayed by the synchronizer: the top levels after every update."""

    def __init__(self, tape: Path, depth: int = DEPTH) -> None:
        self.deltas = table_columns(tape, "book_deltas")
        self.snapshots = table_columns(tape, "book_snapshots")
        self.tops, self.book = replay_book(BookDeltaColumns(**self.deltas),
                                           BookSnapshotColumns(**self.snapshots), depth)
        final_ids = self.deltas["final_update_id"]
        last_rows = np.r_[np.flatnonzero(final_ids[1:] != final_ids[:-1]), len(final_ids) - 1]
        self.times = {int(final_ids[row]): (int(self.deltas["ts_event"][row]),
                                             int(self.deltas["ts_recv"][row]))
                      for row in last_rows}


@pytest.fixture(scope="module")
def spot(spot_capture_tape: Path) -> Reference:
    reference = Reference(spot_capture_tape)
    assert len(reference.tops) == 6_493 and reference.book.in_sync
    return reference


@pytest.fixture(scope="module")
def usdm(usdm_capture_tape: Path) -> Reference:
    reference = Reference(usdm_capture_tape)
    assert len(reference.tops) > 6_000 and reference.book.in_sync
    return reference


@pytest.mark.slow
def test_incremental_book_of_two_symbols_replays_like_the_captures(
    tmp_path: Path, spot: Reference, usdm: Reference
) -> None:
    rows = merge_by_receive_time([
        tardis_book_rows("BTCUSDT", spot.deltas, spot.snapshots),
        tardis_book_rows("BTCUSDT-PERP", usdm.deltas, usdm.snapshots, futures=True),
    ])
    source = write_lines(tmp_path / "binance_incremental_book_L2_2024-08-08",
                         [INCREMENTAL_HEADER, *rows], "gz")
    result = import_tardis([source], tmp_path / "tape")
    assert result.dead_letter_count == 0 and result.rows["book_snapshots"] == 4000
    assert TapeReader(result.path).metadata["synthetic_update_ids"] is True
    assert result.files[0]["resync_markers"] == 0

    for symbol, reference in (("BTCUSDT", spot), ("BTCUSDT-PERP", usdm)):
        tops, book = replay_tape_book(result.path, symbol, DEPTH)
        assert only_tops(tops) == only_tops(reference.tops), symbol
        assert book.levels() == reference.book.levels(), symbol
        # Synthetic ids: snapshot 1, then updates 2, 3, ... on the spot rule (pu = -1).
        snapshots = table_columns(result.path, "book_snapshots", symbol)
        deltas = table_columns(result.path, "book_deltas", symbol)
        assert set(snapshots["last_update_id"].tolist()) == {1}
        assert [u for u, _ in tops] == list(range(2, len(tops) + 2))
        np.testing.assert_array_equal(deltas["first_update_id"], deltas["final_update_id"])
        assert set(deltas["prev_final_update_id"].tolist()) == {-1}


@pytest.mark.slow
def test_a_later_snapshot_resyncs_the_book(tmp_path: Path, spot: Reference) -> None:
    """Updates lost in the middle, then a fresh snapshot (as after a reconnection): the book
    resyncs on it and matches the capture's again."""
    first_id = int(spot.snapshots["last_update_id"][0])
    after = take(spot.deltas, spot.deltas["final_update_id"] > first_id)
    update_ids = [u for u, _ in spot.tops]
    lost = set(update_ids[3000:3100])
    resume = update_ids[3100]
    saved: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    book = BookSynchronizer("X")
    book.apply(BookDeltaColumns(**spot.deltas), BookSnapshotColumns(**spot.snapshots),
               observer=lambda u: saved.setdefault("book", book.levels())
               if u == update_ids[3099] else None)
    bids, asks = saved["book"]
    snapshot_time = spot.times[update_ids[3099]]

    rows = [line for _, line in tardis_book_rows("BTCUSDT", spot.deltas, spot.snapshots)]
    lines = rows[: len(spot.snapshots["price"])]
    for ts, recv, u, side, price, qty in zip(*(after[name].tolist() for name in (
            "ts_event", "ts_recv", "final_update_id", "side", "price", "qty")), strict=True):
        if u in lost:
            continue
        if u == resume and bids:
            lines += [tardis_book_line("binance", "BTCUSDT", *snapshot_time, True, 1, p, q)
                      for p, q in sorted(bids.items(), reverse=True)]
            lines += [tardis_book_line("binance", "BTCUSDT", *snapshot_time, True, -1, p, q)
                      for p, q in sorted(asks.items())]
            bids = {}
        lines.append(tardis_book_line("binance", "BTCUSDT", ts, recv, False, side, price, qty))
    source = write_lines(tmp_path / "binance_incremental_book_L2", [INCREMENTAL_HEADER, *lines],
                         "csv")
    result = import_tardis([source], tmp_path / "tape")
    assert result.files[0]["resync_markers"] == 1

    tops, book = replay_tape_book(result.path, "BTCUSDT", DEPTH)
    expected = only_tops(spot.tops[:3000]) + only_tops(spot.tops[3100:])
    assert only_tops(tops) == expected
    assert book.levels() == spot.book.levels()


def _snapshot_header(depth: int) -> str:
    levels = [f"{side}[{level}].{field}" for level in range(depth)
              for side in ("asks", "bids") for field in ("price", "amount")]
    return ",".join(["exchange", "symbol", "timestamp", "local_timestamp", *levels])


def _snapshot_line(ts_event: int, ts_recv: int, levels: Top, depth: int) -> str:
    bids, asks = levels
    fields = ["binance", "BTCUSDT", str(ts_event // 1000), str(ts_recv // 1000)]
    for level in range(depth):
        for side in (asks, bids):
            if level < len(side):
                fields += [repr(side[level][0]), repr(side[level][1])]
            else:
                fields += ["", ""]
    return ",".join(fields)


def _thin(levels: Top, depth: int) -> Top:
    return levels[0][:depth], levels[1][:depth]


def test_book_snapshots_reproduce_every_top_n(tmp_path: Path, spot: Reference) -> None:
    """Top-25 rows of the real book after each update, every 7th row thinned to 20 levels, the
    second file a book_snapshot_20: the replayed book equals each row exactly."""
    rows: list[tuple[int, int, Top]] = []
    for index, (u, levels) in enumerate(spot.tops):
        rows.append((*spot.times[u], _thin(levels, 20) if index % 7 == 3 else levels))
    split = 4000
    first = write_lines(tmp_path / "binance_book_snapshot_25_2024-08-08", [
        _snapshot_header(DEPTH), *(_snapshot_line(*row, DEPTH) for row in rows[:split])], "gz")
    second_rows = [(ts, recv, _thin(levels, 20)) for ts, recv, levels in rows[split:]]
    second = write_lines(tmp_path / "binance_book_snapshot_20_2024-08-09", [
        _snapshot_header(20), *(_snapshot_line(*row, 20) for row in second_rows)], "csv")
    result = import_tardis([first, second], tmp_path / "tape")
    assert result.dead_letter_count == 0
    assert [info["data_type"] for info in result.files] == ["book_snapshot_25",
                                                            "book_snapshot_20"]

    expected_rows = [levels for _, _, levels in rows[:split] + second_rows]
    tops, book = replay_tape_book(result.path, "BTCUSDT", DEPTH + 1)
    changed = [levels for previous, levels in itertools.pairwise(expected_rows)
               if levels != previous]
    assert only_tops(tops) == changed
    assert top(book, 10**6) == expected_rows[-1]

    quotes = table_columns(result.path, "best_bid_ask")
    assert len(quotes["bid_price"]) == len(expected_rows)
    np.testing.assert_array_equal(quotes["bid_price"], [rows[0][0][0] for rows in expected_rows])
    np.testing.assert_array_equal(quotes["ask_qty"], [rows[1][0][1] for rows in expected_rows])
    np.testing.assert_array_equal(quotes["ts_recv"], [recv // 1000 * 1000 for _, recv, _ in
                                                      rows[:split] + second_rows])
    assert (np.diff(quotes["update_id"]) >= 0).all()
    assert [u for u, _ in tops] == sorted(set(quotes["update_id"].tolist()) - {1})


def test_bad_book_rows_are_dead_letters_and_the_book_stays_exact(tmp_path: Path,
                                                                 spot: Reference) -> None:
    rows = [(*spot.times[u], levels) for u, levels in spot.tops[:300]]
    lines = [_snapshot_header(DEPTH), *(_snapshot_line(*row, DEPTH) for row in rows)]

    def edit(line: int, column: int, value: str) -> None:
        fields = lines[line - 1].split(",")
        fields[column] = value
        lines[line - 1] = ",".join(fields)

    bids0, asks0 = 6, 4  # field index of bids[0].price and asks[0].price
    edit(10, bids0, lines[9].split(",")[asks0])  # best bid = best ask: crossed
    edit(20, bids0 + 4, lines[19].split(",")[bids0])  # bids[1].price repeats bids[0].price
    edit(30, asks0 + 1, "")  # asks[0].amount missing while its price is present
    edit(40, bids0 + 1, "-2")  # negative amount
    edit(50, asks0, "nan")  # NaN price
    edit(60, 2, "x")  # unparsable timestamp
    source = write_lines(tmp_path / "book", lines, "csv")
    result = import_tardis([source], tmp_path / "tape")

    reasons = {int(letter.source.rsplit(" ", 1)[1]): letter.reason
               for letter in result.dead_letters}
    assert reasons == {10: "crossed_book", 20: "duplicate_level", 30: "missing_value",
                       40: "invalid_qty", 50: "invalid_price", 60: "unparsable_value"}
    good = [levels for index, (_, _, levels) in enumerate(rows) if index + 2 not in reasons]
    tops, _ = replay_tape_book(result.path, "BTCUSDT", DEPTH + 1)
    assert only_tops(tops) == [levels for previous, levels in itertools.pairwise(good)
                               if levels != previous]


def test_bad_incremental_rows_are_dead_letters(tmp_path: Path, spot: Reference) -> None:
    rows = [line for _, line in tardis_book_rows("BTCUSDT", spot.deltas, spot.snapshots)][:2300]
    faults = {5: (5, "middle", "invalid_side"), 2050: (4, "maybe", "unparsable_value"),
              2100: (6, "NaN", "invalid_price"), 2200: (7, "-1", "invalid_qty")}
    lines = [INCREMENTAL_HEADER, *rows]
    for line, (column, value, _) in faults.items():
        fields = lines[line - 1].split(",")
        fields[column] = value
        lines[line - 1] = ",".join(fields)
    result = import_tardis([write_lines(tmp_path / "book", lines, "csv")], tmp_path / "tape")
    assert {int(letter.source.rsplit(" ", 1)[1]): letter.reason
            for letter in result.dead_letters} == {
        line: reason for line, (_, _, reason) in faults.items()}
    assert result.rows["book_snapshots"] + result.rows["book_deltas"] == 2300 - len(faults)


def _concat(parts: list) -> dict[str, np.ndarray]:
    return {name: np.concatenate([part.as_dict()[name] for part in parts])
            for name in parts[0].as_dict()}


def test_synthetic_ids_do_not_depend_on_how_rows_are_cut(spot: Reference) -> None:
    """Rows fed in one call or cut anywhere (inside a snapshot run, inside an update) give the
    same snapshots, updates and markers."""
    from storage.importers.tardis_book import IncrementalBookIds

    first_id = int(spot.snapshots["last_update_id"][0])
    after = take(spot.deltas, spot.deltas["final_update_id"] > first_id)
    updates = take(after, slice(0, 3000))
    rows = {name: np.concatenate([spot.snapshots[name], updates[name], spot.snapshots[name],
                                  updates[name]]) for name in ("ts_event", "ts_recv", "side",
                                                                "price", "qty")}
    count = len(spot.snapshots["price"])
    rows["is_snapshot"] = np.concatenate([np.ones(count, bool), np.zeros(3000, bool),
                                          np.ones(count, bool), np.zeros(3000, bool)])
    names = ("is_snapshot", "ts_event", "ts_recv", "side", "price", "qty")
    whole = IncrementalBookIds()
    snapshots, deltas = whole.convert(*(rows[name] for name in names))
    update_count = len(np.unique(updates["final_update_id"]))
    assert whole.markers == 1
    assert set(snapshots.last_update_id.tolist()) == {1, 1 + update_count + 2}
    assert deltas.final_update_id[-1] == 1 + 2 * update_count + 2
    rng = np.random.default_rng(7)
    for _ in range(5):
        cuts = np.sort(rng.choice(np.arange(1, len(rows["qty"])), size=12, replace=False))
        cut = IncrementalBookIds()
        parts = [cut.convert(*(rows[name][start:stop] for name in names))
                 for start, stop in itertools.pairwise([0, *cuts.tolist(), len(rows["qty"])])]
        assert cut.markers == 1
        for expected, found in ((snapshots, _concat([part[0] for part in parts])),
                                (deltas, _concat([part[1] for part in parts]))):
            for name, values in expected.as_dict().items():
                np.testing.assert_array_equal(found[name], values, err_msg=name)


def test_top_level_updates_do_not_depend_on_how_rows_are_cut(spot: Reference) -> None:
    from storage.importers.tardis_book import TopLevelsBook

    levels = [levels for _, levels in spot.tops[:500]]
    arrays = []
    for side, field in ((0, 0), (0, 1), (1, 0), (1, 1)):
        arrays.append(np.array([[level[field] for level in row[side]] for row in levels]))
    times = np.arange(500, dtype=np.int64) * 1000
    whole = TopLevelsBook().convert(times, times, *arrays)
    book = TopLevelsBook()
    parts = [book.convert(times[start:stop], times[start:stop],
                          *(values[start:stop] for values in arrays))
             for start, stop in itertools.pairwise([0, 1, 2, 77, 78, 300, 500])]
    for index in range(3):
        expected = whole[index].as_dict()
        found = _concat([part[index] for part in parts])
        for name, values in expected.items():
            np.testing.assert_array_equal(found[name], values, err_msg=name)
